//! The answering side of `tapes/sync/3` (`tapes serve`): one task per connection, one per
//! stream. The peer is who the QUIC handshake proved; what it may see is
//! [`crate::share::access::view_for`] under this node's current verified team manifests.
//!
//! A peer that breaks the protocol or sends an object that does not verify is disconnected;
//! nothing of the batch it was sending is stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tapes_protocol::batch_key::{ContentKey, KEY_LEN, NONCE_LEN};
use tapes_protocol::join::JoinRequest;
use tapes_protocol::reconcile::{Message, Reconciler, SortedIds};
use tapes_protocol::sync::{BatchFrame, ItemId, Request, Response};
use tapes_protocol::team_chain::TeamChain;
use tapes_protocol::{MemberId, NodeId, SessionId, StoredObject, TeamId};
use tokio::sync::OnceCell;

use super::endpoint::member_of;
use super::frames::{give_back, take_buffer, Counters, Stream};
use super::receive::{check_entry, ChainCheck, Rings};
use super::PeerError;
use crate::allocator::lend;
use crate::identity::Identity;
use crate::session::SessionRecord;
use crate::share::access::{self, encode_signature, signature_key, Grant, View, ViewItem};
use crate::share::SignedShare;
use crate::store::backend::RefUpdate;
use crate::store::{Store, StoreError};
use crate::sync::remote::{apply_push, RefSignature, RemoteError};
use crate::team;

/// Why one of our own sessions is not served as it is now (SPEC.md §11.2).
const GATED: &str = "its owner's messages added since it was shared wait for the secret gate; ask them to share it again";

/// Plaintext bytes per object batch on the wire (sealed batches are sealed one by one).
pub const BATCH_BYTES: usize = 1 << 20;
/// Served sessions written to the audit log in one update at most. One ref transaction per
/// served session was a sixth of a serving node's CPU in a 1 GB fetch of ~100 KB sessions
/// (`perf`, `cargo bench --bench sync`); in one update per 64 it is under 1 %.
const AUDIT_BATCH: usize = 64;
/// Chains up to this size are kept in memory between the walk and the send; longer ones are
/// read twice rather than held.
const HOLD_BYTES: usize = 64 << 20;

/// How the server gets at its store: shared with the caller, or opened on demand while
/// connections are active so that other `tapes` commands can use the store in between.
pub enum StoreHandle {
    Shared(Arc<Store>),
    OnDemand {
        path: PathBuf,
        slot: Mutex<Weak<Store>>,
    },
}

impl StoreHandle {
    pub fn on_demand(path: PathBuf) -> StoreHandle {
        StoreHandle::OnDemand {
            path,
            slot: Mutex::new(Weak::new()),
        }
    }

    fn get(&self) -> Result<Arc<Store>, StoreError> {
        match self {
            StoreHandle::Shared(store) => Ok(store.clone()),
            StoreHandle::OnDemand { path, slot } => {
                let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(store) = slot.upgrade() {
                    return Ok(store);
                }
                let store = Arc::new(Store::open(path)?);
                *slot = Arc::downgrade(&store);
                Ok(store)
            }
        }
    }
}

pub use super::guard::EventLog;

struct State {
    store: StoreHandle,
    identity: Arc<Identity>,
    log: EventLog,
    /// The secret gate's verdict on our own shared sessions as they are now, by session and
    /// head: a head is scanned once however often it is fetched (`gate::served`).
    gated: Mutex<HashMap<(SessionId, NodeId), bool>>,
    /// What one connection may cost (SPEC.md §15.6, `guard`).
    limits: super::guard::Limits,
    /// What all connections together hold (SPEC.md §15.6, `guard::Connections`).
    connections: super::guard::Connections,
}

/// The `tapes/sync/3` protocol handler.
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Server")
    }
}

/// Per-connection state.
struct Conn {
    peer: MemberId,
    name: String,
    store: Arc<Store>,
    view: OnceCell<Arc<View>>,
    counters: Counters,
    /// Team chains loaded for sealing, with the stamp they were loaded at: verifying a chain
    /// costs as much as sending a small session, and it only changes with its stamp.
    chains: Mutex<HashMap<TeamId, StampedChain>>,
    /// The content key of this connection per team, with the epoch it is wrapped to (SPEC.md
    /// §15.3 "Keyed batches"): drawn and sealed once, so sealing a batch is one AEAD pass.
    content_keys: Mutex<HashMap<TeamId, ConnKey>>,
    /// Served team sessions not yet in the audit log, and how many fetches are being answered:
    /// the log is written in one update per [`AUDIT_BATCH`] sessions, when the last fetch in
    /// flight ends (before its `End`), and when the connection closes (SPEC.md §18.2).
    audit: Mutex<Vec<(SessionId, TeamId)>>,
    fetching: std::sync::atomic::AtomicUsize,
}

