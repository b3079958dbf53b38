//! The allocator of every tapes process: the `tapes` binary and the benches install mimalloc
//! as the global allocator (sled's page cache allocates and frees heavily; mimalloc measured
//! 1.5–2x faster ingest than the system allocator) and call [`purge_freed_memory_at_once`]
//! first thing, so a bench measures the memory the binary would hold.
//!
//! Because freed memory goes back at once, a buffer freed and allocated again is fresh pages,
//! a page fault per 4 KiB; [`take_buffer`] and [`give_back`] keep a few large buffers for the
//! hot paths that need one again and again (frames, chains being sent, pack windows).

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

/// Buffers the process keeps for reuse, up to `buffers` of them of at most `largest` bytes
/// each: what they hold is bounded however many connections, chains or packs are in flight.
pub struct Pool {
    buffers: usize,
    largest: usize,
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    pub const fn new(buffers: usize, largest: usize) -> Pool {
        Pool {
            buffers,
            largest,
            spare: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A kept buffer, emptied, or a new one.
    pub fn take(&self) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        spare.pop().unwrap_or_default()
    }

    /// Keeps `buffer` for a next use, if it is not too large and there is room.
    pub fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > self.largest {
            return;
        }
        buffer.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.buffers {
            spare.push(buffer);
        }
    }
}

/// Buffers of up to 2 MiB ([`take_buffer`], [`give_back`]). A frame buffer freed after each
/// 1 MiB object batch was fresh memory for the next, and growing it by doubling copied it
/// again: a third of a fetching node's page faults (`perf -e page-faults`, `cargo bench
/// --bench sync`); a serving node's 256 KiB pack window and the chunks of a chain being sent
/// were the same. Sixteen cover the batches, chains and windows in flight on the streams of a
/// fetch: at most 32 MiB.
static SMALL: Pool = Pool::new(16, 2 << 20);

/// Pack writing buffers (4 MiB, a few per pack being written): a fetch writes a new pack every
/// 64 MiB, and each took its buffers fresh, three quarters of a page fault per byte fetched.
/// Four kept: at most 17 MiB.
pub static PACK_BUFFERS: Pool = Pool::new(4, (4 << 20) + (8 << 10));

/// A kept buffer of up to 2 MiB, emptied, or a new one.
pub fn take_buffer() -> Vec<u8> {
    SMALL.take()
}

/// Keeps `buffer` for a next use of [`take_buffer`], if it is at most 2 MiB and there is room.
pub fn give_back(buffer: Vec<u8>) {
    SMALL.give_back(buffer)
}

/// `buffer[start..]` as [`bytes::Bytes`], for a writer that takes ownership (QUIC's
/// `write_chunk`): the buffer goes back to [`give_back`] when the last `Bytes` of it is dropped,
/// once the peer acknowledged it. `write_all` of a slice copied every frame into a fresh
/// allocation of QUIC's send buffer: a copy and a page fault per 4 KiB of everything a serving
/// node sends (a fifth of its CPU with ~8 KB objects, `cargo bench --bench sync`).
pub fn lend(buffer: Vec<u8>, start: usize) -> bytes::Bytes {
    struct Lent {
        buffer: Vec<u8>,
        start: usize,
    }
    impl AsRef<[u8]> for Lent {
        fn as_ref(&self) -> &[u8] {
            &self.buffer[self.start..]
        }
    }
    impl Drop for Lent {
        fn drop(&mut self) {
            give_back(std::mem::take(&mut self.buffer));
        }
    }
    let start = start.min(buffer.len());
    bytes::Bytes::from_owner(Lent { buffer, start })
}
