//! Builds the URLs a page needs for one image: the signed imgproxy URL (through the proxy),
//! the cached URL (straight from the bucket) and, when the upstream negotiates formats, the
//! cached URL of each variant a browser may load instead, as `imgproxy-cache url` prints them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Serialize;

use crate::cache::cache_key;
use crate::cache::variant::Negotiation;
use crate::signature::{SignatureConfigError, SignatureVerifier};

/// The signature segment imgproxy accepts when signing is off.
pub const UNSIGNED: &str = "insecure";
/// `PROXY_BASE_URL` when unset: the proxy's documented local address.
pub const DEFAULT_PROXY_BASE_URL: &str = "http://127.0.0.1:8080";

/// Characters escaped in a `plain/` source: those that would end or split the path (`?`, `#`,
/// `@` — imgproxy's extension marker —, `%` itself) and anything not printable ASCII. `:` and
/// `/` stay, as in imgproxy's examples.
const PLAIN_SOURCE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct UrlRequest {
    pub source: String,
    /// Processing options as in the URL, e.g. `rs:fit:300:300/q:80` (may be empty).
    pub options: String,
    /// Output format extension, e.g. `webp`.
    pub ext: Option<String>,
    /// Encode the source as base64url instead of `plain/`.
    pub base64: bool,
}

/// How to sign and where things live.
#[derive(Debug, Clone, Default)]
pub struct UrlSettings {
    /// `IMGPROXY_KEY`/`IMGPROXY_SALT` (hex; with comma lists the first pair signs).
    pub key: String,
    pub salt: String,
    pub signature_size: usize,
    /// `S3_FOLDER`.
    pub prefix: String,
    pub proxy_base_url: String,
    pub cache_base_url: Option<String>,
    /// Which formats the upstream picks from `Accept`, as the proxy reads it.
    pub negotiation: Negotiation,
}

/// The `<source type>` a page offers for each negotiated format, best first, and the `Accept`
/// of the browsers that pick it. Every browser that decodes AVIF names WebP too (Chrome,
/// Firefox, Safari 16.4+), so the AVIF source loads the key of that class; browsers that
/// decode WebP only (Safari 14–16.3) send the second.
const SOURCES: [(&str, &str); 2] = [
    ("image/avif", "image/avif,image/webp,*/*"),
    ("image/webp", "image/webp,*/*"),
];

/// The answer, printed as text or JSON (field names are a stable interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuiltUrl {
    /// The signed path, from the signature on.
    pub path: String,
    pub proxy_url: String,
    pub cached_url: Option<String>,
    pub key: String,
    /// The variants a browser loads in place of `cached_url` (best first; empty when the
    /// result's format does not depend on `Accept`).
    pub variants: Vec<BuiltVariant>,
}

/// One `<source>` of a `<picture>`: browsers that decode `type` load this key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuiltVariant {
    #[serde(rename = "type")]
    pub mime: &'static str,
    /// The `Accept` class the proxy stores it for, as `X-Cache` names it.
    pub class: &'static str,
    pub key: String,
    pub cached_url: Option<String>,
}

/// # Errors
/// Bad key/salt hex, mismatched lists, or a signature size outside 1–32.
pub fn build(
    request: &UrlRequest,
    settings: &UrlSettings,
) -> Result<BuiltUrl, SignatureConfigError> {
    let verifier =
        SignatureVerifier::from_env(&settings.key, &settings.salt, settings.signature_size, "")?;
    let unsigned = unsigned_path(request);
    let signature = verifier
        .signer()
        .map_or_else(|| UNSIGNED.to_owned(), |signer| signer.sign(&unsigned));
    let path = format!("/{signature}{unsigned}");
    let key = cache_key(&settings.prefix, &path);
    let cached_url = |key: &str| {
        settings
            .cache_base_url
            .as_deref()
            .map(|base| format!("{}/{key}", base.trim_end_matches('/')))
    };
    // Widest first, so that when two sources would load one key the wider type keeps it.
    let mut variants: Vec<BuiltVariant> = Vec::new();
    for (mime, accept) in SOURCES.into_iter().rev() {
        let variant = settings
            .negotiation
            .variant(&path, Some(&HeaderValue::from_static(accept)));
        let variant_key = variant.key(&key);
        if variant_key == key || variants.iter().any(|v| v.key == variant_key) {
            continue;
        }
        variants.push(BuiltVariant {
            mime,
            class: variant.class().map_or("none", |c| c.name()),
            cached_url: cached_url(&variant_key),
            key: variant_key,
        });
    }
    variants.reverse();
    Ok(BuiltUrl {
        proxy_url: format!("{}{path}", settings.proxy_base_url.trim_end_matches('/')),
        cached_url: cached_url(&key),
        path,
        key,
        variants,
    })
}