/// One fetch being answered on a connection (counted in `Conn::fetching` until it ends or
/// its stream is dropped).
struct Fetching<'a> {
    conn: &'a Conn,
    ended: bool,
}

impl<'a> Fetching<'a> {
    fn start(conn: &'a Conn) -> Fetching<'a> {
        conn.fetching
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Fetching { conn, ended: false }
    }

    /// Ends this fetch; how many others are still being answered.
    fn end(mut self) -> usize {
        self.ended = true;
        self.conn
            .fetching
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            - 1
    }
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.conn
                .fetching
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A verified team chain and the stamp it was loaded at.
type StampedChain = (Vec<u8>, Arc<TeamChain>);

/// A connection's content key for one team.
#[derive(Clone)]
struct ConnKey {
    epoch: u64,
    key: Arc<ContentKey>,
    wrapped: Arc<Vec<u8>>,
}

impl Conn {
    /// The team's verified chain: loaded when its stamp moved, else the one kept, shared (a
    /// clone per served session was most of a serving node's per-session cost).
    fn chain(&self, team: &TeamId) -> Result<Arc<TeamChain>, PeerError> {
        let stamp = team::chain_stamp(&self.store, team)?;
        let mut cache = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, chain)) = cache.get(team) {
            if *seen == stamp {
                return Ok(chain.clone());
            }
        }
        let chain = Arc::new(team::load(&self.store, team)?);
        cache.insert(*team, (stamp, chain.clone()));
        Ok(chain)
    }
}

impl Server {
    pub fn new(store: StoreHandle, identity: Arc<Identity>, log: EventLog) -> Server {
        Server {
            state: Arc::new(State {
                store,
                identity,
                log,
                gated: Mutex::new(HashMap::new()),
                limits: super::guard::Limits::default(),
                connections: super::guard::Connections::default(),
            }),
        }
    }

