#![no_main]
//! See `imgproxy_cache::fuzzing::policy`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgproxy_cache::fuzzing::policy(data));
