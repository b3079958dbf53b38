//! Writing a new file past the page cache (Linux `O_DIRECT`), for the bulk writes of packs
//! (SPEC.md §4 "Writing a pack").
//!
//! A pack is written once, front to back, fsynced, and not read again soon: a fetch or an
//! import moves on to the next batch, and a reader maps the pack later. A buffered write copies
//! every byte into the page cache first, into pages the kernel has to find, and keeps them
//! dirty until writeback; on the 2-core VM the benches run on, the first touch of a page the
//! guest never used costs ~3 ms per MB, which made a fetch's pack writes 3 s of CPU per GB
//! (`dd` to a new file: 330 MB/s buffered, 1.5 GB/s with `oflag=direct` at 0.1 s of CPU). A
//! direct write hands the caller's buffer to the disk instead, as databases write their bulk
//! files (RocksDB's direct I/O for flushes and compactions).
//!
//! Direct writes need the memory address, the file offset and the length aligned to the
//! device's logical block ([`ALIGN`] covers 512-byte and 4 KiB devices). [`Out`] keeps an
//! aligned staging buffer, writes whole blocks from it, and writes the last partial block
//! through the page cache. A file system that refuses `O_DIRECT` (tmpfs, some FUSE and network
//! file systems) gets buffered writes throughout; nothing else changes, and durability is the
//! caller's fsync either way (a direct write may still sit in the disk's cache).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::allocator::PACK_BUFFERS;

/// Alignment of a direct write: address, offset and length.
pub const ALIGN: usize = 4096;

/// A new file written front to back: directly when the file system allows it, else through
/// the page cache.
pub struct Out {
    file: File,
    /// The staging area of direct writes (`None`: buffered). Its first `start` bytes are
    /// padding that puts `stage[start..]` on an [`ALIGN`] boundary; `filled` bytes follow.
    stage: Option<Stage>,
}

struct Stage {
    bytes: Vec<u8>,
    start: usize,
    filled: usize,
    /// Whole blocks written at once (the capacity after `start`).
    room: usize,
}

impl Out {
    /// Creates (truncates) `path` for writing, directly when possible. `chunk` is the usual
    /// size of a [`Out::write`]: the staging area holds that much, rounded up to a block.
    pub fn create(path: &Path, chunk: usize) -> std::io::Result<Out> {
        if let Some(file) = open_direct(path) {
            let room = chunk.max(ALIGN).div_ceil(ALIGN) * ALIGN;
            // Kept from an earlier pack when there is one (fresh memory is a page fault per
            // 4 KiB).
            let mut bytes = PACK_BUFFERS.take();
            bytes.reserve_exact(room + ALIGN);
            let start = bytes.as_ptr().align_offset(ALIGN);
            if start <= ALIGN {
                bytes.resize(start, 0);
                return Ok(Out {
                    file,
                    stage: Some(Stage {
                        bytes,
                        start,
                        filled: 0,
                        room,
                    }),
                });
            }
        }
        Ok(Out {
            file: File::create(path)?,
            stage: None,
        })
    }

