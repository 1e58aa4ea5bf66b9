//! Keys this process has seen stored: the cheapest dedup, checked before a body is copied.
//!
//! A bounded LRU (`KNOWN_KEYS_CAPACITY` keys; 0 turns it off). Forgetting a key costs one
//! HEAD or conditional PUT later, never a wrong answer: the store stays the arbiter.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

pub struct KnownKeys {
    /// `None` when the capacity is 0.
    keys: Option<Mutex<LruCache<String, ()>>>,
}

impl KnownKeys {
    pub fn new(capacity: usize) -> KnownKeys {
        KnownKeys {
            keys: NonZeroUsize::new(capacity).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    /// Whether `key` was stored earlier (a look refreshes nothing: only storing does).
    pub fn contains(&self, key: &str) -> bool {
        self.keys.as_ref().is_some_and(|keys| {
            keys.lock()
                .expect("no code panics while holding this lock")
                .contains(key)
        })
    }

    /// Forgets `key` (it was removed from the store).
    pub fn forget(&self, key: &str) {
        if let Some(keys) = &self.keys {
            keys.lock()
                .expect("no code panics while holding this lock")
                .pop(key);
        }
    }

    /// Remembers that `key` is in the store.
    pub fn remember(&self, key: &str) {
        if let Some(keys) = &self.keys {
            keys.lock()
                .expect("no code panics while holding this lock")
                .put(key.to_owned(), ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_least_recently_stored_key() {
        let known = KnownKeys::new(2);
        known.remember("a");
        known.remember("b");
        known.remember("c");
        assert!(!known.contains("a"));
        assert!(known.contains("b") && known.contains("c"));
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let known = KnownKeys::new(0);
        known.remember("a");
        assert!(!known.contains("a"));
    }
}
