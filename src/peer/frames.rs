//! Frames on QUIC streams: `len:u32le | postcard(message)` (SPEC.md §15.1), with byte
//! counters so a sync can report what it cost, and the deadlines and memory bound of
//! [`super::guard::Limits`] (SPEC.md §15.6): a frame's body must arrive, and a frame we send
//! must be taken, within [`Limits::frame_deadline`]; the answering side also waits at most
//! [`Limits::request`] for the head of a peer's next frame. A peer that misses one is cut off:
//! named as breaking the protocol on the answering side, as a broken connection (to retry) on
//! the asking side. A connection that went silent (QUIC's idle timeout, or a frame whose bytes
//! stopped coming) is reported as nothing having arrived from the peer for so many seconds.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use iroh::endpoint::{ConnectionError, ReadExactError, RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tapes_protocol::sync::{decode_payload, encode_frame_into, frame_len, FRAME_HEAD_LEN};

use super::guard::Limits;
use super::PeerError;

/// How long QUIC waits with nothing at all from the peer before it gives the connection up
/// (its `max_idle_timeout`: noq's default, which neither iroh nor tapes changes).
const QUIC_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// A frame whose bytes stopped for at least this long (and half the frame's grace) when its
/// deadline passed was cut off, not slow: a trickle pauses for less.
const SILENT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a user is told when nothing arrived from a peer for `secs` seconds (`during`: where).
fn silent(secs: u64, during: &str) -> String {
    format!("nothing arrived from it for {secs} s{during} (the connection may be cut)")
}

/// Why a connection broke, in words: QUIC giving it up because nothing arrived from the peer
/// for its idle timeout says so (a cut link, a peer gone), where QUIC says "connection lost".
pub(crate) fn lost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(ConnectionError::TimedOut) = err.downcast_ref::<ConnectionError>() {
            return silent(QUIC_IDLE.as_secs(), "");
        }
        cause = err.source();
    }
    e.to_string()
}

/// Bytes sent and received on one connection, the bytes of frames begun and not yet finished,
/// and the limits the connection runs under.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Bytes of frame bodies received but not yet complete, over all streams.
    buffered: AtomicUsize,
    limits: Limits,
    /// The answering side: waits for a peer's frames are bounded, and a peer that misses a
    /// deadline broke the protocol.
    serving: bool,
}

pub(crate) use crate::allocator::{give_back, take_buffer};

/// A frame of a run of object batches ([`Stream::expect_objects`]).
pub enum Incoming {
    /// The payload of a `Response::Objects(Objects::Plain(..))` frame, as received.
    PlainBatch(Vec<u8>),
    /// The payload of a `Response::Objects(Objects::Keyed { .. })` frame, as received, to be
    /// opened in place.
    KeyedBatch(Vec<u8>),
    Other(tapes_protocol::sync::Response),
}

