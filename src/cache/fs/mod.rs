//! The disk tier: results as plain files in `CACHE_DIR`, bounded in bytes, least recently used
//! out first. With no bucket it is the final store; with one, a tier in front of it.
//!
//! `CACHE_DIR/<key>` holds the body bytes exactly as served, so the directory can be browsed or
//! served by any static file server; `CACHE_DIR/.meta/<key>` holds its metadata (`meta`);
//! `CACHE_DIR/.tmp` files being written; `CACHE_DIR/.spool` results waiting for the bucket
//! (`spool`: charged against the cap like objects, never evicted); `CACHE_DIR/.lock` keeps a
//! second process out (it would sweep this one's temporary files and count the same bytes
//! against a second cap).
//!
//! - **Writes** go to `.tmp`, are fsynced, renamed into place and their directory fsynced:
//!   metadata first, body last, so the body appearing is the commit point. Replacing an
//!   object removes the old body first. At every instant, and so after a crash at any
//!   instant, a body on disk has its own metadata beside it; what an interrupted put leaves
//!   (temporary files, metadata alone) is swept at start-up (`scan`). While an object is
//!   being replaced (the renames, not the writing), reads of it miss.
//! - **The bound**: each object is charged its body rounded up to whole 4 KiB blocks plus one
//!   block for its metadata ([`charge`]), about what ext4 and xfs allocate, so the cap is
//!   what `du` sees (directories themselves aside). A put first takes least recently used
//!   objects out until its own fits, then writes: the directory stays within the cap.
//! - **Recency** is kept in the index (`index`, a read promotes) and on disk as the body's
//!   atime, read back at start-up. Not the mtime: static servers and tools read that
//!   (`Last-Modified`, nginx's `ETag`, rsync), and a hit must not change what they serve;
//!   atime means "last read" already. Most filesystems are mounted `relatime` or `noatime`,
//!   which update it rarely or never, so a read sets it itself, at most once per
//!   [`RECENCY_REFRESH`]: the order rebuilt at start-up is the one before to within that.
//! - **The index is the truth** while the store is open: [`Store::exists`] and a miss cost no
//!   syscall. Files someone else adds to the directory are seen at the next start; files
//!   someone else removes are misses (and leave the index) when read.
//! - **Reads stream** the open file in [`CHUNK`]-byte pieces with the length of that open file:
//!   an object evicted or replaced meanwhile is still read whole (Linux keeps an unlinked file
//!   readable while it is open).

mod index;
mod meta;
mod scan;
mod spool;
#[cfg(test)]
mod tests;

use std::fs::{File, FileTimes, OpenOptions, TryLockError};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use super::object::{Meta, Object, Reading, unix_secs};
use super::store::{PutMode, PutOutcome, Store, StoreError, Usage};
use index::Shared;
pub use spool::{Damage, SpoolFile};

/// `CACHE_DIR_MAX_BYTES`: the most the directory holds, 1 GiB unless set. A 50 KB result is
/// charged 56 KiB (see [`charge`]), so that is about 19 000 results: a day's working set for
/// most sites, while a volume of 2 GB or more keeps room for the filesystem's own overhead
/// and never fills up. On a bigger volume raise it to ~75% of the volume; below 8 KiB
/// nothing fits.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// How stale a body's atime may get before a read sets it: a hit on a hot object costs an
/// inode write at most once an hour, and the recency rebuilt at start-up is right to within it.
pub const RECENCY_REFRESH: Duration = Duration::from_secs(60 * 60);

/// The size of the pieces a body is read in: big enough that a 200 MB body takes few reads,
/// small enough that many readers at once hold little memory.
pub const CHUNK: usize = 64 * 1024;

/// What a file costs on disk, at least: a filesystem block.
const BLOCK: u64 = 4096;
const _: () = assert!(
    meta::MAX_LEN as u64 == BLOCK,
    "a metadata file is charged one block"
);

