//! The source part of a processing URL: `plain/<escaped url>[@ext]` or
//! base64url (optionally split by `/`) with an optional `.ext`, decoded to the
//! URL to fetch and the scheme the fetch layer routes on.

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use percent_encoding::percent_decode_str;

use super::error::ParseError;

/// `IMGPROXY_BASE_URL`: prepended to every source URL that doesn't already start with it.
pub const DEFAULT_BASE_URL: &str = "";

/// imgproxy strips `=` padding and decodes with Go's non-strict raw decoder;
/// this engine accepts the same inputs.
const SOURCE_BASE64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Where the source image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The decoded URL, `IMGPROXY_BASE_URL` already applied.
    pub url: String,
    pub scheme: Scheme,
}

/// The source URL schemes this worker can fetch from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    /// `s3://bucket/key[?version]`.
    S3,
    /// `local:///path`, resolved under `IMGPROXY_LOCAL_FILESYSTEM_ROOT`.
    Local,
}

/// Decodes the source segments (everything after the options). Returns the
/// source and the extension written after it, if any.
pub(crate) fn decode(
    segments: &[&str],
    base_url: &str,
    base64_includes_filename: bool,
) -> Result<(Source, Option<String>), ParseError> {
    let (url, extension) = match segments {
        [] => return Err(ParseError::invalid_path("no source URL")),
        ["plain", rest @ ..] if !rest.is_empty() => decode_plain(&rest.join("/"))?,
        ["enc", rest @ ..] if !rest.is_empty() => {
            return Err(ParseError::Unsupported(
                "encrypted source URLs (`/enc/`) are an imgproxy Pro feature".into(),
            ));
        }
        // The last segment is a cosmetic file name, not part of the URL.
        [head @ .., _filename] if base64_includes_filename && !head.is_empty() => {
            decode_base64(&head.concat())?
        }
        _ => decode_base64(&segments.concat())?,
    };
    let url = if base_url.is_empty() || url.starts_with(base_url) {
        url
    } else {
        format!("{base_url}{url}")
    };
    let scheme = scheme_of(&url)?;
    Ok((Source { url, scheme }, extension))
}

/// Splits `body` at the one allowed `delimiter` into the encoded URL and the
/// extension (empty extension = none).
fn split_extension(body: &str, delimiter: char) -> Result<(&str, Option<String>), ParseError> {
    let mut parts = body.split(delimiter);
    let url = parts.next().unwrap_or_default();
    let extension = parts.next().filter(|e| !e.is_empty()).map(str::to_owned);
    if parts.next().is_some() {
        return Err(ParseError::invalid_path(format!(
            "more than one `{delimiter}` in the source: only one extension may follow it"
        )));
    }
    if url.is_empty() {
        return Err(ParseError::invalid_path("empty source URL"));
    }
    Ok((url, extension))
}

fn decode_plain(body: &str) -> Result<(String, Option<String>), ParseError> {
    let (escaped, extension) = split_extension(body, '@')?;
    // Go's PathUnescape rejects a `%` not followed by two hex digits, where
    // percent_decode would pass it through; check first to match imgproxy.
    let bytes = escaped.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(ParseError::invalid_path(
            "malformed %-escape in plain source URL",
        ));
    }
    let url = percent_decode_str(escaped)
        .decode_utf8()
        .map_err(|_| ParseError::invalid_path("plain source URL is not UTF-8"))?;
    Ok((url.into_owned(), extension))
}

fn decode_base64(body: &str) -> Result<(String, Option<String>), ParseError> {
    let (encoded, extension) = split_extension(body, '.')?;
    let bytes = SOURCE_BASE64
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| ParseError::invalid_path("source URL is not valid base64url"))?;
    let url = String::from_utf8(bytes)
        .map_err(|_| ParseError::invalid_path("base64 source URL is not UTF-8"))?;
    Ok((url, extension))
}

