//! What each fuzz target does with its input, in one place: the libFuzzer targets in `fuzz/`
//! call these, and so does `tests/fuzz_corpus.rs`, which replays every committed corpus and
//! regression input in the normal test suite (CI can't afford the sanitizer build). Not an API:
//! hidden from the docs and free to change with the targets.
//!
//! Every function takes raw bytes, runs them through the same public entry point production
//! uses, with the production defaults (`DEFAULT_*`, i.e. `EngineConfig::default()` and the
//! parser's defaults), and panics only when the code under test does or an invariant noted in
//! the function fails. Errors are the expected answer to most inputs and are ignored.
//!
//! Limits of the C codecs: libjpeg-turbo (JPEG), libwebp (still WebP) and libavif/libaom (AVIF)
//! are built by their `-sys` crates without coverage instrumentation, so for those formats the
//! fuzzer steers by our Rust glue and the `image` crate paths only.

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use crate::cache::variant::{Class, Mode, Negotiation, Variant};
use crate::cache::{cache_key, policy};
use crate::proxy::config::{
    DEFAULT_MAX_CACHEABLE_BYTES, DEFAULT_MIN_STORE_MAX_AGE_SECS, DEFAULT_STORE_SVG,
};
use crate::signature::SignatureVerifier;
use crate::worker::engine::{self, EngineConfig, Job, geometry, pipeline};
use crate::worker::options::{Defaults, ImageFormat, ProcessingOptions, ResizingType};
use crate::worker::url::{ParserConfig, parse_path};

/// A fixed "now" for `expires`, so a run is reproducible.
const NOW: i64 = 1_700_000_000;

/// One fuzz target: its name (the file under `fuzz/fuzz_targets/` and the folders under
/// `fuzz/corpus/` and `fuzz/regressions/`) and what it does with one input.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, for the corpus replay test; `fuzz/Cargo.toml` has one `[[bin]]` for each.
pub const TARGETS: &[Target] = &[
    Target {
        name: "url",
        run: url,
    },
    Target {
        name: "signature",
        run: signature,
    },
    Target {
        name: "probe",
        run: probe,
    },
    Target {
        name: "decode_jpeg",
        run: decode_jpeg,
    },
    Target {
        name: "decode_png",
        run: decode_png,
    },
    Target {
        name: "decode_gif",
        run: decode_gif,
    },
    Target {
        name: "decode_webp",
        run: decode_webp,
    },
    Target {
        name: "decode_avif",
        run: decode_avif,
    },
    Target {
        name: "decode_tiff",
        run: decode_tiff,
    },
    Target {
        name: "decode_bmp",
        run: decode_bmp,
    },
    Target {
        name: "decode_ico",
        run: decode_ico,
    },
    Target {
        name: "decode_svg",
        run: decode_svg,
    },
    Target {
        name: "cache_key",
        run: key,
    },
    Target {
        name: "cache_policy",
        run: policy,
    },
];

/// Source sizes the planner is asked about for every parsed URL: the smallest, a photo, and the
/// extremes [`engine::probe`] can let through the default 50 MP source limit (a square at the
/// limit, and a 1-pixel line as long as the limit allows either way).
const SOURCE_SIZES: [(u32, u32); 5] = [
    (1, 1),
    (1000, 667),
    (7071, 7071),
    (1, 50_000_000),
    (50_000_000, 1),
];

/// The worker's request path: [`parse_path`] (signing off, so the options are reached), then,
/// as the pipeline does once it knows the source size, the plan and the result-size check
/// (`pipeline::check_result_size`) for `SOURCE_SIZES`, with and without an EXIF quarter
/// turn, for raster and vector sources.
pub fn url(data: &[u8]) {
    static CONFIG: LazyLock<ParserConfig> = LazyLock::new(ParserConfig::default);
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = parse_path(path, &CONFIG, NOW) else {
        return;
    };
    let config = EngineConfig::default();
    let po = &parsed.options;
    for (width, height) in SOURCE_SIZES {
        for orientation in [1, 6] {
            let (w, h) = pipeline::oriented_size(width, height, orientation, po.rotate);
            for vector in [false, true] {
                let plan = geometry::plan(w, h, po, vector);
                let _ = pipeline::check_result_size(&plan, po, 1, &config);
            }
        }
    }
}

