//! Fuzz target: see `aliexpress::fuzzing::dlq_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    aliexpress::fuzzing::dlq_record(data);
});
