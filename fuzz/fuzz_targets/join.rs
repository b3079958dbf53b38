//! Fuzz target: `tapes_protocol::fuzz_targets::join_message` (SPEC.md §7).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapes_protocol::fuzz_targets::join_message(data));
