//! The metadata file next to each body: what a hit is answered with, and a check on the body.
//!
//! One small JSON object, `{"v":1,"content_type":…,"cache_control":…,"stored_at":…,"len":…}`.
//! Unknown fields are ignored and missing optional ones default, so a later version can add a
//! field without bumping `v` and files written before it keep reading; `v` changes only for a
//! change old readers must not misread. `len` is the body's length when it was stored: a body
//! that has another length is not the one this file describes.
//!
//! Files written before this format (plain lines: content type, cache control, and from one
//! release on the render time) are still read, so an upgrade does not empty the tier.

use serde::{Deserialize, Serialize};

use super::super::object::Meta;
use super::super::store::StoreError;

/// The longest metadata file written or read: one filesystem block, which is what the disk
/// tier charges for it. Real values are a few dozen bytes.
pub(super) const MAX_LEN: usize = 4096;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct MetaFile {
    v: u32,
    content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<String>,
    stored_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_disposition: Option<String>,
    /// Optional so a file that lacks it is still an object, just an unchecked one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    len: Option<u64>,
}

/// The metadata file for `meta` on a body of `len` bytes.
///
/// # Errors
/// The file would be longer than [`MAX_LEN`] (a pathological header value): not transient.
pub(super) fn encode(meta: &Meta, len: u64) -> Result<Vec<u8>, StoreError> {
    let file = MetaFile {
        v: VERSION,
        content_type: meta.content_type.clone(),
        cache_control: meta.cache_control.clone(),
        stored_at: meta.stored_at,
        content_disposition: meta.content_disposition.clone(),
        len: Some(len),
    };
    let mut bytes = serde_json::to_vec(&file).expect("a struct of strings and integers encodes");
    bytes.push(b'\n');
    if bytes.len() > MAX_LEN {
        return Err(StoreError::permanent(
            format!(
                "metadata of {} bytes (content type and cache control) is longer than the disk \
                 tier keeps ({MAX_LEN})",
                bytes.len()
            ),
            None,
        ));
    }
    Ok(bytes)
}

/// Why a metadata file cannot be used; the object it belongs to is then a miss.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unreadable(pub String);

/// Reads a metadata file for a body of `body_len` bytes. `written_at` (the file's mtime in Unix
/// seconds) stands in for the render time of files older than the render time itself.
///
/// # Errors
/// The file is truncated, garbled, of an unknown version, or describes another body.
pub(super) fn decode(
    bytes: &[u8],
    body_len: u64,
    written_at: impl FnOnce() -> u64,
) -> Result<Meta, Unreadable> {
    if bytes.len() > MAX_LEN {
        return Err(Unreadable(format!("longer than {MAX_LEN} bytes")));
    }
    if bytes.first() != Some(&b'{') {
        return decode_lines(bytes, written_at);
    }
    let file: MetaFile =
        serde_json::from_slice(bytes).map_err(|e| Unreadable(format!("not valid JSON: {e}")))?;
    if file.v != VERSION {
        return Err(Unreadable(format!("unknown version {}", file.v)));
    }
    if let Some(len) = file.len.filter(|&len| len != body_len) {
        return Err(Unreadable(format!(
            "written for a body of {len} bytes, the body has {body_len}"
        )));
    }
    Ok(Meta {
        content_type: file.content_type,
        cache_control: file.cache_control,
        stored_at: file.stored_at,
        content_disposition: file.content_disposition,
    })
}

/// The line format of earlier releases: content type, cache control (empty for none), and
/// (later) the render time.
fn decode_lines(bytes: &[u8], written_at: impl FnOnce() -> u64) -> Result<Meta, Unreadable> {
    let text = std::str::from_utf8(bytes).map_err(|_| Unreadable("not UTF-8".into()))?;
    // Every release ended the file with a newline after its last line: a file without one
    // was cut short.
    let Some(text) = text.strip_suffix('\n') else {
        return Err(Unreadable("truncated".into()));
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let (content_type, cache_control, stored_at) = match lines[..] {
        [content_type, cache_control] => (content_type, cache_control, written_at()),
        [content_type, cache_control, stored_at] => (
            content_type,
            cache_control,
            stored_at
                .parse()
                .map_err(|_| Unreadable(format!("render time {stored_at:?} is not a number")))?,
        ),
        _ => return Err(Unreadable(format!("{} lines", lines.len()))),
    };
    if content_type.is_empty() {
        return Err(Unreadable("no content type".into()));
    }
    Ok(Meta {
        content_type: content_type.to_owned(),
        cache_control: Some(cache_control)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        stored_at,
        content_disposition: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            content_type: "image/webp".into(),
            cache_control: Some("max-age=31536000, public".into()),
            stored_at: 1_700_000_000,
            content_disposition: None,
        }
    }

    fn no_mtime() -> u64 {
        panic!("only the oldest format needs the file's mtime")
    }

    #[test]
    fn round_trips_and_checks_the_body_length() {
        let bytes = encode(&meta(), 1234).unwrap();
        assert_eq!(decode(&bytes, 1234, no_mtime), Ok(meta()));
        assert!(decode(&bytes, 1233, no_mtime).is_err());
        let none = Meta {
            cache_control: None,
            ..meta()
        };
        assert_eq!(decode(&encode(&none, 0).unwrap(), 0, no_mtime), Ok(none));
    }

    /// A field a later version adds must not make this version drop the object, and a file
    /// without `len` is still read.
    #[test]
    fn unknown_fields_are_ignored_and_len_is_optional() {
        let bytes =
            br#"{"v":1,"content_type":"image/png","stored_at":5,"etag":"x","tier":{"a":1}}"#;
        let read = decode(bytes, 99, no_mtime).unwrap();
        assert_eq!(read.content_type, "image/png");
        assert_eq!(read.cache_control, None);
        assert_eq!(read.stored_at, 5);
    }

    #[test]
    fn garbled_truncated_and_future_files_are_unreadable() {
        let whole = encode(&meta(), 10).unwrap();
        for bad in [
            &b""[..],
            &whole[..whole.len() / 2],
            b"{\"v\":2,\"content_type\":\"image/png\",\"stored_at\":5}",
            b"{\"v\":1,\"stored_at\":5}",
            b"\xff\xfe\n\n",
            b"image/png",
            b"image/png\nmax-age=1\nsoon\n",
            b"\n\n",
            &[b'{'; MAX_LEN + 1][..],
        ] {
            assert!(
                decode(bad, 10, || 0).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn reads_the_line_format_of_earlier_releases() {
        assert_eq!(
            decode(
                b"image/webp\nmax-age=31536000, public\n1700000000\n",
                3,
                no_mtime
            ),
            Ok(meta())
        );
        // Before the render time was kept: the file's mtime is when it was stored.
        let read = decode(b"image/png\n\n", 3, || 42).unwrap();
        assert_eq!(read.cache_control, None);
        assert_eq!(read.stored_at, 42);
    }

    #[test]
    fn refuses_to_write_more_than_a_block() {
        let huge = Meta {
            cache_control: Some("x".repeat(MAX_LEN)),
            ..meta()
        };
        let err = encode(&huge, 1).unwrap_err();
        assert!(!err.is_transient());
    }
}
