//! `IMGPROXY_ALLOWED_SOURCES`: source URL prefixes in which `*` stands for any run of
//! characters other than `/` (imgproxy's `RegexpFromPattern`, without a regex engine).

/// Whether `url` is allowed by `patterns`; an empty list allows everything.
pub fn is_allowed(patterns: &[String], url: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches_prefix(p, url))
}

/// Whether some prefix of `text` matches `pattern`, where `*` matches `[^/]*`.
pub fn matches_prefix(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    matches_after_star(&parts, rest)
}

/// `parts[0]` follows a `*`: try every split of the leading run of non-`/` characters.
/// Work is bounded by pattern stars × URL length per level; patterns come from the operator.
fn matches_after_star(parts: &[&str], text: &str) -> bool {
    let Some((part, rest_parts)) = parts.split_first() else {
        return true;
    };
    let run = text.find('/').unwrap_or(text.len());
    // The star takes 0..=run bytes, split on char boundaries.
    (0..=run).filter(|&i| text.is_char_boundary(i)).any(|i| {
        text[i..]
            .strip_prefix(part)
            .is_some_and(|after| matches_after_star(rest_parts, after))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_wildcards_like_imgproxy() {
        let p = |s: &str| vec![s.to_owned()];
        assert!(is_allowed(&[], "http://anything/"));
        assert!(is_allowed(
            &p("https://img.example.com/"),
            "https://img.example.com/a.jpg"
        ));
        assert!(!is_allowed(
            &p("https://img.example.com/"),
            "https://img.example.com.evil/a.jpg"
        ));
        assert!(!is_allowed(
            &p("https://img.example.com/"),
            "http://img.example.com/a.jpg"
        ));
        let star = p("https://*.example.com/");
        assert!(is_allowed(&star, "https://cdn.example.com/a.jpg"));
        assert!(is_allowed(&star, "https://a-b.example.com/x/y"));
        // `*` never crosses a `/`.
        assert!(!is_allowed(&star, "https://evil.com/.example.com/"));
        assert!(is_allowed(&p("s3://bucket-*/"), "s3://bucket-1/key.png"));
        assert!(is_allowed(&p("local:///"), "local:///a.png"));
        assert!(is_allowed(&p("https://x/*/*.jpg"), "https://x/a/b.jpg"));
        assert!(!is_allowed(&p("https://x/*/*.jpg"), "https://x/a/b/c.jpg"));
        // Stars may match nothing; non-ASCII text is split on char boundaries.
        assert!(is_allowed(&p("https://*x/"), "https://x/"));
        assert!(is_allowed(&p("https://é*é/"), "https://ééé/"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        // Operator patterns and attacker URLs: no panic, and a star-free pattern is a plain
        // prefix test.
        #[test]
        fn never_panics_and_agrees_with_starts_with(
            pattern in "[a-z:/.*é-]{0,16}",
            url in "[a-z:/.é-]{0,32}",
        ) {
            let result = matches_prefix(&pattern, &url);
            if !pattern.contains('*') {
                proptest::prop_assert_eq!(result, url.starts_with(&pattern));
            }
            // Removing the stars only makes a pattern stricter.
            if matches_prefix(&pattern.replace('*', ""), &url) {
                proptest::prop_assert!(result);
            }
        }
    }
}
