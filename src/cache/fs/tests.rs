//! The disk tier against real files in a temporary directory.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::*;

fn object(body: impl Into<Bytes>) -> Object {
    Object {
        body: body.into(),
        meta: Meta {
            content_type: "image/png".into(),
            cache_control: Some("max-age=60, public".into()),
            stored_at: 1_700_000_000,
            content_disposition: None,
        },
    }
}

/// `len` bytes that differ from one offset to the next, so a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

async fn read(store: &FsStore, key: &str) -> Option<Object> {
    let reading = store.read(key).await.unwrap()?;
    let chunks: Vec<Bytes> = reading.body.try_collect().await.unwrap();
    let body: Bytes = chunks.concat().into();
    assert_eq!(body.len() as u64, reading.len, "{key}: announced length");
    Some(Object {
        meta: reading.meta,
        body,
    })
}

async fn put(store: &FsStore, key: &str, object: &Object) {
    let outcome = store.put(key, object, PutMode::Overwrite).await.unwrap();
    assert_eq!(outcome, PutOutcome::Stored, "{key}");
}

/// The apparent size of every file under `dir`: what the cap must hold.
fn bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                total += entry.metadata().unwrap().len();
            }
        }
    }
    total
}

fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(TMP_DIR)).unwrap().count()
}

fn set_used(path: &Path, at: SystemTime) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_times(FileTimes::new().set_accessed(at)).unwrap();
}

fn used(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().accessed().unwrap()
}

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

#[tokio::test]
async fn round_trips_body_and_metadata_under_a_prefixed_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert!(!store.exists("thumbs/abc").await.unwrap());
    assert!(store.read("thumbs/abc").await.unwrap().is_none());
    put(&store, "thumbs/abc", &object("png")).await;
    assert!(store.exists("thumbs/abc").await.unwrap());
    // The body file is the served bytes, nothing more: a static server can serve it.
    assert_eq!(
        std::fs::read(dir.path().join("thumbs/abc")).unwrap(),
        b"png"
    );
    assert_eq!(read(&store, "thumbs/abc").await, Some(object("png")));
    assert_eq!(tmp_files(dir.path()), 0);
    assert_eq!(
        store.usage(),
        Usage {
            bytes: charge(3),
            entries: 1,
            evictions: 0
        }
    );
}

#[tokio::test]
async fn if_absent_keeps_the_first_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    store
        .put("k", &object("first"), PutMode::IfAbsent)
        .await
        .unwrap();
    let second = store
        .put("k", &object("second"), PutMode::IfAbsent)
        .await
        .unwrap();
    assert_eq!(second, PutOutcome::AlreadyExists);
    assert_eq!(read(&store, "k").await.unwrap().body, "first");
    assert_eq!(tmp_files(dir.path()), 0);
    // Also after a restart: the rebuilt index knows the key.
    drop(store);
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    let third = store
        .put("k", &object("third"), PutMode::IfAbsent)
        .await
        .unwrap();
    assert_eq!(third, PutOutcome::AlreadyExists);
    assert_eq!(read(&store, "k").await.unwrap().body, "first");
}

#[tokio::test]
async fn overwrite_replaces_the_object_and_its_charge() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    put(&store, "k", &object(pattern(10_000, 1))).await;
    let mut newer = object(pattern(20_000, 2));
    newer.meta.stored_at += 60;
    put(&store, "k", &newer).await;
    assert_eq!(read(&store, "k").await, Some(newer));
    assert_eq!(store.usage().entries, 1);
    assert_eq!(store.usage().bytes, charge(20_000));
}

#[tokio::test]
async fn keys_cannot_leave_the_root_or_use_reserved_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("root"), DEFAULT_MAX_BYTES).unwrap();
    for key in [
        "../escape",
        "/abs",
        "a/../../b",
        ".meta/x",
        ".tmp/x",
        ".lock",
        "lost+found/x",
        "a//b",
        "a\0b",
        "",
    ] {
        let err = store
            .put(key, &object("x"), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{key}");
        assert!(store.read(key).await.is_err(), "{key}");
    }
    assert!(!dir.path().join("escape").exists());
    assert_eq!(store.usage().entries, 0);
}

