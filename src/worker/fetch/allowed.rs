//! `IMGPROXY_ALLOWED_SOURCES`: which source URLs may be fetched.
//!
//! imgproxy matches each entry as a regular expression prefix of the raw URL text, `*` standing
//! for `[^/]*`. That `*` also matches `?`, `#`, `@` and `\`, so `https://*.example.com/` admits
//! `https://10.0.0.5%3F.example.com/a` (host `10.0.0.5`), and `http://example.com/images/`
//! admits `http://example.com/images/../private/x` (which the HTTP client sends as
//! `/private/x`). We match the parts of the URL the fetcher will really use instead, each parsed
//! the way that fetcher parses it:
//!
//! - `http(s)`: the WHATWG-parsed URL (`super::http::parse`): the host whole (so
//!   `http://example.com` without a trailing `/` no longer admits
//!   `http://example.com@evil.com`), the port, the user info, and the path (dot segments
//!   resolved) plus query as a prefix;
//! - `s3://`: the bucket whole and the key as a prefix ([`super::s3::split_url`]);
//! - `local://`: the path as a prefix, after `..` is resolved ([`super::local::relative_path`]).
//!
//! A `*` matches a run of characters within one part: never one of `?#@\/:` in a host, never a
//! `/` or `?` in a path. An entry that is only `scheme://` admits every URL of that scheme.
//! imgproxy's documented examples (`s3://`, `local://`, `https://*.example.com/`,
//! `http://example.com/images/`) mean what they meant. HTTP redirects are checked hop by hop
//! ([`super::http`]).

use url::Position;

use super::{local, s3};

/// Characters a `*` never matches in a host, port or user-info pattern.
const AUTHORITY_STOPS: &[char] = &['?', '#', '@', '\\', '/', ':'];
/// Characters a `*` never matches in a path pattern: it stays within one segment.
const PATH_STOPS: &[char] = &['/', '?', '#'];

/// One `IMGPROXY_ALLOWED_SOURCES` entry, split into the URL parts it constrains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSource {
    /// `http`, `https`, `s3` or `local`, lower case.
    scheme: String,
    /// `None`: the entry is just `scheme://` and admits every URL of its scheme.
    place: Option<Place>,
}

/// The parts of a source URL that are matched, pattern or URL alike.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    /// `user[:password]` before an `@`; empty for none.
    userinfo: String,
    /// Host (bucket for `s3://`), lower case and IDNA-normalised for `http(s)`.
    host: String,
    /// Empty for the scheme's default port.
    port: String,
    /// Path and query; a pattern's is a prefix.
    path: String,
}

/// Why an entry can't be used; the config error names `IMGPROXY_ALLOWED_SOURCES` and the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("not `scheme://…`")]
    NoScheme,
    #[error("`{0}` sources can't be fetched (http, https, s3, local)")]
    UnknownScheme(String),
    #[error("invalid host: {0}")]
    Host(String),
    #[error("a `*` can't be mixed with non-ASCII characters in a host: write its `xn--` form")]
    StarInUnicodeHost,
}

