//! Fuzz target: see `aliexpress::fuzzing::search_cursor`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aliexpress::fuzzing::search_cursor(data);
});
