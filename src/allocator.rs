//! The allocator of every tapes process: the `tapes` binary and the benches install mimalloc
//! as the global allocator (sled's page cache allocates and frees heavily; mimalloc measured
//! 1.5–2x faster ingest than the system allocator) and call [`purge_freed_memory_at_once`]
//! first thing, so a bench measures the memory the binary would hold.

/// The allocator to install: `#[global_allocator] static A: tapes::allocator::MiMalloc = MiMalloc;`.
pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc the `mimalloc` crate builds (v3; v2 has the same
/// index). Its default is 10 ms in mimalloc's header, 1000 ms as built here (read back).
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;

extern "C" {
    fn mi_option_get(option: std::os::raw::c_int) -> std::os::raw::c_long;
    fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
}

/// Returns freed memory to the system at once instead of after mimalloc's purge delay. An
/// import frees a huge message's JSON just before it allocates its blocks and encoding; with
/// the delay the freed pages still counted, and a 64 MB line peaked at 4.4x its size (285 MB
/// RSS) instead of 3.0x (192 MB). Import throughput measured the same either way (noise of
/// +-20% over 300k nodes). The option is set only if it holds one of its known defaults, so a
/// mimalloc whose options are numbered differently is left alone.
pub fn purge_freed_memory_at_once() {
    // SAFETY: plain getters/setters of mimalloc's option table (linked in through the
    // `mimalloc` crate); called before any other thread exists.
    unsafe {
        if matches!(mi_option_get(MI_OPTION_PURGE_DELAY), 10 | 1000) {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}
