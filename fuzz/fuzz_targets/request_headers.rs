//! Fuzz target: see `aliexpress::fuzzing::request_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aliexpress::fuzzing::request_headers(data);
});