    /// The same server under other per-connection limits (tests shorten the waits).
    pub fn with_limits(mut self, limits: super::guard::Limits) -> Server {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.limits = limits;
        }
        self
    }

    fn log(&self, line: String) {
        tracing::info!("{line}");
        (self.state.log)(line);
    }

    async fn serve(&self, connection: Connection) {
        let peer = member_of(&connection.remote_id());
        let store = match tokio::task::block_in_place(|| self.state.store.get()) {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!("cannot open the store for a peer: {e}");
                connection.close(2u32.into(), b"store unavailable");
                return;
            }
        };
        let name = tokio::task::block_in_place(|| peer_name(&store, &peer));
        let conn = Arc::new(Conn {
            peer,
            name,
            store,
            view: OnceCell::new(),
            counters: Counters::serving(self.state.limits),
            chains: Mutex::new(HashMap::new()),
            content_keys: Mutex::new(HashMap::new()),
            audit: Mutex::new(Vec::new()),
            fetching: std::sync::atomic::AtomicUsize::new(0),
        });
        tracing::debug!(peer = %conn.name, "connected");
        let this = self.clone();
        let log: EventLog = Arc::new(move |line| this.log(line));
        // Bounded however many identities connect (SPEC.md §15.6): `peer_name` names members of
        // our teams; anyone else but our own machines counts as a stranger.
        let own = MemberId(self.state.identity.verifying_key().to_bytes());
        let stranger = conn.peer != own && conn.name == format!("node {}", conn.peer.short());
        let Some(_slot) = self
            .state
            .connections
            .admit(&connection, &conn.name, stranger, &log)
        else {
            return;
        };
        let name = conn.name.clone();
        let limits = self.state.limits;
        accept_streams(connection, name, log, limits, |send, recv| {
            let this = self.clone();
            let conn = conn.clone();
            async move {
                let mut stream = Stream {
                    send,
                    recv,
                    peer: &conn.name,
                    counters: &conn.counters,
                };
                this.handle(&conn, &mut stream).await
            }
        })
        .await;
        // Fetches whose entries waited for a batch (streams cut before their end).
        tokio::task::block_in_place(|| self.write_audit(&conn));
    }

    /// Writes the served sessions waiting in `conn`'s audit batch.
    fn write_audit(&self, conn: &Conn) {
        let served = std::mem::take(&mut *conn.audit.lock().unwrap_or_else(|p| p.into_inner()));
        if !served.is_empty() {
            crate::audit::served(
                &conn.store,
                &self.state.identity,
                &conn.peer,
                &conn.name,
                &served,
            );
        }
    }

    async fn view(&self, conn: &Conn) -> Result<Arc<View>, PeerError> {
        conn.view
            .get_or_try_init(|| async {
                tokio::task::block_in_place(|| {
                    // Kept current across connections: a no-op fetch costs one ref read here.
                    access::view_for_cached(
                        &conn.store,
                        &self.state.identity,
                        &conn.peer,
                        crate::now_ms(),
                    )
                })
            })
            .await
            .cloned()
            .map_err(PeerError::from)
    }

    async fn handle(&self, conn: &Conn, stream: &mut Stream<'_>) -> Result<(), PeerError> {
        let request: Request = stream.expect("request").await?;
        match request {
            Request::Reconcile { first } => self.reconcile(conn, stream, first).await,
            Request::Fetch { item, have_head } => self.fetch(conn, stream, item, have_head).await,
            Request::Session { id } => self.session(conn, stream, id).await,
            Request::Push {
                entry,
                expected,
                ids,
                ref_signature,
                shares,
            } => {
                self.push(conn, stream, entry, expected, ids, ref_signature, shares)
                    .await
            }
            Request::Join { request } => self.join(conn, stream, request).await,
            Request::Audit { team, have } => {
                let answer = tokio::task::block_in_place(|| {
                    crate::audit::serve(&conn.store, &self.state.identity, &conn.peer, &team, &have)
                });
                match answer {
                    Ok(entries) => stream.write(&Response::Audit(entries)).await?,
                    Err(reason) => return refuse(stream, &reason).await,
                }
                stream.finish();
                Ok(())
            }
            Request::Bury(_) | Request::Retention => refuse(
                stream,
                "this is a teammate's node, not a relay: it takes tombstones by asking for them",
            )
            .await,
            Request::Tombstones => {
                // SPEC §3.5
                let answer = tokio::task::block_in_place(|| {
                    super::tombstone_sync::serve(&conn.store, &self.state.identity, &conn.peer)
                });
                match answer {
                    Ok(items) => stream.write(&Response::Tombstones(items)).await?,
                    Err(reason) => return refuse(stream, &reason).await,
                }
                stream.finish();
                Ok(())
            }
            Request::From { .. } | Request::Done | Request::Upload(_) => {
                Err(stream.protocol("a stream began with a continuation frame"))
            }
            Request::Hello
            | Request::Register { .. }
            | Request::Manifests { .. }
            | Request::Deposit(_)
            | Request::JoinSealed { .. }
            | Request::Mailbox { .. }
            | Request::Answer { .. }
            | Request::AuditDeposit { .. } => refuse(
                stream,
                "this is a teammate's node, not a relay; use `tapes fetch`/`tapes push` with it",
            )
            .await,
        }
    }

    async fn reconcile(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        first: Vec<u8>,
    ) -> Result<(), PeerError> {
        let view = self.view(conn).await?;
        if view.items.is_empty()
            && !tokio::task::block_in_place(|| is_teammate(conn, &self.state.identity))?
        {
            stream
                .write(&Response::Refused {
                    reason: "this node shares nothing with you: you are in none of its teams and it has no public shares; ask a member to invite you (`tapes team invite`)".into(),
                })
                .await?;
            stream.finish();
            return Ok(());
        }
        answer_reconcile(stream, view.ids(), first).await
    }

    async fn fetch(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        item: ItemId,
        have_head: Option<NodeId>,
    ) -> Result<(), PeerError> {
        let view = self.view(conn).await?;
        let Some(found) = view.items.get(&item).cloned() else {
            return refuse(stream, "that item is not shared with you (or no longer)").await;
        };
        match found {
            ViewItem::Manifest { team, version } => {
                let chain = tokio::task::block_in_place(|| team::load(&conn.store, &team))?;
                let Some(signed) = chain.versions().get(version as usize) else {
                    return refuse(stream, "that manifest is gone").await;
                };
                stream
                    .write(&Response::Manifest {
                        team,
                        manifest: signed.encode(),
                    })
                    .await?;
            }
            ViewItem::Share { key } => {
                let raw = tokio::task::block_in_place(|| conn.store.storage().get_ref(&key))
                    .map_err(StoreError::from)?;
                let Some(raw) = raw else {
                    return refuse(stream, "that share is gone").await;
                };
                stream.write(&Response::Share(raw)).await?;
            }
            ViewItem::Session { id, grant } => {
                if !self
                    .send_session(conn, stream, id, Some(grant), have_head, true)
                    .await?
                {
                    return refuse(stream, GATED).await;
                }
            }
        }
        stream.finish();
        Ok(())
    }

    /// True when one of our own shared sessions may be served as it is now: what was added
    /// since the share passes the secret gate (SPEC §11.2). Sessions of others that this node
    /// passes on were gated by their owners.
    fn passes_gate(&self, conn: &Conn, id: &SessionId, grant: &Grant) -> Result<bool, PeerError> {
        let store = &conn.store;
        let me = MemberId(self.state.identity.verifying_key().to_bytes());
        let Some(record) = store.session(id)? else {
            return Ok(true);
        };
        if record.owner.is_some_and(|owner| owner != me) {
            return Ok(true);
        }
        let audience = match grant {
            Grant::Team(team) => crate::share::Audience::Team(*team),
            Grant::Public => crate::share::Audience::Public,
        };
        let key = crate::share::share_key(id, &audience);
        let Some(raw) = store.storage().get_ref(&key).map_err(StoreError::from)? else {
            return Ok(true);
        };
        let share = SignedShare::decode_stored(&raw)
            .map_err(|e| PeerError::Local(format!("the share record of {}: {e}", id.short())))?;
        if share.record.head == record.head {
            return Ok(true);
        }
        let cached = self
            .state
            .gated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(*id, record.head))
            .copied();
        if let Some(passes) = cached {
            return Ok(passes);
        }
        let findings =
            crate::share::gate::served(store, &crate::share::gate::SharedAs::from(&share.record))
                .map_err(|e| PeerError::Local(e.to_string()))?;
        let passes = findings.is_empty();
        if !passes {
            self.log(format!(
                "not serving session {} to {}: {} in what was added since it was shared; `tapes share {} --dry-run` lists them",
                id.short(),
                conn.name,
                crate::views::render::plural(findings.len(), "possible secret"),
                id.short()
            ));
        }
        self.state
            .gated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((*id, record.head), passes);
        Ok(passes)
    }

    /// Sends a session's entry and the missing part of its chain. `grant: None` is the peer's
    /// own session (plain, and not gated); otherwise false, and nothing sent, when our own
    /// session does not pass the secret gate as it is now.
    async fn send_session(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        id: SessionId,
        grant: Option<Grant>,
        have_head: Option<NodeId>,
        served: bool,
    ) -> Result<bool, PeerError> {
        let store = &conn.store;
        let fetching = served.then(|| Fetching::start(conn));
        // Everything this stream needs from the store, read in one go: handing the runtime
        // thread over (`block_in_place`) once per read cost more than the reads on small
        // sessions (the serving side spent a fifth of its time switching threads).
        let prepared = tokio::task::block_in_place(|| -> Result<_, PeerError> {
            if let Some(grant) = &grant {
                if !self.passes_gate(conn, &id, grant)? {
                    return Ok(Err(()));
                }
            }
            let Some(entry) = access::session_entry(store, &self.state.identity, &id)? else {
                return Ok(Ok(None));
            };
            // Our own store's entry: its signature was checked when it was stored, and the
            // receiver checks it again; here only the head is needed.
            let record = SessionRecord::decode(&entry.record)
                .map_err(|e| PeerError::Local(format!("the stored session record: {e}")))?;
            let (chain, from_head) = walk(store, &record.head, have_head.as_ref())?;
            let key = match grant {
                Some(Grant::Team(team)) => Some((team, self.content_key(conn, &team)?)),
                _ => None,
            };
            // Node metadata leaves with the project's name, not the working directory (§11.3).
            let paths = crate::share::outgoing::Outgoing::new(
                crate::share::outgoing::PathPolicy::load(store)?,
            );
            Ok(Ok(Some((entry, chain, from_head, key, paths))))
        })?;
        let Ok(prepared) = prepared else {
            return Ok(false);
        };
        let Some((entry, mut chain, from_head, key, mut paths)) = prepared else {
            refuse(stream, "that session is gone").await?;
            return Ok(true);
        };
        let ids: Vec<NodeId> = chain.items.iter().map(|(id, _)| *id).collect();
        stream
            .write(&Response::Session {
                entry,
                ids: ids.clone(),
                from_head,
            })
            .await?;
        let start = if from_head {
            0
        } else {
            match stream.read::<Request>("from").await? {
                Some(Request::From { index }) => (index as usize).min(ids.len()),
                None => return Ok(true),
                Some(_) => return Err(stream.protocol("expected `from`")),
            }
        };
        let mut sealer = key.map(|(team, key)| Keyed {
            team,
            session: id,
            key,
            sent_key: false,
            index: 0,
        });
        // Each object is written once, into the frame that is sent (SPEC.md §15.2).
        let mut frame = BatchFrame::new(take_buffer());
        for (id, held) in std::mem::take(&mut chain.items).into_iter().skip(start) {
            let read;
            let bytes = match held {
                Some(at) => chain.bytes(&at),
                None => {
                    read = tokio::task::block_in_place(|| store.storage().get_object(&id))
                        .map_err(StoreError::from)?
                        .ok_or(StoreError::MissingNode(id))?;
                    &read[..]
                }
            };
            paths.push_into(bytes, &mut frame);
            if frame.size() >= BATCH_BYTES {
                self.send_batch(stream, &mut sealer, &mut frame).await?;
            }
        }
        if !frame.is_empty() {
            self.send_batch(stream, &mut sealer, &mut frame).await?;
        }
        give_back(frame.into_buffer());
        // Logged before `End`, so the stream's task ends when the peer has its answer: a
        // client opens its next stream on reading `End`, and work after it would keep this
        // stream counted as open meanwhile (SPEC §15.6). A pull of one's own session is not
        // a fetch by someone else and is not recorded. The audit entry joins the connection's
        // batch, written in one update when it is full or when this is the last fetch in
        // flight: when the peer holds its last `End`, every fetch it made is in the log.
        if let Some(fetching) = fetching {
            self.log(format!("{} fetched session {}", conn.name, id.short()));
            let full = {
                let mut batch = conn.audit.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(Grant::Team(team)) = grant {
                    batch.push((id, team));
                }
                batch.len() >= AUDIT_BATCH
            };
            // On this thread: one ref update per batch (about a millisecond of signing), cheaper
            // than handing the thread over.
            if fetching.end() == 0 || full {
                self.write_audit(conn);
            }
        }
        stream.write(&Response::End).await?;
        Ok(true)
    }

    async fn send_batch(
        &self,
        stream: &mut Stream<'_>,
        sealer: &mut Option<Keyed>,
        frame: &mut BatchFrame,
    ) -> Result<(), PeerError> {
        let len = match sealer {
            None => frame.plain().len(),
            Some(keyed) => {
                if !keyed.sent_key {
                    stream
                        .write(&Response::ContentKey {
                            team: keyed.team,
                            wrapped: keyed.key.wrapped.to_vec(),
                        })
                        .await?;
                    keyed.sent_key = true;
                }
                let mut nonce = [0u8; NONCE_LEN];
                getrandom::fill(&mut nonce)
                    .map_err(|e| PeerError::Local(format!("no randomness for a nonce: {e}")))?;
                let sealed = frame.keyed(
                    &keyed.key.key,
                    &keyed.team,
                    &keyed.session,
                    keyed.index,
                    &nonce,
                );
                let len = sealed.len();
                keyed.index += 1;
                len
            }
        };
        // The frame ends its buffer; the buffer is lent to QUIC until the peer has it.
        let buffer = std::mem::replace(frame, BatchFrame::new(take_buffer())).into_buffer();
        let start = buffer.len() - len;
        stream.write_lent(lend(buffer, start)).await
    }

    /// This connection's content key for `team`: drawn and sealed to the team's current epoch
    /// on first use, and again when the epoch moved (a rotation owed is made first, as any
    /// sealing does, SPEC.md §9.6).
    fn content_key(&self, conn: &Conn, team: &TeamId) -> Result<ConnKey, PeerError> {
        let chain = conn.chain(team)?;
        let epoch = chain.head().manifest.epoch;
        let mut keys = conn.content_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = keys.get(team) {
            if held.epoch == epoch && chain.rotation_owed().is_empty() {
                return Ok(held.clone());
            }
        }
        // Sealing may make a rotation that is owed first, which moves the chain.
        let mut chain = TeamChain::clone(&chain);
        let mut raw = [0u8; KEY_LEN];
        getrandom::fill(&mut raw)
            .map_err(|e| PeerError::Local(format!("no randomness for a content key: {e}")))?;
        let wrapped = team::seal_encoded_for(
            &conn.store,
            &self.state.identity,
            &mut chain,
            &raw,
            crate::now_ms(),
        )?;
        let key = ContentKey::new(&raw, &wrapped)
            .map_err(|e| PeerError::Local(format!("a content key: {e}")))?;
        let held = ConnKey {
            epoch: chain.head().manifest.epoch,
            key: Arc::new(key),
            wrapped: Arc::new(wrapped),
        };
        keys.insert(*team, held.clone());
        Ok(held)
    }

    async fn session(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        id: SessionId,
    ) -> Result<(), PeerError> {
        let view = self.view(conn).await?;
        let entry = tokio::task::block_in_place(|| {
            access::session_entry(&conn.store, &self.state.identity, &id)
        })?;
        let allowed = entry
            .as_ref()
            .is_some_and(|e| e.signer == conn.peer || view.grant_for(&id).is_some());
        stream
            .write(&Response::Entry(if allowed { entry } else { None }))
            .await?;
        if allowed {
            // A pull of one's own session continues like a fetch.
            if let Some(Request::Fetch { have_head, .. }) = stream.read("fetch").await? {
                // Team content stays sealed even on a pull; anything else is the peer's own.
                let grant = view.grant_for(&id).filter(|g| matches!(g, Grant::Team(_)));
                if !self
                    .send_session(conn, stream, id, grant, have_head, false)
                    .await?
                {
                    return refuse(stream, GATED).await;
                }
            }
        }
        stream.finish();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn push(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        entry: tapes_protocol::bundle::SessionEntry,
        expected: Option<NodeId>,
        ids: Vec<NodeId>,
        ref_signature: Vec<u8>,
        shares: Vec<Vec<u8>>,
    ) -> Result<(), PeerError> {
        if !tokio::task::block_in_place(|| is_teammate(conn, &self.state.identity))? {
            return refuse(stream, "you are in none of this node's teams, so it takes no pushes from you; ask a member to invite you (`tapes team invite`)").await;
        }
        if entry.signer != conn.peer {
            return refuse(
                stream,
                "a node pushes only its own sessions; fork it to push your own copy",
            )
            .await;
        }
        if tokio::task::block_in_place(|| {
            crate::session::tombstone::is_removed(&conn.store, &entry.id)
        })? {
            return refuse(stream, "this session was removed on this node (`tapes rm`); its owner there can restore it with `tapes rm --undo`").await;
        }
        let record = check_entry(&entry).map_err(|why| PeerError::BadObject {
            peer: conn.name.clone(),
            what: "session record",
            id: entry.id.short(),
            why: why.to_string(),
        })?;
        if ids.last() != Some(&record.head) && !(ids.is_empty() && expected == Some(record.head)) {
            return Err(stream.protocol("the pushed ids do not end at the record's head"));
        }
        let Ok(signature) = <[u8; 64]>::try_from(ref_signature.as_slice()) else {
            return Err(stream.protocol("a ref signature is 64 bytes"));
        };
        let mut check = ChainCheck::new(ids, 0, expected);
        let mut rings = Rings::default();
        let mut objects: Vec<StoredObject> = Vec::new();
        loop {
            match stream.expect::<Request>("upload").await? {
                Request::Upload(batch) => {
                    let list = tokio::task::block_in_place(|| {
                        rings.open(&conn.store, &self.state.identity, batch)
                    })
                    .map_err(|why| PeerError::BadObject {
                        peer: conn.name.clone(),
                        what: "sealed batch of session",
                        id: entry.id.short(),
                        why,
                    })?;
                    for bytes in list {
                        let object =
                            check
                                .check(bytes)
                                .map_err(|(id, why)| PeerError::BadObject {
                                    peer: conn.name.clone(),
                                    what: "node",
                                    id,
                                    why,
                                })?;
                        objects.push(object);
                    }
                }
                Request::Done => break,
                _ => return Err(stream.protocol("expected objects or `done`")),
            }
        }
        if !check.is_complete() {
            return Err(stream.protocol("fewer objects than announced"));
        }
        let ref_sig = RefSignature {
            signer: conn.peer,
            signature,
        };
        // The owner's signature over the record moves with the record (so this node can serve
        // the session on, and no reader sees a record without its signature).
        let record_sig = RefSignature {
            signer: entry.signer,
            signature: entry.signature.as_slice().try_into().unwrap_or([0; 64]),
        };
        let result = tokio::task::block_in_place(|| {
            let key = signature_key(&entry.id);
            let current = conn
                .store
                .storage()
                .get_ref(&key)
                .map_err(StoreError::from)?;
            let with = [RefUpdate {
                key,
                expected: current,
                new: Some(encode_signature(&record_sig)),
            }];
            Ok::<_, PeerError>(apply_push(
                &conn.store,
                &conn.name,
                &entry.id,
                expected.as_ref(),
                &objects,
                &record,
                &ref_sig,
                &with,
            ))
        })?;
        let answer = match result {
            Ok(moved) => {
                tokio::task::block_in_place(|| {
                    store_pushed_shares(&conn.store, &entry.id, &entry.signer, &shares)
                })?;
                // A retried push of what is already here stored nothing new.
                let nodes = if moved { objects.len() } else { 0 };
                self.log(format!(
                    "{} pushed session {} ({})",
                    conn.name,
                    entry.id.short(),
                    crate::views::render::plural(nodes, "new node")
                ));
                Response::Pushed {
                    nodes: nodes as u64,
                }
            }
            Err(RemoteError::Conflict { current, .. }) => Response::Conflict { current },
            Err(e) => Response::Refused {
                reason: e.to_string(),
            },
        };
        stream.write(&answer).await?;
        stream.finish();
        Ok(())
    }

    async fn join(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        request: Vec<u8>,
    ) -> Result<(), PeerError> {
        let request: JoinRequest = tapes_protocol::sync::decode_payload(&request, "join request")
            .map_err(|e| stream.protocol(e))?;
        if request.body.member.id != conn.peer {
            return refuse(
                stream,
                "a join request must come from the node that signed it",
            )
            .await;
        }
        let response = tokio::task::block_in_place(|| {
            team::accept_join(&conn.store, &self.state.identity, &request, crate::now_ms())
        })?;
        if matches!(
            response,
            tapes_protocol::join::JoinResponse::Accepted { .. }
        ) {
            tokio::task::block_in_place(|| {
                crate::audit::membership(
                    &conn.store,
                    &self.state.identity,
                    &request.body.team,
                    tapes_protocol::audit::AuditAction::Join,
                    &conn.peer,
                    &request.body.member.name,
                )
            }); // SPEC §18
        }
        match &response {
            tapes_protocol::join::JoinResponse::Accepted { .. } => self.log(format!(
                "{} ({}) joined team {}",
                request.body.member.name,
                conn.peer.short(),
                request.body.team.short()
            )),
            tapes_protocol::join::JoinResponse::Refused(why) => self.log(format!(
                "refused a join request from {}: {why:?}",
                conn.peer.short()
            )),
        }
        stream
            .write(&Response::Join(
                postcard::to_stdvec(&response).expect("postcard encoding to a Vec cannot fail"),
            ))
            .await?;
        stream.finish();
        Ok(())
    }
}

