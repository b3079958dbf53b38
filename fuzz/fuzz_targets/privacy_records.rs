//! Fuzz target: `tapes::fuzz_targets::privacy_records` (SPEC.md §7).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapes::fuzz_targets::privacy_records(data));
