//! What one connection may cost the answering side (SPEC.md §15.6, §7): the limits that a
//! `tapes serve` and a relay (§16.10) put on every peer, and the loop that accepts a peer's
//! streams under them.
//!
//! A peer that sends garbage, stalls after the handshake (with or without opening a stream),
//! trickles its bytes, announces frames it never sends, or opens streams by the thousand is
//! disconnected and named in the operator's log; meanwhile every other connection is served
//! as usual (each connection and each stream is its own task). What a connection can hold is
//! bounded: at most [`Limits::streams`] stream tasks, at most [`Limits::buffered`] bytes of
//! frames begun but not finished ([`super::frames`] counts them), and every wait has a
//! deadline ([`Limits::request`], [`Limits::idle`], [`Limits::frame_deadline`]).
//!
//! What all connections together can hold is bounded too ([`Connections`]): a node id costs
//! nothing to make, so a peer could otherwise open connections under fresh identities without
//! end. Nodes outside the serving node's teams share [`MAX_STRANGER_CONNECTIONS`] at once;
//! teammates (and the owner's own machines) are never crowded out by them, up to
//! [`MAX_CONNECTIONS`] in all. A connection over a bound is closed at once as *busy* and named
//! in the log.
//!
//! Tested by `tests/it/hostile.rs` and `tests/it/conn_cap.rs`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, RecvStream, SendStream};
use tokio::sync::Notify;

use super::PeerError;

/// What a serving node tells its operator (`tapes serve` and `tapes relay serve` print these).
pub type EventLog = Arc<dyn Fn(String) + Send + Sync>;

/// The bounds on one connection. [`Limits::default`] is what `tapes serve` and the relay use;
/// tests shorten the waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Streams one connection may have open at once; a peer that opens one more while
    /// all of them stay busy for [`Limits::stream_grace`] is disconnected. (A client fetches
    /// over 16 at a time.)
    pub streams: usize,
    /// How long a stream over [`Limits::streams`] waits, unanswered, for a place. A stream
    /// counts as open until its task ends, which can be after the peer has read the whole
    /// answer (a fetch's audit entry is written after it is served): a well-behaved client
    /// that opens its next stream on reading an answer can then be a few streams ahead of the
    /// count for a moment. A peer that really holds too many streams open keeps them busy past
    /// this and is cut.
    pub stream_grace: Duration,
    /// How long the answering side waits for the head of a peer's next frame on an open stream
    /// (its request, or the next message of an exchange it is in).
    pub request: Duration,
    /// How long a connection with no open stream is kept.
    pub idle: Duration,
    /// The grace a frame gets: once its head has arrived, its body must keep arriving at
    /// [`Limits::min_rate`] on average after this; a frame we send must be taken within this
    /// plus one second per `min_rate` bytes of it.
    pub frame: Duration,
    /// The slowest transfer rate a frame may take, in bytes per second, beyond [`Limits::frame`].
    pub min_rate: u64,
    /// Bytes of frames begun but not finished, over all of a connection's streams.
    pub buffered: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            streams: 64,
            stream_grace: Duration::from_secs(5),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(600),
            frame: Duration::from_secs(30),
            min_rate: 16 << 10,
            buffered: 256 << 20,
        }
    }
}

impl Limits {
    /// How long a frame of `len` bytes may take to arrive or to leave.
    pub fn frame_deadline(&self, len: usize) -> Duration {
        self.frame + Duration::from_secs(len as u64 / self.min_rate.max(1))
    }
}

/// Connections from nodes that are not members of any of the serving node's teams, held at
/// once. A stranger may only fetch public shares or ask to join, which a handful of
/// connections serve; its node id costs nothing to make, so without this bound connections
/// under fresh identities would each hold a task, buffers and an idle timer (up to
/// [`Limits::idle`]) without end.
pub const MAX_STRANGER_CONNECTIONS: usize = 128;

/// Connections held at once in all, teammates included: each is bounded by [`Limits`], and
/// this bounds their sum (a team of a few hundred machines syncing at once fits).
pub const MAX_CONNECTIONS: usize = 1024;

/// The connections a serving node holds, counted against [`MAX_CONNECTIONS`] and
/// [`MAX_STRANGER_CONNECTIONS`]. One per server; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    all: Arc<AtomicUsize>,
    strangers: Arc<AtomicUsize>,
}