const META_DIR: &str = ".meta";
const TMP_DIR: &str = ".tmp";
const LOCK_FILE: &str = ".lock";
/// Threads a runtime that calls the disk tier keeps for its blocking file calls; more calls
/// wait for one. Tokio's default (512) let a soak run's proxy grow from 7 to 180 threads while
/// the bucket flapped; with this bound it stays at about 30.
pub const MAX_BLOCKING_THREADS: usize = 8;
/// How long [`FsStore::open`] waits for a lock that another holder is about to give up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// The bytes an object with a body of `len` bytes is charged against the cap: the body in
/// whole blocks, and one block for the metadata file.
pub fn charge(len: u64) -> u64 {
    len.div_ceil(BLOCK)
        .saturating_mul(BLOCK)
        .saturating_add(BLOCK)
}

pub struct FsStore {
    inner: Arc<Inner>,
}

/// Everything a blocking task needs: puts, deletes and the opening of reads run there whole,
/// so a caller that gives up on one cannot leave the index and the disk disagreeing.
struct Inner {
    root: PathBuf,
    max_bytes: u64,
    shared: Shared,
    /// Makes temporary names unique within this process (the lock keeps others out).
    next_tmp: AtomicU64,
    /// Spool files found at start-up, until the upload queue takes them.
    resumed: std::sync::Mutex<Vec<SpoolFile>>,
    /// Holds the directory's lock while the store lives.
    _lock: File,
}

impl FsStore {
    /// Opens (and creates) the disk tier at `root`, holding at most `max_bytes`: sweeps what
    /// a crash left, rebuilds the index of every object, and evicts down to `max_bytes` if the
    /// directory holds more (a lower cap than last time). Blocking: a walk of the directory.
    ///
    /// # Errors
    /// The directory cannot be created or read, another process has it open, or it holds
    /// files but is not a cache directory (this store removes files it does not know). The
    /// message names the path.
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> std::io::Result<FsStore> {
        let root = root.into();
        refuse_foreign(&root)?;
        for dir in [META_DIR, TMP_DIR, spool::SPOOL_DIR] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(|e| named("creating", &dir, e))?;
        }
        let lock = lock(&root)?;
        let scan = scan::scan(&root)?;
        let spooled = scan::spooled(&root)?;
        let inner = Inner {
            root,
            max_bytes,
            shared: Shared::new(),
            next_tmp: AtomicU64::new(0),
            resumed: std::sync::Mutex::new(Vec::new()),
            _lock: lock,
        };
        inner.shared.lock().bytes = spooled.files.iter().map(|file| file.charge).sum();
        let spooled_files = spooled.files.len();
        *inner.resumed.lock().unwrap_or_else(|e| e.into_inner()) = spooled.files;
        let evicted = inner.rebuild(scan.objects);
        let usage = inner.usage();
        tracing::info!(
            dir = %inner.root.display(),
            entries = usage.entries,
            bytes = usage.bytes,
            max_bytes,
            evicted,
            temporary_files_swept = scan.temps,
            orphans_removed = scan.orphans,
            spooled_uploads = spooled_files,
            damaged_spool_files_removed = spooled.damaged,
            "disk tier opened"
        );
        Ok(FsStore {
            inner: Arc::new(inner),
        })
    }

    /// What the tier holds (the same as [`Store::usage`], without the `Option`).
    pub fn usage(&self) -> Usage {
        self.inner.usage()
    }

    /// The spool files found when the store was opened (once: later calls get none).
    pub fn take_resumed(&self) -> Vec<SpoolFile> {
        std::mem::take(&mut *self.inner.resumed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes `object` to the spool for its upload to `key`, durably, charged against the cap
    /// (least recently used objects make room; spooled results never do).
    ///
    /// # Errors
    /// No room even with every object out (the cap is full of spooled results), or the
    /// directory cannot be written.
    pub async fn spool(
        &self,
        key: &str,
        object: &Object,
        replace: bool,
    ) -> Result<SpoolFile, StoreError> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        let object = object.clone();
        blocking(move || inner.spool(&key, &object, replace)).await
    }

    /// Reads a spooled result back, checked whole.
    ///
    /// # Errors
    /// The file is damaged ([`Damage::Corrupt`]: it must be removed, never uploaded) or
    /// cannot be read.
    pub async fn unspool(&self, file: &SpoolFile) -> Result<Object, Damage> {
        let file = file.clone();
        tokio::task::spawn_blocking(move || spool::read(&file))
            .await
            .map_err(|e| Damage::Io(std::io::Error::other(e)))?
    }

    /// Removes a spool file whose upload is over (stored, or never to be), and its charge.
    pub async fn remove_spooled(&self, file: SpoolFile) {
        let inner = self.inner.clone();
        let _ = blocking(move || {
            inner.remove_spooled(&file);
            Ok(())
        })
        .await;
    }
}

