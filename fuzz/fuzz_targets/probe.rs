#![no_main]
//! See `imgproxy_cache::fuzzing::probe`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgproxy_cache::fuzzing::probe(data));
