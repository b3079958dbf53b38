//! Fuzz target: `tapes::fuzz_targets::share_record` (SPEC.md §7).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapes::fuzz_targets::share_record(data));
