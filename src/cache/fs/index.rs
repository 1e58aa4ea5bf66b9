//! The disk tier's index: which objects are on disk, what they cost, in what order they were
//! last used, and which keys are being changed on disk right now.
//!
//! One `std::sync::Mutex` guards it, held for map updates only: every file operation happens
//! outside it. Changes to one key's files (put, delete, eviction, removal of a bad object) are
//! serialised by *claiming* the key; reads claim nothing, they check after opening that the
//! object they opened is still the one the index holds (its `stamp`).

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

/// One object on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// Bytes charged against the cap (see `super::charge`).
    pub charge: u64,
    /// Unique per stored version: a reader that opened version `stamp` and finds another one
    /// in the index afterwards may have read a body and metadata of different versions.
    pub stamp: u64,
}

pub(super) struct Index {
    /// Least recently used first out; a read promotes.
    pub lru: LruCache<String, Entry>,
    /// Bytes charged: objects in `lru`, plus room reserved by puts still writing.
    pub bytes: u64,
    /// Objects removed to make room, since the store was opened.
    pub evictions: u64,
    /// Keys whose files someone is changing; others who want to change them wait.
    busy: HashSet<String>,
    next_stamp: u64,
}

impl Index {
    /// Adds (or replaces) `key` as the most recently used object. Its bytes must already be
    /// counted in [`Index::bytes`].
    pub fn insert(&mut self, key: String, charge: u64) -> u64 {
        self.next_stamp += 1;
        let stamp = self.next_stamp;
        self.lru.put(key, Entry { charge, stamp });
        stamp
    }

    /// The object under `key` if it is still version `stamp`.
    pub fn current(&self, key: &str, stamp: u64) -> Option<Entry> {
        self.lru.peek(key).copied().filter(|e| e.stamp == stamp)
    }

    /// Removes `key` from the index and its bytes from the total.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.lru.pop(key)?;
        self.bytes = self.bytes.saturating_sub(entry.charge);
        Some(entry)
    }

    /// Returns reserved room that will not be used.
    pub fn release(&mut self, charge: u64) {
        self.bytes = self.bytes.saturating_sub(charge);
    }
}

/// The index and the signal that a claimed key was released.
pub(super) struct Shared {
    index: Mutex<Index>,
    released: Condvar,
}

/// The right to change one key's files; released on drop, whatever path the caller took.
pub(super) struct Claim<'a> {
    shared: &'a Shared,
    key: String,
}

impl Claim<'_> {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            index: Mutex::new(Index {
                lru: LruCache::unbounded(),
                bytes: 0,
                evictions: 0,
                busy: HashSet::new(),
                next_stamp: 0,
            }),
            released: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Index> {
        // Nothing in a critical section panics; a poisoned lock still holds a consistent map.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until nobody else is changing `key`'s files, then claims it. Blocking: call from
    /// a blocking thread only.
    pub fn claim(&self, key: &str) -> Claim<'_> {
        let mut index = self.lock();
        while index.busy.contains(key) {
            index = self
                .released
                .wait(index)
                .unwrap_or_else(PoisonError::into_inner);
        }
        index.busy.insert(key.to_owned());
        Claim {
            shared: self,
            key: key.to_owned(),
        }
    }

    /// Reserves `charge` bytes and takes least recently used objects out of the index until
    /// the total fits `max_bytes` again. Keys someone is changing are skipped (they are not
    /// waited for: the caller holds a claim of its own). When nothing more can go, the total
    /// stays over: only while puts that skipped each other's keys are writing at once.
    ///
    /// The victims come back claimed: their files are the caller's to remove.
    pub fn make_room(&self, charge: u64, max_bytes: u64) -> Vec<Claim<'_>> {
        let mut guard = self.lock();
        let index = &mut *guard;
        index.bytes = index.bytes.saturating_add(charge);
        let mut keys = Vec::new();
        let mut freed = 0;
        for (key, entry) in index.lru.iter().rev() {
            if index.bytes.saturating_sub(freed) <= max_bytes {
                break;
            }
            if !index.busy.contains(key) {
                keys.push(key.clone());
                freed += entry.charge;
            }
        }
        let mut victims = Vec::with_capacity(keys.len());
        for key in keys {
            index.remove(&key);
            index.evictions += 1;
            index.busy.insert(key.clone());
            victims.push(Claim { shared: self, key });
        }
        victims
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.shared.lock().busy.remove(&self.key);
        self.shared.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_comes_from_the_least_recent_unclaimed_objects() {
        let shared = Shared::new();
        {
            let mut index = shared.lock();
            for key in ["a", "b", "c"] {
                index.bytes += 10;
                index.insert(key.into(), 10);
            }
            index.lru.get("a");
        }
        let writing_b = shared.claim("b");
        let victims = shared.make_room(10, 30);
        let keys: Vec<&str> = victims.iter().map(Claim::key).collect();
        assert_eq!(keys, ["c"]);
        drop(victims);
        drop(writing_b);
        let index = shared.lock();
        assert_eq!(index.bytes, 30);
        assert_eq!(index.evictions, 1);
        assert!(index.busy.is_empty());
        assert!(index.lru.contains("a") && index.lru.contains("b"));
    }
}
