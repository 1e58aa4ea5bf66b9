//! `local:///path` sources: files under `IMGPROXY_LOCAL_FILESYSTEM_ROOT`, never outside it.
//!
//! The path is taken literally, as imgproxy does (`%2e%2e` is a file named `%2e%2e`, not a
//! parent directory); `..` is resolved in the text, as imgproxy's `http.Dir` does, and one that
//! would climb out of the root is refused. The file is then opened one component at a time,
//! each relative to the directory before it (`openat`) and with `O_NOFOLLOW`, starting from
//! the root: no symlink is followed, not even one pointing inside the root (imgproxy follows
//! every symlink, even out of the root). Nothing on disk can change where the path leads
//! between a check and the open, because there is no separate check: every step is the open.
//!
//! The last component is opened with `O_NONBLOCK` too and `fstat`ed before a byte is read: a
//! FIFO would otherwise block the opening thread until a writer came, and a device is not an
//! image. Only a regular file is read.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

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
    /// [`FetchError::NotFound`] for anything missing, outside the root, reached through a
    /// symlink or not a regular file; [`FetchError::TooBig`] past the size cap.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let relative = relative_path(url, &self.query_separator)
            .ok_or_else(|| not_found(url, "not a local:/// path inside the root"))?;
        let (root, max_size) = (self.root.clone(), self.max_size);
        // One blocking task for open, fstat and read, as tokio::fs would use per call.
        let read = tokio::task::spawn_blocking(move || read_beneath(&root, &relative, max_size))
            .await
            .map_err(|e| not_found(url, &format!("the read task failed: {e}")))?;
        match read {
            Ok(bytes) => Ok(Fetched {
                bytes: Bytes::from(bytes),
                content_type: None,
            }),
            Err(Refusal::TooBig) => Err(FetchError::TooBig(self.max_size)),
            Err(Refusal::Symlink) => {
                tracing::warn!(%url, "local source through a symlink or a non-directory refused");
                Err(not_found(
                    url,
                    "a component is a symlink (never followed) or not a directory",
                ))
            }
            Err(Refusal::NotAFile) => Err(not_found(url, "not a regular file")),
            Err(Refusal::Io(e)) => Err(not_found(url, &e.to_string())),
        }
    }
}

/// Why a file under the root was not read.
#[derive(Debug)]
enum Refusal {
    /// A component is a symlink (`ELOOP` from `O_NOFOLLOW`), or a directory component is
    /// not a directory (`ENOTDIR`).
    Symlink,
    NotAFile,
    TooBig,
    Io(std::io::Error),
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            // O_NOFOLLOW on a symlink; with O_DIRECTORY some kernels say "not a directory".
            Some(libc::ELOOP | libc::ENOTDIR) => Refusal::Symlink,
            _ => Refusal::Io(e),
        }
    }
}

/// Opens `relative` (clean: only normal components) under `root` without following any
/// symlink, checks it is a regular file of at most `max_size` bytes, and reads it.
fn read_beneath(root: &Path, relative: &Path, max_size: u64) -> Result<Vec<u8>, Refusal> {
    let mut dir: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)?
        .into();
    let mut parts: Vec<&OsStr> = relative.iter().collect();
    let name = parts.pop().ok_or(Refusal::NotAFile)?;
    for part in parts {
        dir = open_at(dir.as_fd(), part, libc::O_DIRECTORY)?;
    }
    let file = File::from(open_at(
        dir.as_fd(),
        name,
        libc::O_NONBLOCK | libc::O_NOCTTY,
    )?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Refusal::NotAFile);
    }
    if meta.len() > max_size {
        return Err(Refusal::TooBig);
    }
    // The file may grow between fstat and read: the cap is enforced on what is read, too.
    let mut buf = Vec::with_capacity(initial_capacity(Some(meta.len()), max_size));
    let mut reader = file.take(max_size + 1);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        append_capped(&mut buf, &chunk[..n], max_size).map_err(|_| Refusal::TooBig)?;
    }
    Ok(buf)
}

/// `openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | extra)`: one path component,
/// relative to `dir`, never through a symlink.
#[allow(unsafe_code)] // FFI: see the SAFETY comments inside
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, extra: libc::c_int) -> std::io::Result<OwnedFd> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra;
    // SAFETY: `dir` is an open descriptor borrowed for the call and `name` a NUL-terminated
    // string that outlives it; the returned descriptor is new and owned by nobody else.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path of a `local://` URL relative to the root: the authority is ignored (as imgproxy
/// does), the query separator cuts, leading `/`s are dropped so the join can't restart at `/`,
/// `.` and `..` are resolved in the text. `None` for an empty path, one with a NUL byte, or
/// one whose `..` would climb out of the root. The allow-list matches this same path.
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
    if path.contains('\0') {
        return None;
    }
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                if !clean.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
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
        assert_eq!(p("local:///a/./b/../c.png").as_deref(), Some("a/c.png"));
        assert_eq!(p("local:///a/../../c.png"), None);
        assert_eq!(p("local:///.."), None);
        assert_eq!(p("local:///a/.."), None);
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
    async fn traversal_and_every_symlink_are_refused() {
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
        std::os::unix::fs::symlink(root.join("sub"), root.join("subalias")).unwrap();
        let ok = local.fetch("local:///sub/in.png").await.unwrap();
        assert_eq!(&ok.bytes[..], b"inside");
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
            // Symlinks are never followed, even those that stay inside the root.
            "local:///alias.png",
            "local:///subalias/in.png",
            // A file is not a directory.
            "local:///sub/in.png/x",
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
                proptest::prop_assert!(
                    path.components().all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{url:?} -> {path:?}"
                );
            }
            let _ = crate::worker::fetch::s3::split_url(&format!("s3://{tail}"), &separator);
        }
    }
}
