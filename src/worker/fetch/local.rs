//! `local:///path` sources: files under `IMGPROXY_LOCAL_FILESYSTEM_ROOT`, never outside it.
//!
//! The path is taken literally, as imgproxy does (`%2e%2e` is a file named `%2e%2e`, not a
//! parent directory), joined to the root and canonicalised — which resolves `..` and every
//! symlink — and the result must still lie under the canonical root. A symlink inside the root
//! that points inside the root works; one pointing out is refused like a missing file.

use std::path::PathBuf;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{FetchError, Fetched, append_capped, initial_capacity};

/// Reads files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalSource {
    /// Canonical (absolute, symlink-free) root.
    pub root: PathBuf,
    /// `IMGPROXY_SOURCE_URL_QUERY_SEPARATOR`; empty keeps `?` as part of the file name.
    pub query_separator: String,
    pub max_size: u64,
}

impl LocalSource {
    /// Reads the file `url` (`local:///path/in/root`) names.
    ///
    /// # Errors
    /// [`FetchError::NotFound`] for anything missing, outside the root or not a file;
    /// [`FetchError::TooBig`] past the size cap.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let path = self.resolve(url).await?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| not_found(url, &e.to_string()))?;
        let meta = file
            .metadata()
            .await
            .map_err(|e| not_found(url, &e.to_string()))?;
        if !meta.is_file() {
            return Err(not_found(url, "not a regular file"));
        }
        if meta.len() > self.max_size {
            return Err(FetchError::TooBig(self.max_size));
        }
        // The file may grow between stat and read: the cap is enforced on what is read, too.
        let mut buf = Vec::with_capacity(initial_capacity(Some(meta.len()), self.max_size));
        let mut reader = file.take(self.max_size + 1);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut chunk)
                .await
                .map_err(|e| not_found(url, &e.to_string()))?;
            if n == 0 {
                break;
            }
            append_capped(&mut buf, &chunk[..n], self.max_size)?;
        }
        Ok(Fetched {
            bytes: Bytes::from(buf),
            content_type: None,
        })
    }

    /// The canonical path of the file `url` names, proven to be under the root.
    async fn resolve(&self, url: &str) -> Result<PathBuf, FetchError> {
        let relative = relative_path(url, &self.query_separator)
            .ok_or_else(|| not_found(url, "not a local:/// URL with a path"))?;
        let joined = self.root.join(&relative);
        let canonical = tokio::fs::canonicalize(&joined)
            .await
            .map_err(|e| not_found(url, &e.to_string()))?;
        if !canonical.starts_with(&self.root) {
            tracing::warn!(%url, resolved = %canonical.display(), "local source outside IMGPROXY_LOCAL_FILESYSTEM_ROOT refused");
            return Err(not_found(url, "outside IMGPROXY_LOCAL_FILESYSTEM_ROOT"));
        }
        Ok(canonical)
    }
}

/// The path of a `local://` URL relative to the root: the authority is ignored (as imgproxy
/// does), the query separator cuts, leading `/`s are dropped so the join can't restart at `/`.
/// `None` for an empty path or one with a NUL byte.
pub fn relative_path(url: &str, query_separator: &str) -> Option<PathBuf> {
    let rest = url
        .get(..8)?
        .eq_ignore_ascii_case("local://")
        .then(|| &url[8..])?;
    let path = &rest[rest.find('/')?..];
    let path = match query_separator {
        "" => path,
        sep => path.split(sep).next().unwrap_or(path),
    };
    let path = path.trim_start_matches('/');
    if path.is_empty() || path.contains('\0') {
        return None;
    }
    Some(PathBuf::from(path))
}

fn not_found(url: &str, why: &str) -> FetchError {
    FetchError::NotFound(format!("{url}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn relative_paths() {
        let p = |u: &str| relative_path(u, "?").map(|p| p.to_string_lossy().into_owned());
        assert_eq!(p("local:///a/b.png").as_deref(), Some("a/b.png"));
        assert_eq!(p("LOCAL:///a.png?v=1").as_deref(), Some("a.png"));
        assert_eq!(p("local://host/a.png").as_deref(), Some("a.png"));
        assert_eq!(p("local:////etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(p("local:///%2e%2e/x").as_deref(), Some("%2e%2e/x"));
        assert_eq!(p("local:///"), None);
        assert_eq!(p("local://"), None);
        assert_eq!(p("local:///a\0b"), None);
        assert_eq!(p("http:///a"), None);
        assert_eq!(
            relative_path("local:///a?b.png", "").as_deref(),
            Some(Path::new("a?b.png"))
        );
    }

    #[tokio::test]
    async fn traversal_and_symlinks_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.png"), b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/in.png"), b"inside").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.png"), root.join("out.png"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/in.png"), root.join("alias.png")).unwrap();
        let local = LocalSource {
            root: root.clone(),
            query_separator: "?".into(),
            max_size: 1024,
        };
        let ok = local.fetch("local:///sub/in.png").await.unwrap();
        assert_eq!(&ok.bytes[..], b"inside");
        assert_eq!(
            &local.fetch("local:///alias.png").await.unwrap().bytes[..],
            b"inside"
        );
        assert_eq!(
            &local
                .fetch("local:///sub/../sub/in.png")
                .await
                .unwrap()
                .bytes[..],
            b"inside"
        );
        let depth = root.components().count();
        let climb = "../".repeat(depth + 2);
        let escape = format!(
            "local:///{climb}{}",
            outside.path().join("secret.png").display()
        );
        for url in [
            "local:///out.png",
            "local:///outdir/secret.png",
            escape.as_str(),
            "local:///sub/../../secret.png",
            "local:///%2e%2e/secret.png",
            "local:///sub",
            "local:///missing.png",
        ] {
            let err = local.fetch(url).await.unwrap_err();
            assert!(matches!(err, FetchError::NotFound(_)), "{url}: {err}");
        }
        let small = LocalSource {
            max_size: 3,
            ..local
        };
        assert!(matches!(
            small.fetch("local:///sub/in.png").await,
            Err(FetchError::TooBig(3))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        // Attacker-controlled URLs never panic and never yield a path that restarts at `/`
        // (which `join` would take as a new root).
        #[test]
        fn relative_paths_never_start_at_the_root(
            tail in "[a-z./%?\\x00-\\x7f]{0,40}",
            separator in "[?#]{0,1}",
        ) {
            let url = format!("local://{tail}");
            if let Some(path) = relative_path(&url, &separator) {
                proptest::prop_assert!(path.is_relative(), "{url:?} -> {path:?}");
                proptest::prop_assert!(!path.as_os_str().is_empty());
            }
            let _ = crate::worker::fetch::s3::split_url(&format!("s3://{tail}"), &separator);
        }
    }
}
