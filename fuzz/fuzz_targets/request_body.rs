//! Fuzz target: see `aliexpress::fuzzing::request_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aliexpress::fuzzing::request_body(data);
});