impl ProtocolHandler for Server {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        self.serve(connection).await;
        Ok(())
    }
}

pub(crate) use super::guard::accept_streams;

/// The answering side of a reconciliation over `ids`, after the client's opening `first`.
pub(crate) async fn answer_reconcile(
    stream: &mut Stream<'_>,
    ids: Vec<ItemId>,
    first: Vec<u8>,
) -> Result<(), PeerError> {
    let mut reconciler = Reconciler::new(SortedIds::new(ids));
    let mut incoming = first;
    loop {
        let message = Message::decode(&incoming).map_err(|e| stream.protocol(e))?;
        let step = reconciler
            .respond(&message)
            .map_err(|e| stream.protocol(e))?;
        match step.reply {
            Some(reply) => {
                stream
                    .write(&Response::Reconcile {
                        message: reply.encode(),
                        done: step.done,
                    })
                    .await?
            }
            None => {
                stream
                    .write(&Response::Reconcile {
                        message: Vec::new(),
                        done: true,
                    })
                    .await?;
                break;
            }
        }
        match stream.read::<Request>("reconcile message").await? {
            Some(Request::Reconcile { first }) => incoming = first,
            None => break,
            Some(_) => return Err(stream.protocol("expected a reconcile message")),
        }
    }
    stream.finish();
    Ok(())
}

