//! The local store: results as plain files in `CACHE_DIR`, for one machine or a first try.
//!
//! `CACHE_DIR/<key>` holds the body bytes exactly as served, so the directory can be browsed or
//! served by any static file server; `CACHE_DIR/.meta/<key>` holds the content type and cache
//! control. Both are written to `CACHE_DIR/.tmp` first and moved into place, metadata before
//! body: the body file appearing is the commit point, so a crash never leaves a partial object.

use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::object::{Meta, Object, Reading};
use super::store::{PutMode, PutOutcome, Store, StoreError};

const META_DIR: &str = ".meta";
const TMP_DIR: &str = ".tmp";

pub struct FsStore {
    root: PathBuf,
    /// Makes temporary names unique within this process; the pid covers other processes.
    next_tmp: AtomicU64,
}

impl FsStore {
    /// Opens (and creates) the store at `root`.
    ///
    /// # Errors
    /// The directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<FsStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join(META_DIR))?;
        std::fs::create_dir_all(root.join(TMP_DIR))?;
        Ok(FsStore {
            root,
            next_tmp: AtomicU64::new(0),
        })
    }

    fn paths(&self, key: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        // Keys are a configured prefix plus hex; refuse anything that could leave the root.
        let safe = !key.is_empty()
            && !key.starts_with('/')
            && key
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..")
            && !key.starts_with(META_DIR)
            && !key.starts_with(TMP_DIR);
        if !safe {
            return Err(StoreError::permanent(format!("unsafe key {key:?}"), None));
        }
        Ok((self.root.join(key), self.root.join(META_DIR).join(key)))
    }

    /// Writes `bytes` to a new temporary file. The bytes are shared with the blocking task,
    /// not copied for it (as `tokio::fs::write` would: one more copy of every result).
    async fn write_tmp(&self, bytes: Bytes) -> std::io::Result<PathBuf> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(TMP_DIR)
            .join(format!("{}-{n}", std::process::id()));
        let target = path.clone();
        tokio::task::spawn_blocking(move || std::fs::write(target, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(path)
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let message = format!("{what} {}: {e}", path.display());
    match e.kind() {
        IoKind::PermissionDenied | IoKind::ReadOnlyFilesystem => StoreError::permanent(
            message,
            Some("check that CACHE_DIR is writable by this user"),
        ),
        // A full disk may drain; anything else is worth another try too.
        _ => StoreError::transient(message),
    }
}

async fn ensure_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => tokio::fs::create_dir_all(parent).await,
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl Store for FsStore {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let (body, _) = self.paths(key)?;
        tokio::fs::try_exists(&body)
            .await
            .map_err(|e| io_error("checking", &body, e))
    }

    async fn put(
        &self,
        key: &str,
        object: &Object,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let (body_path, meta_path) = self.paths(key)?;
        if mode == PutMode::IfAbsent && self.exists(key).await? {
            return Ok(PutOutcome::AlreadyExists);
        }
        let meta = format!(
            "{}\n{}\n{}\n",
            object.meta.content_type,
            object.meta.cache_control.as_deref().unwrap_or(""),
            object.meta.stored_at
        );
        let tmp_meta = self
            .write_tmp(Bytes::from(meta))
            .await
            .map_err(|e| io_error("writing", &self.root.join(TMP_DIR), e))?;
        let tmp_body = self
            .write_tmp(object.body.clone())
            .await
            .map_err(|e| io_error("writing", &self.root.join(TMP_DIR), e))?;
        let publish = async {
            ensure_parent(&meta_path).await?;
            ensure_parent(&body_path).await?;
            tokio::fs::rename(&tmp_meta, &meta_path).await?;
            match mode {
                PutMode::Overwrite => tokio::fs::rename(&tmp_body, &body_path).await,
                // A hard link fails if the target exists: an atomic "create if absent".
                PutMode::IfAbsent => tokio::fs::hard_link(&tmp_body, &body_path).await,
            }
        };
        let result = publish.await;
        // After a rename these are gone already; after a link or a failure they are leftovers.
        let _ = tokio::fs::remove_file(&tmp_meta).await;
        let _ = tokio::fs::remove_file(&tmp_body).await;
        match result {
            Ok(()) => Ok(PutOutcome::Stored),
            Err(e) if e.kind() == IoKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(io_error("storing", &body_path, e)),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Reading>, StoreError> {
        let (body_path, meta_path) = self.paths(key)?;
        let body = match tokio::fs::read(&body_path).await {
            Ok(body) => Bytes::from(body),
            Err(e) if e.kind() == IoKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading", &body_path, e)),
        };
        let meta = tokio::fs::read_to_string(&meta_path)
            .await
            .map_err(|e| io_error("reading", &meta_path, e))?;
        let mut lines = meta.lines();
        let content_type = lines.next().unwrap_or_default().to_owned();
        let cache_control = lines.next().filter(|l| !l.is_empty()).map(str::to_owned);
        let stored_at = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        Ok(Some(Reading::whole(Object {
            meta: Meta {
                content_type,
                cache_control,
                stored_at,
            },
            body,
        })))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let (body_path, meta_path) = self.paths(key)?;
        let existed = match tokio::fs::remove_file(&body_path).await {
            Ok(()) => true,
            Err(e) if e.kind() == IoKind::NotFound => false,
            Err(e) => return Err(io_error("removing", &body_path, e)),
        };
        let _ = tokio::fs::remove_file(&meta_path).await;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(body: &'static [u8]) -> Object {
        Object {
            body: Bytes::from_static(body),
            meta: Meta {
                content_type: "image/png".into(),
                cache_control: Some("max-age=60, public".into()),
                stored_at: 1_700_000_000,
            },
        }
    }

    async fn read(key: &str, store: &FsStore) -> Option<Object> {
        use futures_util::TryStreamExt;
        let reading = store.read(key).await.unwrap()?;
        let chunks: Vec<Bytes> = reading.body.try_collect().await.unwrap();
        Some(Object {
            meta: reading.meta,
            body: chunks.concat().into(),
        })
    }

    #[tokio::test]
    async fn round_trips_body_and_headers_under_a_prefixed_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        assert!(!store.exists("thumbs/abc").await.unwrap());
        let put = store
            .put("thumbs/abc", &object(b"png"), PutMode::Overwrite)
            .await;
        assert_eq!(put.unwrap(), PutOutcome::Stored);
        assert_eq!(
            std::fs::read(dir.path().join("thumbs/abc")).unwrap(),
            b"png"
        );
        assert_eq!(read("thumbs/abc", &store).await, Some(object(b"png")));
        assert_eq!(
            std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn if_absent_keeps_the_first_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store
            .put("k", &object(b"first"), PutMode::IfAbsent)
            .await
            .unwrap();
        let second = store
            .put("k", &object(b"second"), PutMode::IfAbsent)
            .await
            .unwrap();
        assert_eq!(second, PutOutcome::AlreadyExists);
        assert_eq!(read("k", &store).await.unwrap().body, "first");
    }

    #[tokio::test]
    async fn keys_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("root")).unwrap();
        for key in ["../escape", "/abs", "a/../../b", ".meta/x", ""] {
            let err = store
                .put(key, &object(b"x"), PutMode::Overwrite)
                .await
                .unwrap_err();
            assert!(!err.is_transient(), "{key}");
        }
        assert!(!dir.path().join("escape").exists());
    }
}
