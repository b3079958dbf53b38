//! Fuzz target: `tapes::fuzz_targets::import_messages_json` (SPEC.md §7).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapes::fuzz_targets::import_messages_json(data));