pub(crate) async fn refuse(stream: &mut Stream<'_>, reason: &str) -> Result<(), PeerError> {
    stream
        .write(&Response::Refused {
            reason: reason.to_string(),
        })
        .await?;
    stream.finish();
    Ok(())
}

/// Bytes of one chunk of a [`Walked`] chain: objects are gathered in chunks of this size (an
/// object larger gets a chunk of its own), so that holding a chain costs its size and at most
/// one chunk more, with no copy as it grows (one buffer grown by doubling held up to twice a
/// large session, and serving ones at once took the serving node past 250 MB).
const WALK_CHUNK: usize = 1 << 20;

/// A chain read for sending: its ids root first, each with where its bytes lie (chunk, range),
/// for the first [`HOLD_BYTES`] of them; the rest are read again when sent.
struct Walked {
    chunks: Vec<Vec<u8>>,
    items: Vec<(NodeId, Option<HeldAt>)>,
}

/// Where a held object lies in a [`Walked`] chain: its chunk and range.
type HeldAt = (usize, std::ops::Range<usize>);

impl Drop for Walked {
    fn drop(&mut self) {
        self.chunks.drain(..).for_each(give_back);
    }
}

impl Walked {
    fn bytes(&self, (chunk, range): &HeldAt) -> &[u8] {
        &self.chunks[*chunk][range.clone()]
    }

