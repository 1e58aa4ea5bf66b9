//! Start-up: what the directory holds, found in one walk of each tree, and what a crash left.
//!
//! A crash (or `kill -9`) mid-put leaves at most temporary files, or a metadata file whose
//! body never appeared; a crash mid-removal, a body whose metadata is gone. All three are
//! removed here, before anything reads, so the index only ever holds whole objects. Only
//! names are read in the metadata tree and one `stat` is made per body, which keeps a start
//! with 100 000 objects to well under a second on a warm disk.

use std::collections::HashSet;
use std::fs::DirEntry;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::spool::{self, SPOOL_DIR, SpoolFile};
use super::{META_DIR, TMP_DIR, charge, named, reserved};

/// A whole object found on disk.
pub(super) struct Found {
    pub key: String,
    pub len: u64,
    /// When it was last used: the body's atime (see `super::RECENCY_REFRESH`).
    pub used: SystemTime,
}

pub(super) struct Scan {
    pub objects: Vec<Found>,
    /// Temporary files of puts that never finished.
    pub temps: usize,
    /// Bodies without metadata and metadata without a body.
    pub orphans: usize,
}

/// Walks `root`, removing what a crash left behind.
///
/// # Errors
/// A directory cannot be read or a leftover cannot be removed; the message names the path.
pub(super) fn scan(root: &Path) -> std::io::Result<Scan> {
    let temps = sweep(&root.join(TMP_DIR))?;
    let mut metas = HashSet::new();
    walk(&root.join(META_DIR), &mut |key, _| {
        metas.insert(key);
        Ok(())
    })?;
    let mut objects = Vec::with_capacity(metas.len());
    let mut orphans = 0;
    walk(root, &mut |key, entry| {
        let path = entry.path();
        if metas.remove(&key) {
            let stat = entry.metadata().map_err(|e| named("reading", &path, e))?;
            let used = stat
                .accessed()
                .or_else(|_| stat.modified())
                .map_err(|e| named("reading the times of", &path, e))?;
            objects.push(Found {
                key,
                len: stat.len(),
                used,
            });
        } else {
            remove(&path)?;
            orphans += 1;
        }
        Ok(())
    })?;
    for key in metas {
        remove(&root.join(META_DIR).join(key))?;
        orphans += 1;
    }
    Ok(Scan {
        objects,
        temps,
        orphans,
    })
}

/// What the spool holds: its files, oldest first, each with its header read.
pub(super) struct Spooled {
    pub files: Vec<SpoolFile>,
    /// Files whose header could not be read: removed.
    pub damaged: usize,
}

/// Reads the header of every spool file; removes those that have none.
pub(super) fn spooled(root: &Path) -> std::io::Result<Spooled> {
    let dir = root.join(SPOOL_DIR);
    let mut found = Vec::new();
    let mut damaged = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| named("reading", &dir, e))? {
        let entry = entry.map_err(|e| named("reading", &dir, e))?;
        let path = entry.path();
        let stat = entry.metadata().map_err(|e| named("reading", &path, e))?;
        match spool::peek(&path, charge(stat.len())) {
            Ok(file) => found.push((stat.modified().unwrap_or(SystemTime::UNIX_EPOCH), file)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "damaged spool file removed");
                remove(&path)?;
                damaged += 1;
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    Ok(Spooled {
        files: found.into_iter().map(|(_, file)| file).collect(),
        damaged,
    })
}

/// Removes every file in `dir` (puts write their temporary files there and nowhere else).
fn sweep(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| named("reading", dir, e))? {
        let entry = entry.map_err(|e| named("reading", dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| named("removing", &path, e))?;
        } else {
            remove(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Calls `found(key, entry)` for every regular file under `top`, `key` being its path below
/// `top` with `/` separators. Skips symbolic links and names that are not UTF-8 (never ours),
/// and at the top the reserved names (our own `.meta`, `.tmp`, `.lock`, and `lost+found`).
fn walk(
    top: &Path,
    found: &mut dyn FnMut(String, &DirEntry) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut dirs: Vec<(PathBuf, String)> = vec![(top.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed since it was listed (it can only be ours: a prefix emptied by hand).
            Err(e) if e.kind() == ErrorKind::NotFound && !prefix.is_empty() => continue,
            Err(e) => return Err(named("reading", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| named("reading", &dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if prefix.is_empty() && reserved(&name) {
                continue;
            }
            let key = format!("{prefix}{name}");
            let kind = entry
                .file_type()
                .map_err(|e| named("reading", &entry.path(), e))?;
            if kind.is_dir() {
                dirs.push((entry.path(), format!("{key}/")));
            } else if kind.is_file() {
                found(key, &entry)?;
            }
        }
    }
    Ok(())
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(named("removing", path, e)),
        _ => Ok(()),
    }
}