/// A directory that holds files but no `.meta` was never ours: opening it would remove every
/// file in it as a body without metadata.
fn refuse_foreign(root: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
        Err(e) => return Err(named("reading", root, e)),
    };
    if root.join(META_DIR).is_dir() {
        return Ok(());
    }
    for entry in entries {
        let entry = entry.map_err(|e| named("reading", root, e))?;
        // A volume's root has one before anything is written to it.
        if entry.file_name() != "lost+found" {
            return Err(std::io::Error::new(
                IoKind::DirectoryNotEmpty,
                format!(
                    "{} holds files but is not a cache directory (it has no {META_DIR}); the \
                     disk tier removes files it does not know, so give it an empty or \
                     dedicated directory",
                    root.display()
                ),
            ));
        }
    }
    Ok(())
}

fn lock(root: &Path) -> std::io::Result<File> {
    let path = root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| named("opening", &path, e))?;
    // A process that is still exiting (a restart on the same volume), or a child forked at
    // that moment with the descriptor not yet closed by its exec, holds the lock briefly.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut locked = file.try_lock();
    while matches!(locked, Err(TryLockError::WouldBlock)) && std::time::Instant::now() < deadline {
        std::thread::sleep(LOCK_RETRY);
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(std::io::Error::new(
                IoKind::ResourceBusy,
                format!(
                    "{} is in use by another process (it holds a lock on {}); two processes \
                     cannot share one disk tier",
                    root.display(),
                    path.display()
                ),
            ));
        }
        // Some network filesystems have no locks: go on, but say what is unchecked.
        Err(TryLockError::Error(e)) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "cannot lock the cache directory; make sure no other process uses it"
        ),
    }
    Ok(file)
}