/// The cap holds after every put, and room is made from the least recently used objects,
/// a read counting as a use.
#[tokio::test]
async fn the_cap_holds_and_the_least_recently_read_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let max = 3 * charge(10_000);
    let store = FsStore::open(dir.path(), max).unwrap();
    for key in ["a", "b", "c"] {
        put(&store, key, &object(pattern(10_000, 0))).await;
    }
    assert!(read(&store, "a").await.is_some());
    put(&store, "d", &object(pattern(10_000, 0))).await;
    assert!(!store.exists("b").await.unwrap());
    assert!(store.read("b").await.unwrap().is_none());
    assert!(!dir.path().join("b").exists());
    assert!(!dir.path().join(META_DIR).join("b").exists());
    for key in ["a", "c", "d"] {
        assert!(store.exists(key).await.unwrap(), "{key}");
    }
    put(&store, "e", &object(pattern(10_000, 0))).await;
    assert!(!store.exists("c").await.unwrap());
    assert!(store.exists("a").await.unwrap());
    assert_eq!(
        store.usage(),
        Usage {
            bytes: max,
            entries: 3,
            evictions: 2
        }
    );
    assert!(bytes_on_disk(dir.path()) <= max);
}

#[tokio::test]
async fn many_puts_of_mixed_sizes_never_exceed_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let max = 256 * 1024;
    let store = FsStore::open(dir.path(), max).unwrap();
    for i in 0..60usize {
        let len = (i * 7919) % 60_000 + 1;
        put(&store, &format!("p/{i}"), &object(pattern(len, i as u8))).await;
        let usage = store.usage();
        assert!(usage.bytes <= max, "after {i}: {usage:?}");
        assert!(bytes_on_disk(dir.path()) <= max, "after {i}");
        // The newest object is always kept.
        assert_eq!(
            read(&store, &format!("p/{i}")).await.unwrap().body.len(),
            len
        );
    }
    assert!(store.usage().evictions > 0);
}

#[tokio::test]
async fn an_object_bigger_than_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let max = charge(10_000);
    let store = FsStore::open(dir.path(), max).unwrap();
    put(&store, "small", &object(pattern(5_000, 0))).await;
    let err = store
        .put("big", &object(pattern(20_000, 0)), PutMode::Overwrite)
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(err.message.contains("big"), "{}", err.message);
    assert!(err.hint.unwrap().contains("CACHE_DIR_MAX_BYTES"));
    assert!(!dir.path().join("big").exists());
    assert_eq!(tmp_files(dir.path()), 0);
    // Refusing it made no room for it either.
    assert!(store.exists("small").await.unwrap());
    assert_eq!(store.usage().evictions, 0);
}

/// A restart finds every object (same bytes, same entries) and keeps the order of use:
/// the object read last survives the next eviction, though it was written first.
#[tokio::test]
async fn a_restart_rebuilds_the_index_in_recency_order() {
    let dir = tempfile::tempdir().unwrap();
    let max = 3 * charge(10_000);
    let store = FsStore::open(dir.path(), max).unwrap();
    for (key, secs) in [("p/a", 5 * 3600), ("p/b", 4 * 3600), ("c", 3 * 3600)] {
        put(&store, key, &object(pattern(10_000, 0))).await;
        set_used(&dir.path().join(key), ago(secs));
    }
    assert!(read(&store, "p/a").await.is_some());
    let before = store.usage();
    drop(store);

    let store = FsStore::open(dir.path(), max).unwrap();
    assert_eq!(
        store.usage(),
        Usage {
            evictions: 0,
            ..before
        }
    );
    put(&store, "d", &object(pattern(10_000, 0))).await;
    assert!(!store.exists("p/b").await.unwrap());
    assert!(store.exists("p/a").await.unwrap());
    assert!(store.exists("c").await.unwrap());
    drop(store);

    // A lower cap than last time: evicted at start-up, least recent first.
    let store = FsStore::open(dir.path(), 2 * charge(10_000)).unwrap();
    assert_eq!(store.usage().entries, 2);
    assert_eq!(store.usage().evictions, 1);
    assert!(!store.exists("c").await.unwrap());
    assert!(!dir.path().join("c").exists());
    assert_eq!(read(&store, "p/a").await.unwrap().body.len(), 10_000);
}