    /// Whether writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.stage.is_some()
    }

    /// Appends `bytes`. Whole blocks of a block-aligned `bytes` (a pack builder's 4 MiB
    /// buffers, which mimalloc places on 64 KiB boundaries) are written from where they are,
    /// without the copy into the staging area (4 % of a fetching node's CPU, `perf`).
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        if let Some(stage) = &self.stage {
            let whole = bytes.len() / ALIGN * ALIGN;
            // Nothing staged: everything written so far is whole blocks, so the file offset is
            // aligned too.
            if stage.filled == 0 && whole > 0 && (bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
                let (blocks, rest) = bytes.split_at(whole);
                if !write_blocks_or_fall_back(&self.file, blocks)? {
                    self.stop_direct();
                    return self.file.write_all(rest);
                }
                bytes = rest;
            }
        }
        while !bytes.is_empty() {
            let Some(stage) = self.stage.as_mut() else {
                return self.file.write_all(bytes);
            };
            let take = (stage.room - stage.filled).min(bytes.len());
            stage.bytes.extend_from_slice(&bytes[..take]);
            stage.filled += take;
            bytes = &bytes[take..];
            if stage.filled == stage.room {
                self.write_blocks()?;
            }
        }
        Ok(())
    }

    /// Writes the whole blocks staged and keeps the partial one.
    fn write_blocks(&mut self) -> std::io::Result<()> {
        let Some(stage) = self.stage.as_mut() else {
            return Ok(());
        };
        let whole = stage.filled / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let (from, to) = (stage.start + whole, stage.start + stage.filled);
        if !write_blocks_or_fall_back(&self.file, &stage.bytes[stage.start..from])? {
            self.file.write_all(&stage.bytes[from..to])?;
            self.stop_direct();
            return Ok(());
        }
        stage.bytes.copy_within(from..to, stage.start);
        stage.filled -= whole;
        stage.bytes.truncate(stage.start + stage.filled);
        Ok(())
    }

    /// Writes what is staged (the last partial block through the page cache) and returns the
    /// file, for the caller to fsync.
    pub fn finish(mut self) -> std::io::Result<File> {
        self.write_blocks()?;
        if let Some(stage) = self.stage.take() {
            set_direct(&self.file, false)?;
            self.file
                .write_all(&stage.bytes[stage.start..stage.start + stage.filled])?;
            PACK_BUFFERS.give_back(stage.bytes);
        }
        Ok(self.file)
    }

    /// Writes go through the page cache from now on; the staging area goes back to the pool.
    fn stop_direct(&mut self) {
        if let Some(stage) = self.stage.take() {
            PACK_BUFFERS.give_back(stage.bytes);
        }
    }

    /// The file, for hints such as writeback requests; writes go through [`Out::write`].
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Writes whole `blocks` directly; true unless the file system refused after all (one that
/// accepts the flag but not this write): then the same bytes went through the page cache, the
/// file is buffered from now on, and the caller stops staging. A direct write that fails
/// writes nothing, so the offset is where it was.
fn write_blocks_or_fall_back(mut file: &File, blocks: &[u8]) -> std::io::Result<bool> {
    match file.write_all(blocks) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            set_direct(file, false)?;
            file.write_all(blocks)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// `path` created for direct writes, or `None` where the platform or file system refuses.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// Turns `O_DIRECT` on or off for an open file.
fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor this value owns; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, on);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the sizes of the writes, the file holds exactly the bytes written, in order:
    /// direct where the file system allows it (ext4 here), buffered where it refuses (tmpfs,
    /// `/dev/shm` on Linux).
    #[test]
    fn a_file_written_directly_holds_exactly_what_was_written() {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            dirs.push(shm);
        }
        for dir in &dirs {
            written_in(dir.path());
        }
    }

    fn written_in(dir: &Path) {
        // (size, whether the bytes start on a block boundary): aligned writes go straight to
        // the file when nothing is staged, through the staging area otherwise.
        let unaligned = |sizes: &[usize]| sizes.iter().map(|s| (*s, false)).collect::<Vec<_>>();
        for (n, writes) in [
            vec![],
            unaligned(&[1]),
            unaligned(&[ALIGN]),
            unaligned(&[5000, 3, 70_000, ALIGN * 3 + 7, 1]),
            unaligned(&[64 << 10; 9]),
            vec![(ALIGN * 2, true), (ALIGN * 3 + 7, true), (100, false)],
            vec![(100, false), (ALIGN * 4, true), (ALIGN * 2, true)],
            vec![(ALIGN * 16, true), (ALIGN * 16, true), (5, true)],
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.join(format!("f{n}"));
            let mut out = Out::create(&path, 64 << 10).unwrap();
            let mut expected = Vec::new();
            for (i, (size, aligned)) in writes.iter().enumerate() {
                let mut room = vec![0u8; size + ALIGN + 1];
                let at = if *aligned {
                    room.as_ptr().align_offset(ALIGN)
                } else {
                    (room.as_ptr().align_offset(ALIGN) + 1) % ALIGN
                };
                let chunk = &mut room[at..at + size];
                chunk
                    .iter_mut()
                    .enumerate()
                    .for_each(|(b, byte)| *byte = (b * 7 + i) as u8);
                out.write(chunk).unwrap();
                expected.extend_from_slice(chunk);
            }
            out.finish().unwrap().sync_all().unwrap();
            let got = std::fs::read(&path).unwrap();
            assert!(got == expected, "writes {writes:?}: the file differs");
        }
    }
}