/// A connection's place in [`Connections`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    all: Arc<AtomicUsize>,
    stranger: Option<Arc<AtomicUsize>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.all.fetch_sub(1, Ordering::AcqRel);
        if let Some(strangers) = &self.stranger {
            strangers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Connections {
    /// Counts one more connection from `name` (a `stranger` or not) and returns its place, or
    /// closes the connection as busy, says so in `log` and returns `None` when a bound is
    /// reached.
    pub(crate) fn admit(
        &self,
        connection: &Connection,
        name: &str,
        stranger: bool,
        log: &EventLog,
    ) -> Option<Slot> {
        let refused = if !take(&self.all, MAX_CONNECTIONS) {
            Some(format!("{MAX_CONNECTIONS} connections are open"))
        } else if stranger && !take(&self.strangers, MAX_STRANGER_CONNECTIONS) {
            self.all.fetch_sub(1, Ordering::AcqRel);
            Some(format!(
                "{MAX_STRANGER_CONNECTIONS} connections from nodes outside your teams are open"
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            log(format!("refused {name}: busy, {why}"));
            connection.close(6u32.into(), b"busy: too many connections; try again later");
            return None;
        }
        Some(Slot {
            all: self.all.clone(),
            stranger: stranger.then(|| self.strangers.clone()),
        })
    }
}

/// Adds one to `count` if it is below `bound`; false (and no change) otherwise.
fn take(count: &AtomicUsize, bound: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < bound).then_some(n + 1)
        })
        .is_ok()
}

/// Decrements the count of open streams when a stream task ends, however it ends, and wakes
/// a stream waiting for a place.
struct Open(Arc<AtomicUsize>, Arc<AtomicU64>, Instant, Arc<Notify>);

impl Drop for Open {
    fn drop(&mut self) {
        self.1
            .store(self.2.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.3.notify_one();
    }
}

/// Waits up to `grace` for `open` to fall below `bound`, then counts one more; false when no
/// place was freed in time.
async fn wait_for_place(open: &AtomicUsize, freed: &Notify, bound: usize, grace: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        // Registered before the check, so a place freed between the check and the wait is not
        // missed.
        let notified = freed.notified();
        if take(open, bound) {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return take(open, bound);
        }
    }
}