    /// Keeps `object`; where it lies.
    fn hold(&mut self, object: &[u8]) -> HeldAt {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= object.len());
        if !fits {
            // A buffer kept from earlier frames or chains when there is one (fresh memory is
            // a page fault per 4 KiB, the most of a serving node's system time).
            let mut chunk = take_buffer();
            chunk.reserve(object.len().max(WALK_CHUNK));
            self.chunks.push(chunk);
        }
        let chunk = self.chunks.len() - 1;
        let bytes = &mut self.chunks[chunk];
        bytes.extend_from_slice(object);
        (chunk, bytes.len() - object.len()..bytes.len())
    }
}

/// Walks the chain back from `head` until `stop` (exclusive) or the root. Returns it root
/// first, with the bytes held while the total stays small, and whether `stop` was found.
fn walk(store: &Store, head: &NodeId, stop: Option<&NodeId>) -> Result<(Walked, bool), StoreError> {
    let mut walked = Walked {
        chunks: Vec::new(),
        items: Vec::new(),
    };
    let mut next = Some(*head);
    let mut found = false;
    let mut reader = store.storage().chain_reader();
    let (mut object, mut held) = (Vec::new(), 0usize);
    while let Some(id) = next {
        if Some(&id) == stop {
            found = true;
            break;
        }
        object.clear();
        if !reader.read_into(&id, &mut object)? {
            return Err(StoreError::MissingNode(id));
        }
        next = StoredObject::parent_of(&object).map_err(|_| StoreError::MissingNode(id))?;
        held += object.len();
        let at = (held <= HOLD_BYTES).then(|| walked.hold(&object));
        walked.items.push((id, at));
    }
    walked.items.reverse();
    Ok((walked, found))
}