/// A read records itself in the atime when the last record is older than
/// `RECENCY_REFRESH`, and leaves younger records alone (no inode write per hit). Tested
/// without reading: `relatime` would update the atime of a just-changed file by itself.
#[test]
fn recency_is_recorded_at_most_once_per_refresh_period() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body");
    std::fs::write(&path, "x").unwrap();
    let old = ago(RECENCY_REFRESH.as_secs() + 60);
    set_used(&path, old);
    let file = File::open(&path).unwrap();
    refresh_recency(&file, &file.metadata().unwrap());
    assert!(used(&path) > ago(60), "an old record is refreshed");

    let recent = ago(RECENCY_REFRESH.as_secs() - 60);
    set_used(&path, recent);
    refresh_recency(&file, &file.metadata().unwrap());
    assert_eq!(used(&path), recent, "a recent record stays");
}

/// What a `kill -9` mid-put can leave (temporary files; metadata whose body never appeared)
/// and a crash mid-removal (a body without metadata) is gone after a restart; whole objects
/// and files that are not ours stay.
#[tokio::test]
async fn open_sweeps_temporaries_and_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    put(&store, "p/keep", &object("kept")).await;
    drop(store);
    let root = dir.path();
    std::fs::write(root.join(TMP_DIR).join("123-0"), "half a bo").unwrap();
    std::fs::create_dir_all(root.join(META_DIR).join("p")).unwrap();
    std::fs::write(root.join(META_DIR).join("p/never-committed"), "{}").unwrap();
    std::fs::write(root.join("p/no-metadata"), "body").unwrap();
    std::fs::create_dir(root.join("lost+found")).unwrap();
    std::fs::write(root.join("lost+found/#123"), "fsck's").unwrap();

    let store = FsStore::open(root, DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(tmp_files(root), 0);
    assert!(!root.join(META_DIR).join("p/never-committed").exists());
    assert!(!root.join("p/no-metadata").exists());
    assert!(root.join("lost+found/#123").exists());
    assert_eq!(store.usage().entries, 1);
    assert!(store.read("p/never-committed").await.unwrap().is_none());
    assert_eq!(read(&store, "p/keep").await.unwrap().body, "kept");
}

/// A truncated, garbled or mismatched metadata file makes its object a miss, never an
/// error, and the object is removed.
#[tokio::test]
async fn damaged_metadata_is_a_miss_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    let good = meta::encode(&object("").meta, 4).unwrap();
    let damaged: [&[u8]; 4] = [
        &good[..good.len() / 2],
        b"\x00\x01garbage",
        b"",
        // Whole, but written for another body.
        &meta::encode(&object("").meta, 5).unwrap(),
    ];
    for (i, bytes) in damaged.into_iter().enumerate() {
        put(&store, "k", &object("body")).await;
        std::fs::write(dir.path().join(META_DIR).join("k"), bytes).unwrap();
        assert!(store.read("k").await.unwrap().is_none(), "case {i}");
        assert!(!store.exists("k").await.unwrap(), "case {i}");
        assert!(!dir.path().join("k").exists(), "case {i}");
        assert!(!dir.path().join(META_DIR).join("k").exists(), "case {i}");
        assert_eq!(store.usage().bytes, 0, "case {i}");
    }
}

/// The index answers `exists` without asking the disk; a read that finds the body gone is a
/// miss and corrects the index.
#[tokio::test]
async fn a_body_removed_behind_our_back_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    put(&store, "k", &object("body")).await;
    std::fs::remove_file(dir.path().join("k")).unwrap();
    assert!(store.exists("k").await.unwrap());
    assert!(store.read("k").await.unwrap().is_none());
    assert!(!store.exists("k").await.unwrap());
    assert!(!dir.path().join(META_DIR).join("k").exists());
    assert_eq!(store.usage().entries, 0);
}

/// A reader that has the body open reads it whole, in pieces of at most `CHUNK` bytes, even
/// when a put evicts it midway.
#[tokio::test]
async fn a_body_evicted_while_being_read_is_still_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let len = 300_000;
    let store = FsStore::open(dir.path(), charge(len as u64)).unwrap();
    let body = pattern(len, 7);
    put(&store, "a", &object(body.clone())).await;
    let mut reading = store.read("a").await.unwrap().unwrap();
    assert_eq!(reading.len, len as u64);
    let first = reading.body.next().await.unwrap().unwrap();
    put(&store, "b", &object(pattern(len, 8))).await;
    assert!(!dir.path().join("a").exists());
    assert!(!store.exists("a").await.unwrap());
    let mut chunks = vec![first];
    while let Some(chunk) = reading.body.next().await {
        chunks.push(chunk.unwrap());
    }
    assert!(chunks.len() >= len / CHUNK, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= CHUNK));
    assert_eq!(chunks.concat(), body);
}