/// An I/O error that names what was being done to which path (start-up errors).
fn named(what: &str, path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Names at the top of the directory that are never keys: ours, and a volume's `lost+found`.
fn reserved(name: &str) -> bool {
    name.starts_with('.') || name == "lost+found"
}

/// Keys are a configured prefix plus hex; refuse anything that could leave the root or land
/// on a reserved name.
fn safe_key(key: &str) -> bool {
    let mut parts = key.split('/');
    !key.is_empty()
        && !key.contains('\0')
        && parts
            .next()
            .is_some_and(|first| !first.is_empty() && !reserved(first))
        && parts.all(|p| !p.is_empty() && p != "." && p != "..")
}

fn unsafe_key(key: &str) -> StoreError {
    StoreError::permanent(format!("unsafe key {key:?}"), None)
}

/// A body opened for reading, with its metadata, checked to belong together.
struct Opened {
    meta: Meta,
    len: u64,
    file: File,
    path: PathBuf,
}

/// Why a metadata file gave no metadata.
enum MetaProblem {
    /// The file could not be read (permissions, I/O): an error, the object may be fine.
    Io(std::io::Error),
    /// Missing, truncated or garbled: the object is damaged.
    Damaged(String),
}

// === impl Inner ===

impl Inner {
    fn usage(&self) -> Usage {
        let index = self.shared.lock();
        Usage {
            bytes: index.bytes,
            entries: index.lru.len() as u64,
            evictions: index.evictions,
        }
    }

    fn paths(&self, key: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        if !safe_key(key) {
            return Err(unsafe_key(key));
        }
        Ok((self.root.join(key), self.root.join(META_DIR).join(key)))
    }

    /// Indexes what the scan found, least recently used first, and evicts down to the cap.
    /// Returns how many objects were evicted.
    fn rebuild(&self, mut objects: Vec<scan::Found>) -> usize {
        objects.sort_by_key(|found| found.used);
        {
            let mut index = self.shared.lock();
            for found in objects {
                let charge = charge(found.len);
                index.bytes = index.bytes.saturating_add(charge);
                index.insert(found.key, charge);
            }
        }
        let victims = self.shared.make_room(0, self.max_bytes);
        for victim in &victims {
            self.remove_files(victim.key());
        }
        victims.len()
    }

    /// Makes room for `charge` more bytes, evicting least recently used objects; `false`
    /// (and nothing reserved) when even that leaves the total over the cap, which only
    /// spooled results, never evicted, can cause.
    fn reserve(&self, charge: u64) -> bool {
        for victim in self.shared.make_room(charge, self.max_bytes) {
            self.remove_files(victim.key());
        }
        let mut index = self.shared.lock();
        if index.bytes > self.max_bytes && index.bytes > charge {
            index.release(charge);
            return false;
        }
        true
    }

    fn full(&self, key: &str) -> StoreError {
        StoreError::transient(format!(
            "{key}: no room in the disk tier of {} bytes: results waiting for the bucket fill it",
            self.max_bytes
        ))
    }

    fn spool(&self, key: &str, object: &Object, replace: bool) -> Result<SpoolFile, StoreError> {
        let bytes =
            spool::encode(key, object, replace).map_err(|e| StoreError::permanent(e, None))?;
        let charge = charge(bytes.len() as u64);
        if !self.reserve(charge) {
            return Err(self.full(key));
        }
        let path = spool::path_of(&self.root, key);
        let tmp = self.tmp_path();
        let written = write_synced(&tmp, &bytes)
            .map_err(|e| io_error("writing", &tmp, e))
            .and_then(|()| self.move_into_place(&tmp, &path));
        if let Err(e) = written {
            remove_quietly(&tmp);
            self.shared.lock().release(charge);
            return Err(e);
        }
        Ok(SpoolFile {
            key: key.to_owned(),
            replace,
            path,
            charge,
        })
    }

    fn remove_spooled(&self, file: &SpoolFile) {
        match std::fs::remove_file(&file.path) {
            Err(e) if e.kind() != IoKind::NotFound => {
                tracing::warn!(path = %file.path.display(), error = %e, "cannot remove a spool file");
            }
            _ => self.shared.lock().release(file.charge),
        }
    }

    fn put(&self, key: &str, object: &Object, mode: PutMode) -> Result<PutOutcome, StoreError> {
        let (body_path, meta_path) = self.paths(key)?;
        let meta = meta::encode(&object.meta, object.len())?;
        let charge = charge(object.len());
        if charge > self.max_bytes {
            return Err(StoreError::permanent(
                format!(
                    "{key}: {} bytes ({charge} on disk with the metadata) do not fit in the disk \
                     tier of {} bytes",
                    object.len(),
                    self.max_bytes
                ),
                Some("raise CACHE_DIR_MAX_BYTES to keep results this large"),
            ));
        }
        let _claim = self.shared.claim(key);
        if mode == PutMode::IfAbsent && self.shared.lock().lru.contains(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        if !self.reserve(charge) {
            return Err(self.full(key));
        }
        let tmp_meta = self.tmp_path();
        let tmp_body = self.tmp_path();
        let written =
            write_synced(&tmp_meta, &meta).and_then(|()| write_synced(&tmp_body, &object.body));
        if let Err(e) = written {
            remove_quietly(&tmp_meta);
            remove_quietly(&tmp_body);
            self.shared.lock().release(charge);
            return Err(io_error("writing", &self.root.join(TMP_DIR), e));
        }
        // Out of the index from here: readers miss the key until the new version is in.
        let old = self.shared.lock().lru.pop(key);
        let published = self.publish(old.is_some(), &tmp_meta, &meta_path, &tmp_body, &body_path);
        let mut index = self.shared.lock();
        index.release(old.map_or(0, |old| old.charge));
        match published {
            Ok(()) => {
                index.insert(key.to_owned(), charge);
                Ok(PutOutcome::Stored)
            }
            Err(e) => {
                index.release(charge);
                drop(index);
                remove_quietly(&tmp_meta);
                remove_quietly(&tmp_body);
                // The index no longer has the key: neither may the disk.
                self.remove_files(key);
                Err(e)
            }
        }
    }

    /// Moves a written object into place; `replacing`: an older version is there.
    fn publish(
        &self,
        replacing: bool,
        tmp_meta: &Path,
        meta_path: &Path,
        tmp_body: &Path,
        body_path: &Path,
    ) -> Result<(), StoreError> {
        if replacing {
            // The old body goes first, so the new metadata never sits beside it.
            match std::fs::remove_file(body_path) {
                Err(e) if e.kind() != IoKind::NotFound => {
                    return Err(io_error("removing", body_path, e));
                }
                _ => {}
            }
        }
        self.move_into_place(tmp_meta, meta_path)?;
        self.move_into_place(tmp_body, body_path)
    }

    /// Renames `tmp` to `target`, creating its directories the first time, and makes the
    /// rename durable before anything that depends on it (the body after its metadata).
    fn move_into_place(&self, tmp: &Path, target: &Path) -> Result<(), StoreError> {
        let parent = target.parent().expect("a key's path is below the root");
        let moved = match std::fs::rename(tmp, target) {
            Err(e) if e.kind() == IoKind::NotFound => self
                .create_dirs(parent)
                .and_then(|()| std::fs::rename(tmp, target)),
            moved => moved,
        };
        moved.map_err(|e| io_error("storing", target, e))?;
        sync_dir(parent).map_err(|e| io_error("syncing", parent, e))
    }

    /// Creates `dir` and the directories above it, each durably (a new key prefix).
    fn create_dirs(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut child = dir;
        while let Some(parent) = child.parent() {
            sync_dir(parent)?;
            if parent == self.root {
                break;
            }
            child = parent;
        }
        Ok(())
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(TMP_DIR)
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Removes an object's files, body first (the body is the commit point). The key must be
    /// out of the index and claimed.
    fn remove_files(&self, key: &str) {
        let body = self.root.join(key);
        let meta = self.root.join(META_DIR).join(key);
        for path in [body, meta] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != IoKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove from the disk tier");
            }
        }
    }

    /// Opens the object under `key` for reading: the body, then its metadata, then a check
    /// that no put, delete or eviction changed the key meanwhile.
    fn open_object(&self, key: &str) -> Result<Option<Opened>, StoreError> {
        let (body_path, meta_path) = self.paths(key)?;
        let Some(stamp) = self.shared.lock().lru.get(key).map(|entry| entry.stamp) else {
            return Ok(None);
        };
        let file = match File::open(&body_path) {
            Ok(file) => file,
            Err(e) if e.kind() == IoKind::NotFound => {
                self.drop_damaged(key, stamp, &body_path, "the body is gone");
                return Ok(None);
            }
            Err(e) => return Err(io_error("reading", &body_path, e)),
        };
        let stat = file
            .metadata()
            .map_err(|e| io_error("reading", &body_path, e))?;
        let meta = match read_meta(&meta_path, stat.len()) {
            Ok(meta) => meta,
            Err(MetaProblem::Io(e)) => return Err(io_error("reading", &meta_path, e)),
            Err(MetaProblem::Damaged(why)) => {
                self.drop_damaged(key, stamp, &meta_path, &why);
                return Ok(None);
            }
        };
        if self.shared.lock().current(key, stamp).is_none() {
            // Replaced, deleted or evicted while being opened: the two files may be of
            // different versions. A miss is the safe answer.
            return Ok(None);
        }
        refresh_recency(&file, &stat);
        Ok(Some(Opened {
            meta,
            len: stat.len(),
            file,
            path: body_path,
        }))
    }

    /// Removes the object under `key` if it is still version `stamp` (a put may have
    /// replaced the damaged version meanwhile, and then there is nothing to remove).
    fn drop_damaged(&self, key: &str, stamp: u64, path: &Path, why: &str) {
        let _claim = self.shared.claim(key);
        let removed = {
            let mut index = self.shared.lock();
            index.current(key, stamp).and_then(|_| index.remove(key))
        };
        if removed.is_some() {
            tracing::warn!(%key, path = %path.display(), why, "damaged object removed from the disk tier");
            self.remove_files(key);
        }
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let (body_path, meta_path) = self.paths(key)?;
        let _claim = self.shared.claim(key);
        // Asked of the disk too: a purge must also reach a file the index never saw.
        let on_disk = match std::fs::remove_file(&body_path) {
            Ok(()) => true,
            Err(e) if e.kind() == IoKind::NotFound => false,
            Err(e) => return Err(io_error("removing", &body_path, e)),
        };
        let indexed = self.shared.lock().remove(key).is_some();
        // Without its body the object is gone; metadata left behind is swept at start-up.
        remove_quietly(&meta_path);
        Ok(on_disk || indexed)
    }
}

/// Reads and checks the metadata file of a body of `body_len` bytes, reading no more than a
/// metadata file can hold.
fn read_meta(path: &Path, body_len: u64) -> Result<Meta, MetaProblem> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == IoKind::NotFound => {
            return Err(MetaProblem::Damaged("the metadata file is gone".into()));
        }
        Err(e) => return Err(MetaProblem::Io(e)),
    };
    let mut bytes = Vec::new();
    (&file)
        .take(meta::MAX_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(MetaProblem::Io)?;
    let written_at = || {
        file.metadata()
            .and_then(|stat| stat.modified())
            .map_or(0, unix_secs)
    };
    meta::decode(&bytes, body_len, written_at)
        .map_err(|unreadable| MetaProblem::Damaged(format!("metadata: {}", unreadable.0)))
}

