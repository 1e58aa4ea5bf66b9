#![no_main]
//! See `imgproxy_cache::fuzzing::url`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgproxy_cache::fuzzing::url(data));
