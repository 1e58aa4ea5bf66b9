#![no_main]
//! See `imgproxy_cache::fuzzing::decode_tiff`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgproxy_cache::fuzzing::decode_tiff(data));