/// Records a read in the body's atime if the last record is older than [`RECENCY_REFRESH`].
/// Best effort: a file owned by someone else keeps its time.
fn refresh_recency(file: &File, stat: &std::fs::Metadata) {
    let now = SystemTime::now();
    if let Ok(at) = stat.accessed()
        && now
            .duration_since(at)
            .is_ok_and(|age| age >= RECENCY_REFRESH)
    {
        let _ = file.set_times(FileTimes::new().set_accessed(now));
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
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

/// Runs `f` on the blocking pool. It runs to the end even if the caller stops waiting.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::transient(format!("disk tier task failed: {e}")))?
}

#[async_trait::async_trait]
impl Store for FsStore {
    fn describe(&self) -> String {
        format!(
            "local directory {} (up to {} bytes)",
            self.inner.root.display(),
            self.inner.max_bytes
        )
    }

    fn usage(&self) -> Option<Usage> {
        Some(self.inner.usage())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        if !safe_key(key) {
            return Err(unsafe_key(key));
        }
        Ok(self.inner.shared.lock().lru.contains(key))
    }

    async fn put(
        &self,
        key: &str,
        object: &Object,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        // A cheap copy: the body is shared, not copied.
        let object = object.clone();
        blocking(move || inner.put(&key, &object, mode)).await
    }

    async fn read(&self, key: &str) -> Result<Option<Reading>, StoreError> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        let Some(opened) = blocking(move || inner.open_object(&key)).await? else {
            return Ok(None);
        };
        let Opened {
            meta,
            len,
            file,
            path,
        } = opened;
        let reader = tokio::fs::File::from_std(file).take(len);
        let body = ReaderStream::with_capacity(reader, CHUNK)
            .map_err(move |e| StoreError::transient(format!("reading {}: {e}", path.display())));
        Ok(Some(Reading {
            meta,
            len,
            body: Box::pin(body),
        }))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        blocking(move || inner.delete(&key)).await
    }
}
