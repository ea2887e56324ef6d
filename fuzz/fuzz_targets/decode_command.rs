//! Fuzz target: see `aliexpress::fuzzing::command`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aliexpress::fuzzing::command(data);
});
