//! Object keys: the same rule as the Go sidecar, so existing clients keep finding results.

use md5::{Digest, Md5};

/// The key under which a response to `raw_path` is stored: `prefix` followed, with no
/// separator, by the lowercase hex MD5 of the path.
///
/// `raw_path` is the request path exactly as received: leading `/` and imgproxy signature
/// included, percent-escapes untouched, query excluded. Browsers compute the same hash to load
/// the object straight from the bucket, so any decoding here would make them miss.
pub fn cache_key(prefix: &str, raw_path: &str) -> String {
    format!("{prefix}{:x}", Md5::digest(raw_path.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_go_sidecar_example() {
        assert_eq!(
            cache_key(
                "",
                "/resize:fill:300:300/plain/https://example.com/image.jpg"
            ),
            "c9009a400f110797b2710ce2a5bd60a4"
        );
    }

    #[test]
    fn prefix_is_joined_without_a_separator() {
        let path = "/resize:fill:300:300/plain/https://example.com/image.jpg";
        assert_eq!(
            cache_key("thumbs/", path),
            "thumbs/c9009a400f110797b2710ce2a5bd60a4"
        );
        assert_eq!(
            cache_key("v2-", path),
            "v2-c9009a400f110797b2710ce2a5bd60a4"
        );
    }

    #[test]
    fn escaped_and_decoded_paths_are_different_keys() {
        assert_ne!(
            cache_key("", "/x/plain/a%20b.jpg"),
            cache_key("", "/x/plain/a b.jpg")
        );
    }
}