/// [`SignatureVerifier::verify`] with signing on (two key/salt pairs, as during a key rotation,
/// full and truncated signatures, and a trusted signature): the input is split as
/// [`parse_path`] splits a request path, at the first `/`. Whatever it is, the signature we
/// make for that path must verify.
pub fn signature(data: &[u8]) {
    static VERIFIERS: LazyLock<[SignatureVerifier; 2]> = LazyLock::new(|| {
        let build = |size| {
            SignatureVerifier::from_env("6b6579,0a0b0c", "73616c74,", size, "trusted-one")
                .expect("the fuzz target's key material is valid")
        };
        [build(32), build(8)]
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (given, path) = text.split_at(text.find('/').unwrap_or(text.len()));
    for verifier in VERIFIERS.iter() {
        let _ = verifier.verify(given, path);
        let ours = verifier
            .signer()
            .expect("the fuzz target's verifier has signers")
            .sign(path);
        assert_eq!(verifier.verify(&ours, path), Ok(()), "our own signature");
    }
}

/// [`engine::probe()`] on any bytes: format, size and frame count from the headers.
pub fn probe(data: &[u8]) {
    let _ = engine::probe(data);
}

/// The whole engine on a source of `format` ([`pipeline::run`], not [`engine::process`], whose
/// panic guard would hide what the fuzzer is looking for): probe, the production limits,
/// decode, then a 64 × 64 thumbnail so encoding stays cheap. Inputs of other formats return at
/// once, which keeps each target's corpus to its format.
fn decode(format: ImageFormat, data: &[u8], output: Option<ImageFormat>) {
    static OPTIONS: LazyLock<ProcessingOptions> = LazyLock::new(|| {
        let mut po = ProcessingOptions::new(&Defaults::default());
        po.resizing_type = ResizingType::Fit;
        po.width = 64;
        po.height = 64;
        po
    });
    static CONFIG: LazyLock<EngineConfig> = LazyLock::new(EngineConfig::default);
    if engine::probe::sniff(data) != Some(format) {
        return;
    }
    let job = Job {
        source: data,
        options: &OPTIONS,
        format: output,
        accept: None,
        // Time must not steer the fuzzer: the stage limits alone bound a job here.
        deadline: engine::Deadline::NONE,
    };
    let _ = pipeline::run(&job, &CONFIG);
}

pub fn decode_jpeg(data: &[u8]) {
    decode(ImageFormat::Jpeg, data, None);
}

pub fn decode_png(data: &[u8]) {
    decode(ImageFormat::Png, data, None);
}

pub fn decode_gif(data: &[u8]) {
    decode(ImageFormat::Gif, data, None);
}

pub fn decode_webp(data: &[u8]) {
    decode(ImageFormat::Webp, data, None);
}

pub fn decode_avif(data: &[u8]) {
    decode(ImageFormat::Avif, data, None);
}

pub fn decode_tiff(data: &[u8]) {
    decode(ImageFormat::Tiff, data, None);
}

pub fn decode_bmp(data: &[u8]) {
    decode(ImageFormat::Bmp, data, None);
}

pub fn decode_ico(data: &[u8]) {
    decode(ImageFormat::Ico, data, None);
}

/// SVG both ways: sanitised and written back (no format asked for), and rendered for a PNG
/// result.
pub fn decode_svg(data: &[u8]) {
    decode(ImageFormat::Svg, data, None);
    decode(ImageFormat::Svg, data, Some(ImageFormat::Png));
}

/// The proxy's object key, from the path of the request target as hyper parses it (the input),
/// with no prefix and with a folder prefix. The key must be the prefix and 32 lowercase hex
/// digits whatever the path: it names an object in a public bucket and a file under the cache
/// directory. With formats negotiated (the path doubling as the `Accept` header), the variant
/// key is that key alone or followed by `-` and a class name.
pub fn key(data: &[u8]) {
    let Ok(uri) = Uri::try_from(data) else {
        return;
    };
    let negotiation = Negotiation {
        webp: Mode::Enforce,
        avif: Mode::Auto,
        ..Negotiation::default()
    };
    let accept = HeaderValue::from_bytes(data).ok();
    for prefix in ["", "thumbs/"] {
        let key = cache_key(prefix, uri.path());
        let hash = key
            .strip_prefix(prefix)
            .expect("the key starts with the prefix");
        assert!(
            hash.len() == 32 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "key {key:?} is not prefix + 32 hex digits"
        );
        let variant = negotiation.variant(uri.path(), accept.as_ref());
        let variant_key = variant.key(&key);
        let suffix = variant_key
            .strip_prefix(&key)
            .expect("a variant key starts with the plain key");
        assert!(
            suffix.is_empty()
                || Class::ALL
                    .iter()
                    .any(|class| suffix.strip_prefix('-') == Some(class.name())),
            "variant key {variant_key:?}"
        );
    }
}

/// [`policy::decide`] over a response head made from the input: the first byte picks the
/// method, the `Range` flag and the status; the rest is `name: value` lines (lines that aren't
/// a valid header are skipped, as hyper would refuse them). A stored response must have a
/// length within `MAX_CACHEABLE_BYTES` (its default) when it declares one.
pub fn policy(data: &[u8]) {
    let Some((&selector, head)) = data.split_first() else {
        return;
    };
    let method = if selector & 1 == 0 {
        Method::GET
    } else {
        Method::HEAD
    };
    let ranged = selector & 2 != 0;
    let status = match selector >> 2 {
        0..=47 => StatusCode::OK,
        48 => StatusCode::PARTIAL_CONTENT,
        49 => StatusCode::NOT_MODIFIED,
        50 => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let rules = policy::Rules {
        max_bytes: DEFAULT_MAX_CACHEABLE_BYTES,
        min_max_age: std::time::Duration::from_secs(DEFAULT_MIN_STORE_MAX_AGE_SECS),
        svg: DEFAULT_STORE_SVG,
    };
    // A fixed clock, so `Expires` decides the same way on every replay.
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let verdict = policy::decide(
        &method,
        ranged,
        status,
        &headers,
        &rules,
        &Variant::Fixed,
        now,
    );
    if let policy::Cacheable::Yes { expected_len } = verdict {
        if let Some(len) = expected_len {
            assert!(
                len <= DEFAULT_MAX_CACHEABLE_BYTES,
                "stored a {len}-byte response"
            );
        }
        let content_type = headers[http::header::CONTENT_TYPE].as_bytes();
        assert!(
            content_type.len() > 6 && content_type[..6].eq_ignore_ascii_case(b"image/"),
            "stored a {:?} response",
            String::from_utf8_lossy(content_type)
        );
    }
}
