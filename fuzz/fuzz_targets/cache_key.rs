#![no_main]
//! See `imgproxy_cache::fuzzing::key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgproxy_cache::fuzzing::key(data));