fn version(i: usize) -> Object {
    Object {
        body: pattern(5_000 * (i + 1), i as u8),
        meta: Meta {
            content_type: format!("image/v{i}"),
            cache_control: None,
            stored_at: i as u64,
            content_disposition: None,
        },
    }
}

/// Which `version` `object` is; fails on a body of one version with another's metadata.
fn check(object: &Object) -> usize {
    let i: usize = object.meta.content_type["image/v".len()..].parse().unwrap();
    assert_eq!(object, &version(i), "a mixed object");
    i
}

/// Puts of one key at once leave one of them whole (body and metadata of the same put) and
/// the total right; readers meanwhile see whole versions or nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_one_key_leave_one_whole_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let writer = store.clone();
        tasks.spawn(async move {
            let object = version(i);
            writer.put("k", &object, PutMode::Overwrite).await.unwrap();
        });
        let reader = store.clone();
        tasks.spawn(async move {
            for _ in 0..20 {
                if let Some(object) = read(&reader, "k").await {
                    check(&object);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let winner = check(&read(&store, "k").await.unwrap());
    assert_eq!(
        store.usage(),
        Usage {
            bytes: charge(version(winner).len()),
            entries: 1,
            evictions: 0
        }
    );
    assert_eq!(tmp_files(dir.path()), 0);
}

#[tokio::test]
async fn delete_removes_both_files_and_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    put(&store, "p/k", &object("body")).await;
    assert!(store.delete("p/k").await.unwrap());
    assert!(!dir.path().join("p/k").exists());
    assert!(!dir.path().join(META_DIR).join("p/k").exists());
    assert!(!store.exists("p/k").await.unwrap());
    assert!(store.read("p/k").await.unwrap().is_none());
    assert_eq!(store.usage().bytes, 0);
    assert!(!store.delete("p/k").await.unwrap());
}

#[tokio::test]
async fn metadata_of_earlier_releases_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
    std::fs::write(dir.path().join("k"), "body").unwrap();
    std::fs::write(
        dir.path().join(META_DIR).join("k"),
        "image/png\nmax-age=60, public\n1700000000\n",
    )
    .unwrap();
    let store = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(read(&store, "k").await, Some(object("body")));
}

/// Two processes on one directory would sweep each other's writes: the second is refused
/// until the first is gone.
#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
    let err = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).err().unwrap();
    assert_eq!(err.kind(), IoKind::ResourceBusy);
    assert!(err.to_string().contains(LOCK_FILE), "{err}");
    drop(first);
    FsStore::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
}

/// A directory with someone else's files is never swept as a cache.
#[test]
fn a_directory_of_other_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = FsStore::open(dir.path(), DEFAULT_MAX_BYTES).err().unwrap();
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert!(dir.path().join("notes.txt").exists());
    // A fresh volume (only lost+found) is fine.
    let volume = tempfile::tempdir().unwrap();
    std::fs::create_dir(volume.path().join("lost+found")).unwrap();
    FsStore::open(volume.path(), DEFAULT_MAX_BYTES).unwrap();
}

/// The cap of the store `kill -9` rounds use: small, so puts evict too.
const KILL_MAX_BYTES: u64 = 1 << 20;
const KILL_DIR_VAR: &str = "IMGPROXY_CACHE_FS_TEST_KILL_DIR";

/// Object `i` of the `kill -9` rounds: its metadata says which, so any mix shows.
fn numbered(i: usize) -> Object {
    Object {
        body: pattern(1_000 + (i * 7919) % 200_000, i as u8),
        meta: Meta {
            content_type: format!("image/n{i}"),
            cache_control: None,
            stored_at: i as u64,
            content_disposition: None,
        },
    }
}

