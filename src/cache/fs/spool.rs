//! The upload spool: results waiting for the bucket, kept in `CACHE_DIR/.spool` so that a
//! crash, a restart or a long bucket outage loses none of them.
//!
//! One file per result, named by the SHA-256 of its key (a key is spooled at most once at a
//! time: the upload queue keeps it in flight until its file is gone):
//!
//! ```text
//! {"v":1,"key":"…","replace":false,"sha256":"…"}\n   the spool header (SHA-256 of the rest)
//! {"v":1,"content_type":…,"len":…}\n                   the object's metadata, as in `.meta`
//! body bytes
//! ```
//!
//! Written like every file of the disk tier (`.tmp`, fsync, rename, fsync of the directory),
//! so a file is either whole or absent; a file that is not whole anyway (a disk error, a
//! torn write on a filesystem that reorders) fails its length or its checksum when it is read
//! for upload and is removed, never uploaded. Start-up reads only the headers.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::object::{Object, unix_secs};
use super::meta;

pub(super) const SPOOL_DIR: &str = ".spool";

/// The longest spool header read: a key and a hash, far less in practice.
const HEADER_MAX: usize = 4096;
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    v: u32,
    key: String,
    replace: bool,
    sha256: String,
}

/// A result in the spool, as the upload queue refers to it: no bytes in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolFile {
    pub key: String,
    /// A fresh rendering of a stale result: it replaces what the bucket holds.
    pub replace: bool,
    pub(super) path: PathBuf,
    /// Bytes charged against `CACHE_DIR_MAX_BYTES` while the file exists.
    pub(super) charge: u64,
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a spool file cannot be uploaded.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The file that spools `key`.
pub(super) fn path_of(root: &Path, key: &str) -> PathBuf {
    root.join(SPOOL_DIR)
        .join(hex::encode(Sha256::digest(key.as_bytes())))
}

/// The bytes of the spool file for `object` under `key`.
pub(super) fn encode(key: &str, object: &Object, replace: bool) -> Result<Vec<u8>, String> {
    let header = Header {
        v: VERSION,
        key: key.to_owned(),
        replace,
        sha256: String::new(),
    };
    if key.len() > HEADER_MAX / 2 {
        return Err(format!("a key of {} bytes is too long to spool", key.len()));
    }
    let meta = meta::encode(&object.meta, object.len()).map_err(|e| e.to_string())?;
    let mut sum = Sha256::new();
    sum.update(&meta);
    sum.update(&object.body);
    let header = Header {
        sha256: hex::encode(sum.finalize()),
        ..header
    };
    let mut bytes = serde_json::to_vec(&header).expect("a struct of strings encodes");
    bytes.push(b'\n');
    bytes.reserve(meta.len() + object.body.len());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&object.body);
    Ok(bytes)
}

/// Reads the header of the spool file at `path`, for the index built at start-up.
pub(super) fn peek(path: &Path, charge: u64) -> Result<SpoolFile, Damage> {
    let mut head = Vec::with_capacity(512);
    File::open(path)?
        .take(HEADER_MAX as u64)
        .read_to_end(&mut head)?;
    let (header, _) = header(&head)?;
    Ok(SpoolFile {
        key: header.key,
        replace: header.replace,
        path: path.to_owned(),
        charge,
    })
}

/// Reads the whole spool file of `file` and checks it: header, metadata, length and checksum.
pub(super) fn read(file: &SpoolFile) -> Result<Object, Damage> {
    let bytes = match std::fs::read(&file.path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Damage::Corrupt("the spool file is gone".into()));
        }
        Err(e) => return Err(e.into()),
    };
    let (header, rest) = header(&bytes)?;
    if header.key != file.key || header.replace != file.replace {
        return Err(Damage::Corrupt(format!(
            "holds {:?}, not {:?}",
            header.key, file.key
        )));
    }
    // The checksum covers the metadata and the body: everything the upload sends.
    let sum = hex::encode(Sha256::digest(rest));
    if sum != header.sha256 {
        return Err(Damage::Corrupt(format!(
            "the SHA-256 is {sum}, the header says {}",
            header.sha256
        )));
    }
    let meta_end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| Damage::Corrupt("the metadata line is cut short".into()))?
        + 1;
    let body = &rest[meta_end..];
    let written_at = || {
        std::fs::metadata(&file.path)
            .and_then(|stat| stat.modified())
            .map_or(0, unix_secs)
    };
    let meta = meta::decode(&rest[..meta_end], body.len() as u64, written_at)
        .map_err(|unreadable| Damage::Corrupt(format!("metadata: {}", unreadable.0)))?;
    Ok(Object {
        meta,
        body: Bytes::copy_from_slice(body),
    })
}

fn header(bytes: &[u8]) -> Result<(Header, &[u8]), Damage> {
    let end = bytes
        .iter()
        .take(HEADER_MAX)
        .position(|&b| b == b'\n')
        .ok_or_else(|| Damage::Corrupt("the header is cut short".into()))?;
    let header: Header = serde_json::from_slice(&bytes[..end])
        .map_err(|e| Damage::Corrupt(format!("the header is not valid JSON: {e}")))?;
    if header.v != VERSION {
        return Err(Damage::Corrupt(format!("unknown version {}", header.v)));
    }
    Ok((header, &bytes[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::object::Meta;

    fn object() -> Object {
        Object {
            meta: Meta {
                content_type: "image/webp".into(),
                cache_control: Some("max-age=60".into()),
                stored_at: 1_700_000_000,
                content_disposition: None,
            },
            body: Bytes::from_static(b"\x00\x01 a body with a newline \n inside"),
        }
    }

    fn written(dir: &Path, bytes: &[u8]) -> SpoolFile {
        let path = dir.join("f");
        std::fs::write(&path, bytes).unwrap();
        SpoolFile {
            key: "k/0123".into(),
            replace: true,
            path,
            charge: 0,
        }
    }

    #[test]
    fn a_whole_file_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode("k/0123", &object(), true).unwrap();
        let file = written(dir.path(), &bytes);
        assert_eq!(peek(&file.path, 0).unwrap(), file);
        assert_eq!(read(&file).unwrap(), object());
    }

    /// Every way a file can be damaged is caught before its object is uploaded: cut short
    /// anywhere, any single byte changed.
    #[test]
    fn a_damaged_file_is_never_read_as_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode("k/0123", &object(), true).unwrap();
        for len in 0..bytes.len() {
            let file = written(dir.path(), &bytes[..len]);
            assert!(read(&file).is_err(), "cut to {len} bytes");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            let file = written(dir.path(), &damaged);
            // A flipped bit in the header may leave valid JSON that names another key or
            // flag: then it differs from what the index knows, which is caught too.
            if let Ok(read) = read(&file) {
                panic!("byte {at} changed, read back as {read:?}");
            }
        }
    }
}