impl AllowedSource {
    /// Parses one entry.
    ///
    /// # Errors
    /// See [`PatternError`].
    pub fn parse(entry: &str) -> Result<AllowedSource, PatternError> {
        let (scheme, rest) = entry.split_once("://").ok_or(PatternError::NoScheme)?;
        let scheme = scheme.to_ascii_lowercase();
        let web = match scheme.as_str() {
            "http" | "https" => true,
            "s3" | "local" => false,
            _ => return Err(PatternError::UnknownScheme(scheme)),
        };
        if rest.is_empty() {
            return Ok(AllowedSource {
                scheme,
                place: None,
            });
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (host, port) = split_port(host_port);
        let mut place = Place {
            userinfo: userinfo.to_owned(),
            host: host.to_owned(),
            port: port.to_owned(),
            path: path.to_owned(),
        };
        if web {
            place.host = web_host(host)?;
            if port == default_port(&scheme) {
                place.port.clear();
            }
            place.path = web_path(&scheme, path);
        }
        Ok(AllowedSource {
            scheme,
            place: Some(place),
        })
    }

    /// Whether a URL of `scheme` whose parts are `place` ([`place_of`]) is admitted.
    fn admits(&self, scheme: &str, place: &Place) -> bool {
        if self.scheme != scheme {
            return false;
        }
        let Some(pattern) = &self.place else {
            return true;
        };
        glob(&pattern.userinfo, &place.userinfo, AUTHORITY_STOPS, false)
            && glob(&pattern.host, &place.host, AUTHORITY_STOPS, false)
            && glob(&pattern.port, &place.port, AUTHORITY_STOPS, false)
            && glob(&pattern.path, &place.path, PATH_STOPS, true)
    }
}

/// Parses a comma-separated `IMGPROXY_ALLOWED_SOURCES` value (blank entries skipped).
///
/// # Errors
/// The first bad entry, with why.
pub fn parse_list(raw: &str) -> Result<Vec<AllowedSource>, (String, PatternError)> {
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| AllowedSource::parse(entry).map_err(|e| (entry.to_owned(), e)))
        .collect()
}

/// Whether `url` is admitted by `allowed`; an empty list admits everything, a URL its fetcher
/// couldn't parse nothing. `query_separator` is `IMGPROXY_SOURCE_URL_QUERY_SEPARATOR`.
pub fn is_allowed(allowed: &[AllowedSource], url: &str, query_separator: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some((scheme, place)) = place_of(url, query_separator) else {
        return false;
    };
    allowed.iter().any(|a| a.admits(&scheme, &place))
}

/// The scheme and the matched parts of `url`, as its fetcher reads them.
fn place_of(url: &str, query_separator: &str) -> Option<(String, Place)> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    let place = match scheme.as_str() {
        "http" | "https" => {
            let parsed = super::http::parse(url).ok()?;
            Place {
                // Not sliced by `Position`: url's debug assertions trip on a user without a
                // password.
                userinfo: match parsed.password() {
                    Some(password) => format!("{}:{password}", parsed.username()),
                    None => parsed.username().to_owned(),
                },
                host: parsed.host_str()?.to_owned(),
                port: parsed.port().map(|p| p.to_string()).unwrap_or_default(),
                path: parsed[Position::BeforePath..Position::AfterQuery].to_owned(),
            }
        }
        "s3" => {
            let (bucket, key, _version) = s3::split_url(url, query_separator)?;
            Place {
                userinfo: String::new(),
                host: bucket.to_owned(),
                port: String::new(),
                path: format!("/{key}"),
            }
        }
        "local" => {
            let rest = &url["local://".len()..];
            let authority = &rest[..rest.find('/')?];
            let path = local::relative_path(url, query_separator)?;
            Place {
                userinfo: String::new(),
                host: authority.to_owned(),
                port: String::new(),
                path: format!("/{}", path.to_str()?),
            }
        }
        _ => return None,
    };
    Some((scheme, place))
}

/// Splits `host[:port]`, minding `[v6]:port`.
fn split_port(host_port: &str) -> (&str, &str) {
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => v6.find(']').map_or(host_port.len(), |end| end + 2),
        None => host_port.find(':').unwrap_or(host_port.len()),
    };
    let (host, port) = host_port.split_at(after_host.min(host_port.len()));
    (host, port.strip_prefix(':').unwrap_or(port))
}

fn default_port(scheme: &str) -> &'static str {
    if scheme == "https" { "443" } else { "80" }
}

/// A pattern host in the form the URL parser gives hosts: lower case, IDNA (`xn--`) labels,
/// IP addresses normalised. Stars are kept, so a host with one is only lower-cased.
fn web_host(host: &str) -> Result<String, PatternError> {
    if host.contains('*') {
        if !host.is_ascii() {
            return Err(PatternError::StarInUnicodeHost);
        }
        return Ok(host.to_ascii_lowercase());
    }
    url::Host::parse(host)
        .map(|h| h.to_string())
        .map_err(|e| PatternError::Host(format!("{host:?}: {e}")))
}