/// True when the peer is a current member of a team this node is in.
fn is_teammate(conn: &Conn, identity: &Identity) -> Result<bool, PeerError> {
    let me = MemberId(identity.verifying_key().to_bytes());
    Ok(team::list(&conn.store)?.iter().any(|chain| {
        let head = &chain.head().manifest;
        head.member(&me).is_some() && head.member(&conn.peer).is_some()
    }))
}

/// A peer's name as this node's teams know it, or its short id.
fn peer_name(store: &Store, peer: &MemberId) -> String {
    team::list(store)
        .ok()
        .and_then(|chains| {
            chains.iter().find_map(|c| {
                c.head()
                    .manifest
                    .member(peer)
                    .map(|m| format!("{} ({})", m.name, peer.short()))
            })
        })
        .unwrap_or_else(|| format!("node {}", peer.short()))
}

/// After a push lands: the share records that came with it.
fn store_pushed_shares(
    store: &Store,
    id: &SessionId,
    owner: &MemberId,
    shares: &[Vec<u8>],
) -> Result<(), PeerError> {
    for share in shares {
        if let Ok(decoded) = SignedShare::decode(share) {
            if decoded.record.session == *id && decoded.record.sharer == *owner {
                let _ = super::receive::apply_share(store, share);
            }
        }
    }
    store.storage().flush().map_err(StoreError::from)?;
    Ok(())
}

/// The state of one stream's keyed batches (SPEC.md §15.3): the key is sent before the first
/// batch, and batches are numbered from 0.
struct Keyed {
    team: TeamId,
    session: SessionId,
    key: ConnKey,
    sent_key: bool,
    index: u64,
}
