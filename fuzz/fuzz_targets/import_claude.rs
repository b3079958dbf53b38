//! Fuzz target: `tapes::fuzz_targets::import_claude` (SPEC.md §7).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapes::fuzz_targets::import_claude(data));
