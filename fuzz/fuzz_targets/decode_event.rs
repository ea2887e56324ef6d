//! Fuzz target: see `aliexpress::fuzzing::event`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aliexpress::fuzzing::event(data);
});