/// Accepts the streams a peer opens until the connection closes, one task each running
/// `handle`, under `limits`. A peer that breaks the protocol, sends a bad object, misses a
/// deadline, holds more than [`Limits::streams`] streams open at once (for longer than
/// [`Limits::stream_grace`]) or keeps an idle connection
/// past [`Limits::idle`] is logged (`log`, naming `name`) and disconnected; a broken
/// connection is only traced.
pub(crate) async fn accept_streams<F, Fut>(
    connection: Connection,
    name: String,
    log: EventLog,
    limits: Limits,
    handle: F,
) where
    F: Fn(SendStream, RecvStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), PeerError>> + Send + 'static,
{
    let open = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(Notify::new());
    let start = Instant::now();
    // Milliseconds after `start` when the connection last had something to do.
    let last = Arc::new(AtomicU64::new(0));
    loop {
        let (send, recv) = match tokio::time::timeout(limits.idle, connection.accept_bi()).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::debug!(peer = %name, "connection ended: {e}");
                break;
            }
            Err(_) => {
                let quiet = start
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if open.load(Ordering::Acquire) == 0 && quiet >= limits.idle {
                    log(format!(
                        "disconnected {name}: the connection stayed idle for {} s",
                        limits.idle.as_secs()
                    ));
                    connection.close(5u32.into(), b"idle");
                    break;
                }
                continue;
            }
        };
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !wait_for_place(&open, &freed, limits.streams, limits.stream_grace).await {
            log(format!(
                "disconnected {name}: opened more than {} streams at once and kept them busy for {} s",
                limits.streams,
                limits.stream_grace.as_secs_f64()
            ));
            connection.close(4u32.into(), b"too many streams");
            break;
        }
        let guard = Open(open.clone(), last.clone(), start, freed.clone());
        let work = handle(send, recv);
        let (connection, name, log) = (connection.clone(), name.clone(), log.clone());
        tokio::spawn(async move {
            let _guard = guard;
            match work.await {
                Ok(()) => {}
                Err(e @ PeerError::Connection { .. }) => tracing::debug!("{e}"),
                Err(e @ (PeerError::Protocol { .. } | PeerError::BadObject { .. })) => {
                    log(format!("disconnected {name}: {e}"));
                    connection.close(3u32.into(), b"protocol violation");
                }
                Err(e) => tracing::warn!("{e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_is_never_passed_and_a_freed_place_is_reused() {
        let count = AtomicUsize::new(0);
        assert!((0..3).all(|_| take(&count, 3)));
        assert!(!take(&count, 3));
        assert_eq!(count.load(Ordering::Acquire), 3);
        count.fetch_sub(1, Ordering::AcqRel);
        assert!(take(&count, 3));
    }

    #[tokio::test]
    async fn a_stream_over_the_bound_waits_for_a_place_freed_within_the_grace() {
        let open = Arc::new(AtomicUsize::new(2));
        let freed = Arc::new(Notify::new());
        let (o, f) = (open.clone(), freed.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            o.fetch_sub(1, Ordering::AcqRel);
            f.notify_one();
        });
        assert!(wait_for_place(&open, &freed, 2, Duration::from_secs(5)).await);
        assert_eq!(open.load(Ordering::Acquire), 2);
        // Nobody frees a place: refused once the grace is over, and nothing counted.
        assert!(!wait_for_place(&open, &freed, 2, Duration::from_millis(50)).await);
        assert_eq!(open.load(Ordering::Acquire), 2);
    }

    /// A server whose streams answer at once and then keep their task for a while (as a fetch
    /// writes its audit entry), and a client that keeps well under the bound in flight.
    #[derive(Debug, Clone)]
    struct Lingering(Arc<std::sync::Mutex<Vec<String>>>);

    const LINGERING_ALPN: &[u8] = b"tapes/test-lingering";

    impl iroh::protocol::ProtocolHandler for Lingering {
        async fn accept(&self, connection: Connection) -> Result<(), iroh::protocol::AcceptError> {
            let lines = self.0.clone();
            let log: EventLog = Arc::new(move |line| lines.lock().unwrap().push(line));
            let limits = Limits {
                streams: 8,
                ..Limits::default()
            };
            accept_streams(
                connection,
                "client".into(),
                log,
                limits,
                |mut send, mut recv| async move {
                    let broke = |e: String| PeerError::Connection {
                        peer: "client".into(),
                        why: e,
                    };
                    recv.read_to_end(16)
                        .await
                        .map_err(|e| broke(e.to_string()))?;
                    send.write_all(b"k")
                        .await
                        .map_err(|e| broke(e.to_string()))?;
                    send.finish().map_err(|e| broke(e.to_string()))?;
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    Ok(())
                },
            )
            .await;
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_reads_each_answer_before_its_next_stream_is_never_cut() {
        use crate::identity::{Identity, Profile};
        use crate::peer::endpoint::{bind, EndpointConfig};
        let identity = |name: &str| {
            Identity::generate(Profile {
                name: name.into(),
                email: None,
            })
            .unwrap()
        };
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = bind(&identity("server"), &EndpointConfig::loopback())
            .await
            .unwrap();
        let router = iroh::protocol::Router::builder(server)
            .accept(LINGERING_ALPN, Lingering(log.clone()))
            .spawn();
        let client = bind(&identity("client"), &EndpointConfig::loopback())
            .await
            .unwrap();
        let conn = client
            .connect(router.endpoint().addr(), LINGERING_ALPN)
            .await
            .unwrap();
        // 4 in flight against a bound of 8, each opened as soon as an answer is read: the
        // server's count runs ahead of what the client holds while its tasks linger.
        let mut tasks: tokio::task::JoinSet<Result<Vec<u8>, String>> = tokio::task::JoinSet::new();
        let mut answered = 0;
        for _ in 0..120 {
            while tasks.len() >= 4 {
                tasks.join_next().await.unwrap().unwrap().unwrap();
                answered += 1;
            }
            let conn = conn.clone();
            tasks.spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                send.write_all(b"q").await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())?;
                recv.read_to_end(16).await.map_err(|e| e.to_string())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
            answered += 1;
        }
        assert_eq!(answered, 120);
        assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
        conn.close(0u32.into(), b"done");
        router.shutdown().await.unwrap();
    }

    #[test]
    fn a_frame_gets_a_base_time_and_more_for_each_slice_of_its_length() {
        let limits = Limits::default();
        assert_eq!(limits.frame_deadline(0), limits.frame);
        assert_eq!(
            limits.frame_deadline(1 << 20),
            limits.frame + Duration::from_secs(64)
        );
        let zero = Limits {
            min_rate: 0,
            ..limits
        };
        assert!(zero.frame_deadline(10) >= zero.frame);
    }
}