/// The child side of `a_kill_9_at_any_moment_leaves_no_partial_object`: puts numbered
/// objects over 40 keys (so also replacing and evicting), printing each number once stored,
/// until it is killed.
#[tokio::test]
#[ignore = "run in a child process by a_kill_9_at_any_moment_leaves_no_partial_object"]
async fn child_putting_until_killed() {
    use std::io::Write as _;
    let Some(dir) = std::env::var_os(KILL_DIR_VAR) else {
        return;
    };
    let store = FsStore::open(dir, KILL_MAX_BYTES).unwrap();
    for i in 0.. {
        put(&store, &format!("p/{}", i % 40), &numbered(i)).await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "stored {i}").unwrap();
        out.flush().unwrap();
    }
}

/// `kill -9` of a process in the middle of its puts, four times at different points: every
/// object the next start finds reads back whole (its body and its own metadata), nothing is
/// left over, and the cap holds.
#[tokio::test]
async fn a_kill_9_at_any_moment_leaves_no_partial_object() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cache::fs::tests::child_putting_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_DIR_VAR, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // Killed while it is busy with the put after the one it just reported.
        let stored = stdout
            .lines()
            .map(Result::unwrap)
            .filter(|line| line.starts_with("stored "))
            .take(5 + round * 17)
            .count();
        assert_eq!(stored, 5 + round * 17, "the child stopped by itself");
        child.kill().unwrap();
        child.wait().unwrap();

        let store = FsStore::open(dir.path(), KILL_MAX_BYTES).unwrap();
        assert_eq!(tmp_files(dir.path()), 0);
        assert!(bytes_on_disk(dir.path()) <= KILL_MAX_BYTES);
        let mut found = 0;
        for key in 0..40 {
            if let Some(object) = read(&store, &format!("p/{key}")).await {
                let i: usize = object.meta.content_type["image/n".len()..].parse().unwrap();
                assert_eq!(i % 40, key, "round {round}: object {i} under p/{key}");
                assert_eq!(
                    object,
                    numbered(i),
                    "round {round}: a mixed or partial object"
                );
                found += 1;
            }
        }
        assert_eq!(found as u64, store.usage().entries, "round {round}");
        assert!(found > 0, "round {round}");
    }
}

/// Spooled results take their room from the cap like objects, push least recently used
/// objects out, and are never pushed out themselves: once they fill the cap, new spool files
/// and new objects are refused (the caller counts it) instead of going over.
#[tokio::test]
async fn spooled_results_are_never_evicted_and_a_full_spool_refuses_more() {
    let dir = tempfile::tempdir().unwrap();
    // Room for four 8 KiB bodies with their header or metadata block.
    let store = FsStore::open(dir.path(), 4 * charge(8 * 1024 + 200)).unwrap();
    put(&store, "old", &object(pattern(8 * 1024, 1))).await;
    let mut spooled = Vec::new();
    for i in 0..4 {
        let key = format!("s{i}");
        let file = store
            .spool(&key, &object(pattern(8 * 1024, i)), false)
            .await;
        spooled.push(file.unwrap_or_else(|e| panic!("{key}: {e}")));
    }
    assert!(read(&store, "old").await.is_none(), "the object made room");
    let refused = store
        .spool("s4", &object(pattern(8 * 1024, 9)), false)
        .await;
    assert!(refused.is_err_and(|e| e.is_transient()));
    let refused = store
        .put("new", &object(pattern(8 * 1024, 9)), PutMode::Overwrite)
        .await;
    assert!(refused.is_err());
    assert!(bytes_on_disk(dir.path()) <= store.inner.max_bytes + BLOCK);
    for (i, file) in spooled.iter().enumerate() {
        let back = store.unspool(file).await.unwrap();
        assert_eq!(back.body, pattern(8 * 1024, i as u8));
    }
    // Once one is uploaded and removed, there is room again.
    store.remove_spooled(spooled.remove(0)).await;
    put(&store, "new", &object(pattern(8 * 1024, 9))).await;
    drop(store);
    // A restart finds the three still waiting, and charges them.
    let store = FsStore::open(dir.path(), 4 * charge(8 * 1024 + 200)).unwrap();
    let mut resumed: Vec<String> = store.take_resumed().into_iter().map(|f| f.key).collect();
    resumed.sort();
    assert_eq!(resumed, ["s1", "s2", "s3"]);
    assert!(read(&store, "new").await.is_some());
}