fn scheme_of(url: &str) -> Result<Scheme, ParseError> {
    let unsupported = || {
        ParseError::Unsupported(format!(
            "source URL `{url}` has no http, https, s3 or local scheme"
        ))
    };
    let (scheme, _) = url.split_once(':').ok_or_else(unsupported)?;
    // Schemes are case-insensitive (RFC 3986 §3.1).
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(Scheme::Http),
        "https" => Ok(Scheme::Https),
        "s3" => Ok(Scheme::S3),
        "local" => Ok(Scheme::Local),
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn ok(segments: &[&str]) -> (Source, Option<String>) {
        decode(segments, "", false).unwrap()
    }

    fn url_of(segments: &[&str]) -> String {
        ok(segments).0.url
    }

    #[test]
    fn plain_with_and_without_extension() {
        let (src, ext) = ok(&["plain", "http:", "", "images.dev", "lorem", "ipsum.jpg@png"]);
        assert_eq!(src.url, "http://images.dev/lorem/ipsum.jpg");
        assert_eq!(src.scheme, Scheme::Http);
        assert_eq!(ext.as_deref(), Some("png"));
        let (src, ext) = ok(&["plain", "https:", "", "x", "a.jpg@"]);
        assert_eq!((src.url.as_str(), ext), ("https://x/a.jpg", None));
    }

    // imgproxy's docs: escape the source URL when it has query or `@`.
    #[test]
    fn plain_escaped() {
        let escaped = "http%3A%2F%2Fimages.dev%2Florem%2Fipsum.jpg%3Fparam%3Dvalue%40x%20y";
        let (src, ext) = ok(&["plain", &format!("{escaped}@webp")]);
        assert_eq!(src.url, "http://images.dev/lorem/ipsum.jpg?param=value@x y");
        assert_eq!(ext.as_deref(), Some("webp"));
        // `+` is not a space in a path.
        assert_eq!(url_of(&["plain", "http://x/a+b.jpg"]), "http://x/a+b.jpg");
    }

    #[test]
    fn plain_errors() {
        for segs in [
            &["plain", "http://x/a.jpg@png@jpg"][..],
            &["plain", "@png"],
            &["plain", "http://x/%zz.jpg"],
            &["plain", "http://x/%4"],
            &["plain", "http://x/%ff"],
        ] {
            let err = decode(segs, "", false).unwrap_err();
            assert!(matches!(err, ParseError::InvalidPath(_)), "{segs:?}: {err}");
        }
    }

    #[test]
    fn base64_forms() {
        let url = "http://images.dev/lorem/ipsum.jpg?param=value";
        let enc = URL_SAFE_NO_PAD.encode(url);
        let (src, ext) = ok(&[&format!("{enc}.png")]);
        assert_eq!((src.url.as_str(), ext.as_deref()), (url, Some("png")));
        // Split by slashes, as imgproxy's docs recommend for long URLs.
        let (a, b) = enc.split_at(10);
        let (b, c) = b.split_at(17);
        assert_eq!(url_of(&[a, b, &format!("{c}.jpg")]), url);
        // Padding is tolerated, the extension is optional.
        assert_eq!(url_of(&["aHR0cDovL3guaW8vYQ=="]), "http://x.io/a");
        assert_eq!(url_of(&["aHR0cDovL3guaW8vYQ"]), "http://x.io/a");
    }

    #[test]
    fn docs_example_source() {
        let (src, ext) = ok(&[
            "aHR0cDovL2V4YW1w",
            "bGUuY29tL2ltYWdl",
            "cy9jdXJpb3NpdHku",
            "anBn.png",
        ]);
        assert_eq!(src.url, "http://example.com/images/curiosity.jpg");
        assert_eq!(ext.as_deref(), Some("png"));
    }

    #[test]
    fn base64_with_filename_segment() {
        let enc = URL_SAFE_NO_PAD.encode("http://x.io/a.jpg");
        let (src, ext) = decode(&[&format!("{enc}.png"), "puppy.jpg"], "", true).unwrap();
        assert_eq!(
            (src.url.as_str(), ext.as_deref()),
            ("http://x.io/a.jpg", Some("png"))
        );
        // A lone segment is never a file name.
        assert_eq!(
            decode(&[&enc], "", true).unwrap().0.url,
            "http://x.io/a.jpg"
        );
    }

    #[test]
    fn base64_errors() {
        for segs in [&["a.b.c"][..], &[".png"], &["not*base64"], &["_w"]] {
            let err = decode(segs, "", false).unwrap_err();
            assert!(matches!(err, ParseError::InvalidPath(_)), "{segs:?}: {err}");
        }
    }

    #[test]
    fn base_url_is_prepended_once() {
        let base = "http://images.dev/";
        let (src, _) = decode(&["plain", "lorem", "ipsum.jpg@png"], base, false).unwrap();
        assert_eq!(src.url, "http://images.dev/lorem/ipsum.jpg");
        let (src, _) = decode(&["plain", "http://images.dev/a.jpg"], base, false).unwrap();
        assert_eq!(src.url, "http://images.dev/a.jpg");
        let enc = URL_SAFE_NO_PAD.encode("lorem/ipsum.jpg?param=value");
        let (src, _) = decode(&[&enc], base, false).unwrap();
        assert_eq!(src.url, "http://images.dev/lorem/ipsum.jpg?param=value");
    }

    #[test]
    fn schemes() {
        assert_eq!(ok(&["plain", "HTTPS://x/a"]).0.scheme, Scheme::Https);
        assert_eq!(ok(&["plain", "s3://bucket/key.png"]).0.scheme, Scheme::S3);
        assert_eq!(ok(&["plain", "local:///img/a.png"]).0.scheme, Scheme::Local);
        for url in ["ftp://x/a", "gs://b/k", "x/a.jpg", "file:///etc/passwd"] {
            let err = decode(&["plain", url], "", false).unwrap_err();
            assert!(matches!(err, ParseError::Unsupported(_)), "{url}: {err}");
        }
    }

    #[test]
    fn enc_is_pro_only_and_empty_is_invalid() {
        let err = decode(&["enc", "abc"], "", false).unwrap_err();
        assert!(matches!(err, ParseError::Unsupported(_)));
        assert!(matches!(
            decode(&[], "", false),
            Err(ParseError::InvalidPath(_))
        ));
    }
}