/// A pattern path in the form the URL parser gives paths (percent-encoding, dot segments); no
/// path is `/`, which every http(s) URL has.
fn web_path(scheme: &str, path: &str) -> String {
    match url::Url::parse(&format!("{scheme}://pattern.invalid{path}")) {
        Ok(parsed) => parsed[Position::BeforePath..Position::AfterQuery].to_owned(),
        Err(_) => path.to_owned(),
    }
}

/// Whether `text` matches `pattern` — wholly, or with `prefix` in some prefix — where `*`
/// stands for any run of characters not in `stops`.
///
/// The text positions reachable after each piece of the pattern are tracked together, so the
/// work is the pattern's length times the text's, however many stars (no backtracking).
fn glob(pattern: &str, text: &str, stops: &[char], prefix: bool) -> bool {
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for (n, piece) in pattern.split('*').enumerate() {
        if n > 0 {
            // A star: from each reachable position, on over characters that aren't stops.
            let mut open = false;
            for (at, c) in text.char_indices() {
                open |= reachable[at];
                if stops.contains(&c) {
                    open = false;
                } else if open {
                    reachable[at + c.len_utf8()] = true;
                }
            }
        }
        let mut next = vec![false; text.len() + 1];
        for (at, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
            // Reachable positions are char boundaries: they advance by whole chars and pieces.
            if text[at..].starts_with(piece) {
                next[at + piece.len()] = true;
            }
        }
        reachable = next;
    }
    if prefix {
        reachable.contains(&true)
    } else {
        reachable[text.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &str) -> Vec<AllowedSource> {
        parse_list(entries).unwrap()
    }

    fn allowed(entries: &str, url: &str) -> bool {
        is_allowed(&list(entries), url, "?")
    }

    // imgproxy's documented examples keep their meaning.
    #[test]
    fn imgproxy_examples() {
        let docs = "s3://,https://*.example.com/,local://";
        for url in [
            "s3://bucket/key.png",
            "s3://other-bucket/a/b.png?v1",
            "https://cdn.example.com/a.jpg",
            "https://a-b.example.com/x/y?z=1",
            "https://CDN.Example.COM/a.jpg",
            "https://cdn.example.com:443/a.jpg",
            "local:///a.png",
            "local:///dir/b.png",
        ] {
            assert!(allowed(docs, url), "{url}");
        }
        for url in [
            "http://cdn.example.com/a.jpg",
            "https://example.com/a.jpg",
            "https://cdn.example.com:8443/a.jpg",
            "https://evil.com/.example.com/",
            "https://a.b.evil.com/",
        ] {
            assert!(!allowed(docs, url), "{url}");
        }
        assert!(is_allowed(&[], "http://anything/", "?"));
        let images = "http://example.com/images/";
        assert!(allowed(images, "http://example.com/images/a.png"));
        assert!(allowed(images, "http://EXAMPLE.com:80/images/a/b.png"));
        assert!(!allowed(images, "http://example.com/other/a.png"));
        assert!(!allowed(images, "http://example.com/imagesX/a.png"));
        assert!(allowed("s3://bucket-*/", "s3://bucket-1/key.png"));
        assert!(!allowed("s3://bucket-*/", "s3://other/key.png"));
        assert!(allowed("s3://bucket/images/", "s3://bucket/images/a.png"));
        assert!(!allowed("s3://bucket/images/", "s3://bucket/a.png"));
        assert!(allowed("local:///images/", "local:///images/a.png"));
        assert!(!allowed("local:///images/", "local:///secret.png"));
        assert!(allowed("https://x/*/*.jpg", "https://x/a/b.jpg"));
        assert!(!allowed("https://x/*/*.jpg", "https://x/a/b/c.jpg"));
        assert!(allowed("https://*x/", "https://x/"));
        assert!(allowed("http://127.0.0.1:*/", "http://127.0.0.1:8080/a"));
        assert!(allowed("http://[::1]:8080/", "http://[::1]:8080/a"));
        assert!(allowed("https://bücher.de/", "https://xn--bcher-kva.de/a"));
        assert!(allowed("https://xn--bcher-kva.de/", "https://bücher.de/a"));
        assert!(allowed("https://me@x/", "https://me@x/a"));
        assert!(allowed("https://me:*@x/", "https://me:secret@x/a"));
        assert!(!allowed("https://me@x/", "https://me:secret@x/a"));
    }

    // What the raw-text match of imgproxy lets through, and we don't.
    #[test]
    fn a_star_never_leaves_its_part() {
        let star = "https://*.example.com/";
        for url in [
            "https://10.0.0.5?.example.com/a",
            "https://10.0.0.5#.example.com/a",
            "https://10.0.0.5\\.example.com/a",
            "https://10.0.0.5:443?.example.com/a",
            "https://user@10.0.0.5?.example.com/a",
            "https://a.example.com@10.0.0.5/",
            "https://user:pw@cdn.example.com/",
            "https://user@cdn.example.com/",
        ] {
            assert!(!allowed(star, url), "{url}");
        }
        // No trailing slash: still the whole host (imgproxy's docs warn about exactly this).
        for url in [
            "http://example.com@evil.com/",
            "http://example.com.evil.com/",
            "http://example.com:81/",
        ] {
            assert!(!allowed("http://example.com", url), "{url}");
        }
        assert!(allowed("http://example.com", "http://example.com/a"));
        assert!(allowed("http://example.com", "http://example.com"));
        // Dot segments are resolved before the path is matched, as the client will send it.
        let images = "http://example.com/images/";
        assert!(!allowed(images, "http://example.com/images/../private/a"));
        assert!(!allowed(
            images,
            "http://example.com/images/%2e%2e/private/a"
        ));
        assert!(!allowed(
            "local:///images/",
            "local:///images/../secret.png"
        ));
        assert!(allowed("local:///images/", "local:///x/../images/a.png"));
        // A path star stays out of the query.
        assert!(!allowed("http://x/*.jpg", "http://x/a?.jpg"));
        // Unparsable URLs are admitted by nothing but an empty list.
        assert!(!allowed("http://", "http://[::1/"));
        assert!(!allowed("http://", "not a url"));
    }

    #[test]
    fn bad_entries_are_config_errors() {
        assert_eq!(
            parse_list("https://ok/, example.com/"),
            Err(("example.com/".into(), PatternError::NoScheme))
        );
        assert!(matches!(
            AllowedSource::parse("ftp://x/"),
            Err(PatternError::UnknownScheme(_))
        ));
        assert!(matches!(
            AllowedSource::parse("https://a b/"),
            Err(PatternError::Host(_))
        ));
        assert_eq!(
            AllowedSource::parse("https://*.bücher.de/"),
            Err(PatternError::StarInUnicodeHost)
        );
        assert_eq!(parse_list(" , ").unwrap(), vec![]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        // Operator patterns and attacker text: no panic; a star-free pattern is a plain test;
        // removing the stars only makes a pattern stricter.
        #[test]
        fn glob_never_panics_and_agrees_with_plain_matching(
            pattern in "[a-z:/.*é?-]{0,16}",
            text in "[a-z:/.é?-]{0,32}",
        ) {
            for prefix in [false, true] {
                let result = glob(&pattern, &text, PATH_STOPS, prefix);
                if !pattern.contains('*') {
                    let plain = if prefix { text.starts_with(&pattern) } else { text == pattern };
                    proptest::prop_assert_eq!(result, plain);
                }
                if glob(&pattern.replace('*', ""), &text, PATH_STOPS, prefix) {
                    proptest::prop_assert!(result);
                }
            }
        }

        // Whatever the URL, matching never panics (url's debug assertions included).
        #[test]
        fn matching_never_panics(url in "(https?|s3|local)://[a-z0-9:/.@?#%\\\\é*\\[\\]-]{0,40}") {
            let _ = is_allowed(&list("https://*.example.com/,s3://b*/,local:///i/"), &url, "?");
        }
    }
}