/// `/{options}/{source}`: the part the signature covers.
fn unsigned_path(request: &UrlRequest) -> String {
    let mut path = String::new();
    for option in request.options.split('/').filter(|o| !o.is_empty()) {
        path.push('/');
        path.push_str(option);
    }
    let ext = request.ext.as_deref().filter(|e| !e.is_empty());
    if request.base64 {
        path.push('/');
        path.push_str(&URL_SAFE_NO_PAD.encode(&request.source));
        if let Some(ext) = ext {
            path.push('.');
            path.push_str(ext);
        }
    } else {
        path.push_str("/plain/");
        path.extend(utf8_percent_encode(&request.source, PLAIN_SOURCE));
        if let Some(ext) = ext {
            path.push('@');
            path.push_str(ext);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> UrlSettings {
        UrlSettings {
            key: "736563726574".into(),
            salt: "68656C6C6F".into(),
            signature_size: 32,
            prefix: String::new(),
            proxy_base_url: "https://img.example/".into(),
            cache_base_url: Some("https://bucket.example/results".into()),
            negotiation: Negotiation::default(),
        }
    }

    /// imgproxy's documented signing example, rebuilt from its parts.
    #[test]
    fn matches_imgproxys_documented_vector() {
        let request = UrlRequest {
            source: "http://example.com/images/curiosity.jpg".into(),
            options: "rs:fill:300:400:0/g:sm".into(),
            ext: Some("png".into()),
            base64: true,
        };
        let built = build(&request, &settings()).unwrap();
        // imgproxy's docs split the base64 for readability; the signature covers the bytes
        // as sent, so the same source unsplit signs differently but verifies the same way.
        assert!(built.path.ends_with(
            "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1wbGUuY29tL2ltYWdlcy9jdXJpb3NpdHkuanBn.png"
        ));
        let verifier = SignatureVerifier::from_env("736563726574", "68656C6C6F", 32, "").unwrap();
        let (sig, rest) = built.path[1..].split_once('/').unwrap();
        verifier.verify(sig, &format!("/{rest}")).unwrap();
    }

    #[test]
    fn urls_and_key_agree_with_the_proxy_rule() {
        let request = UrlRequest {
            source: "https://example.com/a b.jpg?x=1".into(),
            options: "rs:fit:300:300".into(),
            ext: Some("webp".into()),
            base64: false,
        };
        let built = build(&request, &settings()).unwrap();
        assert!(
            built
                .path
                .ends_with("/rs:fit:300:300/plain/https://example.com/a%20b.jpg%3Fx=1@webp")
        );
        assert_eq!(
            built.proxy_url,
            format!("https://img.example{}", built.path)
        );
        assert_eq!(built.key, cache_key("", &built.path));
        assert_eq!(
            built.cached_url.unwrap(),
            format!("https://bucket.example/results/{}", built.key)
        );
    }

    #[test]
    fn unsigned_and_truncated_signatures() {
        let request = UrlRequest {
            source: "https://example.com/a.jpg".into(),
            ..UrlRequest::default()
        };
        let unsigned = UrlSettings {
            signature_size: 32,
            proxy_base_url: DEFAULT_PROXY_BASE_URL.into(),
            ..UrlSettings::default()
        };
        assert_eq!(
            build(&request, &unsigned).unwrap().path,
            "/insecure/plain/https://example.com/a.jpg"
        );
        let short = UrlSettings {
            signature_size: 8,
            ..settings()
        };
        let sig = build(&request, &short).unwrap().path[1..]
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(sig.len(), 11, "8 bytes are 11 base64url characters");
    }

    #[test]
    fn the_first_pair_of_a_rotation_list_signs() {
        let request = UrlRequest {
            source: "https://example.com/a.jpg".into(),
            ..UrlRequest::default()
        };
        let rotated = UrlSettings {
            key: "736563726574,6e6577".into(),
            salt: "68656C6C6F,73616c74".into(),
            ..settings()
        };
        assert_eq!(
            build(&request, &rotated).unwrap(),
            build(&request, &settings()).unwrap()
        );
    }

    /// The variants a page offers, for each kind of negotiation: the wider type keeps a key
    /// two sources share, and a format fixed in the URL closes the `AUTO_` ones.
    #[test]
    fn variants_follow_the_negotiation() {
        use crate::cache::variant::Mode::{Auto, Enforce, Off};
        let offered = |webp, avif, ext: Option<&str>| {
            let request = UrlRequest {
                source: "https://example.com/a.jpg".into(),
                ext: ext.map(str::to_owned),
                ..UrlRequest::default()
            };
            let settings = UrlSettings {
                negotiation: Negotiation {
                    webp,
                    avif,
                    ..Negotiation::default()
                },
                ..settings()
            };
            let built = build(&request, &settings).unwrap();
            for v in &built.variants {
                assert!(v.key.starts_with(&built.key), "{v:?}");
                assert_eq!(
                    v.cached_url.as_deref(),
                    Some(format!("https://bucket.example/results/{}", v.key).as_str())
                );
            }
            built
                .variants
                .iter()
                .map(|v| (v.mime, v.class, v.key[built.key.len()..].to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(offered(Off, Off, None), []);
        assert_eq!(
            offered(Auto, Auto, None),
            [
                ("image/avif", "avif-webp", "-avif-webp".to_owned()),
                ("image/webp", "webp", "-webp".to_owned()),
            ]
        );
        assert_eq!(offered(Auto, Auto, Some("jpg")), []);
        assert_eq!(
            offered(Auto, Off, None),
            [("image/webp", "webp", "-webp".to_owned())]
        );
        assert_eq!(
            offered(Off, Auto, None),
            [("image/avif", "avif", "-avif".to_owned())]
        );
        assert_eq!(
            offered(Enforce, Auto, Some("png")),
            [("image/webp", "webp", "-webp".to_owned())]
        );
    }
}