impl Counters {
    /// The counters of a connection a peer opened to us, under `limits`.
    pub fn serving(limits: Limits) -> Counters {
        Counters {
            limits,
            serving: true,
            ..Counters::default()
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// One side of a stream, with the peer's name for errors.
pub struct Stream<'a> {
    pub send: SendStream,
    pub recv: RecvStream,
    pub peer: &'a str,
    pub counters: &'a Counters,
}

impl Stream<'_> {
    fn broken(&self, why: impl std::fmt::Display) -> PeerError {
        PeerError::Connection {
            peer: self.peer.to_string(),
            why: why.to_string(),
        }
    }

    /// A connection QUIC reports broken ([`lost`]).
    fn cut(&self, e: impl std::error::Error + 'static) -> PeerError {
        self.broken(lost(&e))
    }

    /// A peer that missed a deadline: on the answering side it broke the protocol (it is
    /// disconnected and named in the log); on the asking side the connection counts as broken.
    fn stalled(&self, why: String) -> PeerError {
        if self.counters.serving {
            self.protocol(why)
        } else {
            self.broken(why)
        }
    }

    pub async fn write<T: Serialize>(&mut self, message: &T) -> Result<(), PeerError> {
        let frame = encode_frame_into(message, take_buffer());
        self.write_lent(crate::allocator::lend(frame, 0)).await
    }

    /// Writes a frame the caller hands over ([`crate::allocator::lend`]): QUIC keeps it until
    /// the peer acknowledged it, without copying it into a send buffer of its own.
    pub async fn write_lent(&mut self, frame: bytes::Bytes) -> Result<(), PeerError> {
        let len = frame.len();
        self.counters.sent.fetch_add(len as u64, Ordering::Relaxed);
        let limit = self.counters.limits.frame_deadline(len);
        match tokio::time::timeout(limit, self.send.write_chunk(frame)).await {
            Ok(done) => done.map_err(|e| self.cut(e)),
            Err(_) => Err(self.stalled(format!(
                "it did not take a frame of {len} bytes within {} s",
                limit.as_secs()
            ))),
        }
    }

    /// The next frame, or `None` when the other side finished the stream between frames.
    pub async fn read<T: DeserializeOwned>(
        &mut self,
        what: &'static str,
    ) -> Result<Option<T>, PeerError> {
        let Some(payload) = self.read_payload(what).await? else {
            return Ok(None);
        };
        let decoded = decode_payload(&payload, what);
        give_back(payload);
        decoded.map(Some).map_err(|e| self.protocol(e))
    }

    /// The next frame of a run of object batches: a plain or keyed batch as it arrived, to be
    /// opened and read in place ([`tapes_protocol::sync::batch_spans`]; the caller gives the
    /// buffer back with [`give_back`] when done), or any other frame decoded.
    pub async fn expect_objects(&mut self, what: &'static str) -> Result<Incoming, PeerError> {
        let payload = self
            .read_payload(what)
            .await?
            .ok_or_else(|| self.protocol(format!("the stream ended where {what} was expected")))?;
        if tapes_protocol::sync::plain_batch_of(&payload).is_some() {
            return Ok(Incoming::PlainBatch(payload));
        }
        if tapes_protocol::sync::keyed_batch_of(&payload).is_some() {
            return Ok(Incoming::KeyedBatch(payload));
        }
        let decoded = decode_payload(&payload, what);
        give_back(payload);
        decoded.map(Incoming::Other).map_err(|e| self.protocol(e))
    }

    /// The payload of the next frame, undecoded, in a kept buffer (see [`give_back`]).
    async fn read_payload(&mut self, what: &'static str) -> Result<Option<Vec<u8>>, PeerError> {
        let limits = self.counters.limits;
        let mut head = [0u8; FRAME_HEAD_LEN];
        let got = if self.counters.serving {
            match tokio::time::timeout(limits.request, self.recv.read_exact(&mut head)).await {
                Ok(got) => got,
                Err(_) => {
                    return Err(self.stalled(format!(
                        "it sent no {what} for {} s on an open stream",
                        limits.request.as_secs()
                    )))
                }
            }
        } else {
            self.recv.read_exact(&mut head).await
        };
        match got {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(e) => return Err(self.cut(e)),
        }
        let len = frame_len(head).map_err(|e| self.protocol(e))?;
        // The body must keep coming at `min_rate` on average after a grace of `frame`: each
        // chunk is due by then for the bytes before it, so a trickle is cut off as soon as it
        // falls behind, whatever length the head announced.
        let began = tokio::time::Instant::now();
        // When the last bytes of it arrived: a deadline missed after a long silence is a cut
        // link (or a peer gone), not a slow one.
        let mut last = began;
        // Filled chunk by chunk as QUIC hands them over: a zeroed buffer to read into would
        // cost a write of every received byte before the copy. A buffer the process kept is
        // reused (`tapes::allocator::take_buffer`: memory it already held).
        let mut body = Body::new(len);
        body.bytes = take_buffer();
        let mut held = Held {
            counters: self.counters,
            bytes: 0,
        };
        while body.missing() > 0 {
            let due = began + limits.frame_deadline(body.bytes.len());
            let chunk = tokio::time::timeout_at(due, self.recv.read_chunk(body.missing()));
            match chunk.await {
                Ok(Ok(Some(chunk))) => {
                    last = tokio::time::Instant::now();
                    let chunk = &chunk[..chunk.len().min(body.missing())];
                    if !held.add(chunk.len()) {
                        return Err(self.protocol(format!(
                            "it keeps more than {} MiB of unfinished frames on one connection",
                            limits.buffered >> 20
                        )));
                    }
                    body.push(chunk)
                }
                Ok(Ok(None)) => return Err(self.broken("the stream ended inside a frame")),
                Ok(Err(e)) => return Err(self.cut(e)),
                Err(_) if last.elapsed() >= SILENT.max(limits.frame / 2) => {
                    let during = format!(" in the middle of a frame of {len} bytes");
                    return Err(self.stalled(silent(last.elapsed().as_secs(), &during)));
                }
                Err(_) => {
                    return Err(self.stalled(format!(
                        "it sent a frame of {len} bytes slower than {} bytes/s ({} bytes in {} s)",
                        limits.min_rate,
                        body.bytes.len(),
                        began.elapsed().as_secs()
                    )))
                }
            }
        }
        drop(held);
        self.counters
            .received
            .fetch_add((FRAME_HEAD_LEN + len) as u64, Ordering::Relaxed);
        Ok(Some(body.bytes))
    }

    /// Like [`Stream::read`], but the end of the stream is an error.
    pub async fn expect<T: DeserializeOwned>(
        &mut self,
        what: &'static str,
    ) -> Result<T, PeerError> {
        self.read(what)
            .await?
            .ok_or_else(|| self.protocol(format!("the stream ended where {what} was expected")))
    }

    pub fn protocol(&self, why: impl std::fmt::Display) -> PeerError {
        PeerError::Protocol {
            peer: self.peer.to_string(),
            why: why.to_string(),
        }
    }

    /// Ends our side of the stream.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

/// Bytes of one unfinished frame, counted in the connection's [`Counters`] until dropped.
struct Held<'a> {
    counters: &'a Counters,
    bytes: usize,
}

impl Held<'_> {
    /// Counts `n` more bytes; false when the connection would hold more than its limit.
    fn add(&mut self, n: usize) -> bool {
        self.bytes += n;
        let before = self.counters.buffered.fetch_add(n, Ordering::AcqRel);
        before + n <= self.counters.limits.buffered
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.counters
            .buffered
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A frame body as it arrives. Memory follows the bytes received, never the length the head
/// announced: a peer that announces a 64 MiB frame and then stalls (on each of many streams)
/// costs nothing until it sends (SPEC.md §15.6). Growth doubles, up to the announced length.
struct Body {
    want: usize,
    bytes: Vec<u8>,
}

impl Body {
    fn new(want: usize) -> Body {
        Body {
            want,
            bytes: Vec::new(),
        }
    }

    /// Bytes still to come.
    fn missing(&self) -> usize {
        self.want - self.bytes.len()
    }

    /// Appends a chunk of at most [`Body::missing`] bytes.
    fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[..chunk.len().min(self.missing())];
        if self.bytes.capacity() - self.bytes.len() < chunk.len() {
            let grow = self.bytes.len().max(chunk.len()).min(self.missing());
            self.bytes.reserve_exact(grow);
        }
        self.bytes.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapes_protocol::sync::MAX_FRAME;

    #[test]
    fn the_idle_timeout_users_are_told_of_is_quics() {
        // The connection's config (iroh's default, which `endpoint::bind` keeps).
        let config = format!("{:?}", iroh::endpoint::QuicTransportConfig::default());
        let idle = format!("max_idle_timeout: Some({}),", QUIC_IDLE.as_millis());
        assert!(config.contains(&idle), "{config}");
    }

    #[test]
    fn a_connection_quic_gave_up_on_says_nothing_arrived() {
        use iroh::endpoint::{ReadError, WriteError};
        let plain = "nothing arrived from it for 30 s (the connection may be cut)";
        let read = ReadExactError::ReadError(ReadError::ConnectionLost(ConnectionError::TimedOut));
        assert_eq!(lost(&read), plain);
        assert_eq!(
            lost(&WriteError::ConnectionLost(ConnectionError::TimedOut)),
            plain
        );
        assert_eq!(lost(&ConnectionError::TimedOut), plain);
        // Other ends keep their own words.
        assert_eq!(
            lost(&ConnectionError::LocallyClosed),
            ConnectionError::LocallyClosed.to_string()
        );
    }

    #[test]
    fn a_frame_body_allocates_for_what_arrived_not_what_was_announced() {
        let mut body = Body::new(MAX_FRAME);
        assert_eq!(body.bytes.capacity(), 0);
        body.push(&[7; 1000]);
        assert!(body.bytes.capacity() < 4096, "{}", body.bytes.capacity());
        assert_eq!(body.missing(), MAX_FRAME - 1000);
        // Growing to a full frame never reserves past the announced length.
        let mut body = Body::new(10_000);
        for _ in 0..10 {
            body.push(&[1; 1000]);
        }
        assert_eq!(body.missing(), 0);
        assert_eq!(body.bytes, vec![1; 10_000]);
        assert!(body.bytes.capacity() <= 10_000);
        // A chunk longer than what is missing is cut to the frame.
        let mut body = Body::new(3);
        body.push(&[1, 2, 3, 4]);
        assert_eq!(body.bytes, [1, 2, 3]);
    }
}
