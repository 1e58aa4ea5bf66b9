//! The memory tier: finished results held in this process, bounded in bytes.
//!
//! A `quick_cache` cache weighted by each object's size (body, metadata and key): its
//! CLOCK-Pro-style admission keeps a result that is asked for again over a one-off, so a scan
//! of new keys does not wash out the popular ones. An object above `MEMORY_CACHE_MAX_OBJECT_BYTES`
//! is never admitted: a few large results would otherwise push out thousands of small ones.
//! `MEMORY_CACHE_MAX_BYTES=0` turns the tier off.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use super::object::Object;

/// What a held object costs besides its body and strings: the map entry, the `Arc`, the
/// `Bytes` handle. An estimate; it keeps a tier of tiny objects honest.
const ENTRY_OVERHEAD: u64 = 128;

/// A typical result, for sizing the map up front (it grows if there are more).
const TYPICAL_OBJECT_BYTES: u64 = 32 * 1024;

/// Each shard evicts on its own, so a shard must hold several of the largest objects.
const LARGEST_OBJECTS_PER_SHARD: u64 = 4;

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Arc<Object>> for ByBytes {
    fn weight(&self, key: &String, object: &Arc<Object>) -> u64 {
        weight(key, object)
    }
}

fn weight(key: &str, object: &Object) -> u64 {
    let meta = &object.meta;
    object.len()
        + (key.len() + meta.content_type.len() + meta.cache_control.as_ref().map_or(0, String::len))
            as u64
        + ENTRY_OVERHEAD
}

/// Counts what the cache pushes out to make room.
#[derive(Clone)]
struct CountEvictions(Counter);

impl Lifecycle<String, Arc<Object>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: String, _: Arc<Object>) {
        self.0.inc();
    }
}

pub struct Memory {
    /// `None` when the tier is off.
    objects: Option<Cache<String, Arc<Object>, ByBytes, DefaultHashBuilder, CountEvictions>>,
    max_object_bytes: u64,
}

impl Memory {
    /// A tier of at most `max_bytes`, admitting objects up to `max_object_bytes`; evictions
    /// are counted in `evictions`.
    pub fn new(max_bytes: u64, max_object_bytes: u64, evictions: Counter) -> Memory {
        if max_bytes == 0 || max_object_bytes == 0 {
            return Memory {
                objects: None,
                max_object_bytes: 0,
            };
        }
        let largest = max_object_bytes.min(max_bytes);
        let shards = (max_bytes / (largest * LARGEST_OBJECTS_PER_SHARD)).clamp(1, 64);
        let options = OptionsBuilder::new()
            .estimated_items_capacity((max_bytes / TYPICAL_OBJECT_BYTES).max(16) as usize)
            .weight_capacity(max_bytes)
            .shards(shards as usize)
            .build()
            .expect("a non-zero capacity with a shard count is valid");
        let objects = Cache::with_options(
            options,
            ByBytes,
            DefaultHashBuilder::default(),
            CountEvictions(evictions),
        );
        Memory {
            objects: Some(objects),
            max_object_bytes: largest,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.objects.as_ref()?.get(key)
    }

    /// Holds `object` under `key`, if it is small enough to be admitted and not older than
    /// the result held there: a copy read from a store while a refresh replaced it (the old
    /// result promoted after the new one landed) must not bring the old one back.
    pub fn insert(&self, key: &str, object: Arc<Object>) {
        if let Some(objects) = &self.objects
            && object.len() <= self.max_object_bytes
            && objects
                .peek(key)
                .is_none_or(|held| held.meta.stored_at <= object.meta.stored_at)
        {
            objects.insert(key.to_owned(), object);
        }
    }

    /// Forgets `key`; `true` when it was held.
    pub fn remove(&self, key: &str) -> bool {
        self.objects
            .as_ref()
            .is_some_and(|objects| objects.remove(key).is_some())
    }

    /// Bytes held (by the weights above) and objects held.
    pub fn usage(&self) -> (u64, usize) {
        self.objects
            .as_ref()
            .map_or((0, 0), |objects| (objects.weight(), objects.len()))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cache::object::Meta;

    fn object(len: usize) -> Arc<Object> {
        Arc::new(Object {
            meta: Meta {
                content_type: "image/webp".into(),
                cache_control: None,
                stored_at: 0,
                content_disposition: None,
            },
            body: Bytes::from(vec![7; len]),
        })
    }

    #[test]
    fn stays_within_its_bytes_and_counts_evictions() {
        let evictions = Counter::default();
        let memory = Memory::new(1024 * 1024, 64 * 1024, evictions.clone());
        for i in 0..200 {
            memory.insert(&format!("k{i}"), object(10_000));
        }
        let (bytes, entries) = memory.usage();
        assert!(bytes <= 1024 * 1024, "{bytes}");
        assert!(entries < 200 && entries > 50, "{entries}");
        assert!(evictions.get() >= (200 - entries) as u64);
    }

    #[test]
    fn refuses_objects_above_the_per_object_cap() {
        let memory = Memory::new(1024 * 1024, 1000, Counter::default());
        memory.insert("big", object(1001));
        memory.insert("small", object(1000));
        assert!(memory.get("big").is_none());
        assert_eq!(memory.get("small").unwrap().len(), 1000);
        assert!(memory.remove("small"));
        assert!(memory.get("small").is_none());
    }

    #[test]
    fn an_older_result_never_replaces_a_newer_one() {
        let memory = Memory::new(1024 * 1024, 1000, Counter::default());
        let rendered_at = |stored_at: u64, byte: u8| {
            let mut object = Object::clone(&object(10));
            object.meta.stored_at = stored_at;
            object.body = Bytes::from(vec![byte; 10]);
            Arc::new(object)
        };
        memory.insert("k", rendered_at(200, 1));
        memory.insert("k", rendered_at(100, 2));
        assert_eq!(
            memory.get("k").unwrap().body[0],
            1,
            "the old copy came back"
        );
        memory.insert("k", rendered_at(300, 3));
        assert_eq!(memory.get("k").unwrap().body[0], 3);
    }

    #[test]
    fn zero_bytes_turns_the_tier_off() {
        let memory = Memory::new(0, 1000, Counter::default());
        memory.insert("k", object(10));
        assert!(memory.get("k").is_none());
        assert_eq!(memory.usage(), (0, 0));
    }
}
