//! Fuzz target: see `aliexpress::fuzzing::traceparent`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aliexpress::fuzzing::traceparent(data);
});
