//! The dialling side of `tapes/sync/3`: fetch (reconcile, then fetch what is missing),
//! push, pull and join against one peer.
//!
//! Fetch runs in phases (SPEC.md §15.3): reconcile the item sets; fetch new manifests (so keys
//! of a rotated team are known before sealed nodes arrive); then sessions and shares, several
//! streams at once. Verified objects go to the fetch writer ([`super::fetch_writer`]), one thread
//! that stores them in large batches and moves each session's ref only after its nodes are
//! durable (group commit).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use iroh::endpoint::Connection;
use iroh::Endpoint;
use tapes_protocol::batch_key::ContentKey;
use tapes_protocol::bundle::SessionEntry;
use tapes_protocol::join::{JoinRequest, JoinResponse};
use tapes_protocol::manifest::SignedManifest;
use tapes_protocol::reconcile::{Message, Reconciler, SortedIds};
use tapes_protocol::sync::{
    encode_batch, item_kind, item_session, session_item, ItemId, ItemKind, Objects, Request,
    Response, ALPN,
};
use tapes_protocol::{MemberId, NodeId, SessionId, StoredObject, TeamId};
use tokio::sync::Semaphore;
use tokio::task::{block_in_place, JoinSet};

use super::addr::PeerAddr;
use super::fetch_writer::{WriteMsg, Writer, WriterTx};
use super::frames::{Counters, Incoming, Stream};
use super::receive::{
    apply_manifests, apply_shares, check_entry, first_missing, local_head, open_batch, ChainCheck,
    Received, Rings,
};
use super::server::BATCH_BYTES;
use super::PeerError;
use crate::identity::Identity;
use crate::session::SessionRecord;
use crate::share::access;
use crate::share::Audience;
use crate::store::Store;
use crate::team;

/// Streams fetched at once. Measured on 2 cores at 0.2 GB sealed: 3 streams 64 MB/s, 8 70,
/// 16 82, 32 74. More streams keep both sides busy between one session's round trips; past
/// 16 the connection's lock and the server's per-stream buffers cost more than they bring.
const PARALLEL: usize = 16;

/// Sessions whose objects are on their way at once, of the [`PARALLEL`] streams: the others
/// make their round trips (the ask, the listing of the chain, `from`) meanwhile. With every
/// stream receiving at once, QUIC interleaves them packet by packet, each stream's 1 MB batches
/// complete late and together, and both sides stall between the bursts (a third of 2 cores
/// sat idle). Measured at 1 GB on 2 cores (`cargo bench --bench sync`, ratio to iroh-blobs,
/// sealed / plain): with ~8.7 KB nodes (~0.9 MB sessions) 16 at once 50-57 % / 55-64 %, 8
/// 59 / 67, 6 71 / 74, 4 76 / 83, 3 75 / 81, 2 76 / 83; with ~1 KB nodes (~0.1 MB sessions)
/// the same within noise (16: 33 / 36, 8: 35 / 37, 4: 32 / 36).
const BULK: usize = 4;

/// How long a session waits for one of the [`BULK`] places before it receives anyway. A
/// serving node waits [`crate::peer::guard::Limits::request`] (30 s) for our `from`; on a
/// slow link, where sessions take seconds each, nothing is interleaved fast enough to stall
/// on, so the wait is kept well under that.
const BULK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection to one peer.
#[derive(Clone)]
pub struct PeerConn {
    conn: Connection,
    pub peer: MemberId,
    pub name: Arc<str>,
    pub counters: Arc<Counters>,
    /// The peer is a relay (SPEC.md §16): its view is asked for first, and it sends sealed
    /// entries and whole deposits.
    pub relay: bool,
    /// Places to receive a session's objects, shared by the connection's streams ([`BULK`]).
    bulk: Arc<Semaphore>,
}

/// How a connection reaches its peer (SPEC.md §15.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnPath {
    Direct { rtt: std::time::Duration },
    Relayed { rtt: std::time::Duration },
    Unknown,
}

impl ConnPath {
    /// `direct, 1.2 ms` / `relayed, 38 ms`.
    pub fn describe(&self) -> String {
        let ms = |rtt: &std::time::Duration| {
            let ms = rtt.as_secs_f64() * 1000.0;
            if ms < 10.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{ms:.0} ms")
            }
        };
        match self {
            ConnPath::Direct { rtt } => format!("direct, {}", ms(rtt)),
            ConnPath::Relayed { rtt } => format!("relayed, {}", ms(rtt)),
            ConnPath::Unknown => "path unknown".into(),
        }
    }
}

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchReport {
    pub new_sessions: usize,
    pub updated_sessions: usize,
    /// Sessions where we kept ours (our own, or we are ahead or diverged).
    pub kept: Vec<String>,
    pub nodes: usize,
    pub shares: usize,
    pub manifests: usize,
    /// Items not received, each with why: sessions a relay served that did not verify (a relay
    /// cannot check sealed content, so one member's bad deposit must not stop the others), and
    /// items the peer or relay refused one by one (a session waiting for its owner's secret
    /// gate, one unshared since the listing).
    pub rejected: Vec<String>,
    /// Round trips on the critical path: reconciliation, then one per fetch phase.
    pub round_trips: usize,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl FetchReport {
    pub fn is_empty(&self) -> bool {
        self.new_sessions + self.updated_sessions + self.shares + self.manifests == 0
    }
}

/// Dials `addr` on `endpoint`.
pub async fn connect(
    endpoint: &Endpoint,
    addr: &PeerAddr,
    name: &str,
) -> Result<PeerConn, PeerError> {
    let target = addr.endpoint_addr().map_err(|e| PeerError::Connect {
        peer: name.to_string(),
        why: e.to_string(),
    })?;
    let limit = super::network::connect_timeout();
    let tried = tried(&target);
    let conn = match tokio::time::timeout(limit, endpoint.connect(target, ALPN)).await {
        Ok(Ok(conn)) => conn,
        // The TLS handshake found no common ALPN: the peer speaks another `tapes/sync`.
        Ok(Err(e))
            if e.to_string()
                .contains("peer doesn't support any known protocol") =>
        {
            return Err(PeerError::ProtocolVersion {
                peer: name.to_string(),
                ours: String::from_utf8_lossy(ALPN).into_owned(),
            })
        }
        Ok(Err(e)) => {
            return Err(PeerError::Connect {
                peer: name.to_string(),
                why: format!("{e} (tried {tried})"),
            })
        }
        Err(_) => {
            return Err(PeerError::Connect {
                peer: name.to_string(),
                why: format!(
                    "no answer within {} s (tried {tried}; --timeout waits longer)",
                    limit.as_secs_f64()
                ),
            })
        }
    };
    Ok(PeerConn {
        conn,
        peer: addr.id,
        name: name.into(),
        counters: Arc::new(Counters::default()),
        relay: false,
        bulk: Arc::new(Semaphore::new(BULK)),
    })
}

/// What a dial tries, for error messages: the direct addresses, the relay, and address lookup.
fn tried(target: &iroh::EndpointAddr) -> String {
    let mut parts: Vec<String> = target.ip_addrs().map(|a| a.to_string()).collect();
    parts.extend(target.relay_urls().map(|u| format!("relay {u}")));
    match super::network::process_mode() {
        super::network::NetworkMode::Public => parts.push("address lookup by node id".into()),
        super::network::NetworkMode::Local if parts.is_empty() => {
            parts.push("mDNS on this LAN".into())
        }
        _ => {}
    }
    if parts.is_empty() {
        "nothing: no address, relay or lookup is known".into()
    } else {
        parts.join(", ")
    }
}

impl PeerConn {
    /// The same connection, talking to a relay.
    pub fn into_relay(mut self) -> PeerConn {
        self.relay = true;
        self
    }

    pub(crate) async fn stream(&self) -> Result<Stream<'_>, PeerError> {
        let (send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| PeerError::Connection {
                peer: self.name.to_string(),
                why: super::frames::lost(&e),
            })?;
        Ok(Stream {
            send,
            recv,
            peer: &self.name,
            counters: &self.counters,
        })
    }

    pub(crate) fn refused(&self, reason: String) -> PeerError {
        PeerError::Refused {
            peer: self.name.to_string(),
            reason,
        }
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }

    /// The path once hole punching had up to `limit` to find a direct one: a connection starts
    /// on the relay and moves to a direct path when both sides' NATs let it (what `tapes
    /// peers` reports; a fetch reports the path it ended on).
    pub async fn settled_path(&self, limit: std::time::Duration) -> ConnPath {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let path = self.path();
            if matches!(path, ConnPath::Direct { .. }) || tokio::time::Instant::now() >= deadline {
                return path;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The path the connection uses now: direct (after hole punching, or on the LAN) or
    /// through a relay, with its round-trip time.
    pub fn path(&self) -> ConnPath {
        let paths = self.conn.paths();
        let selected = paths
            .iter()
            .find(|p| p.is_selected())
            .or_else(|| paths.iter().next());
        match selected {
            Some(p) if p.is_relay() => ConnPath::Relayed { rtt: p.rtt() },
            Some(p) => ConnPath::Direct { rtt: p.rtt() },
            None => ConnPath::Unknown,
        }
    }

    /// Reconciles `ids` with the peer's view of us. Returns the items the peer has that we
    /// lack, those we have that it lacks, and the round trips it took.
    pub async fn reconcile(
        &self,
        ids: Vec<ItemId>,
    ) -> Result<(Vec<ItemId>, Vec<ItemId>, usize), PeerError> {
        let mut reconciler = Reconciler::new(SortedIds::new(ids));
        let opening = reconciler.initiate().encode();
        self.reconcile_from(opening, || Ok(Ok(reconciler))).await
    }

    /// Reconciles a kept view: its opening message is sent as read from the cache file's
    /// header, and the items are loaded only when the peer does not answer "in sync" (SPEC
    /// §15.2). A no-op fetch then never decodes its view.
    async fn reconcile_kept(
        &self,
        kept: &access::Kept,
        store: &Store,
        identity: &Identity,
    ) -> Result<(Vec<ItemId>, Vec<ItemId>, usize), PeerError> {
        let now = crate::now_ms();
        let Some(opening) = kept.opening().map(<[u8]>::to_vec) else {
            let view = block_in_place(|| kept.view(store, identity, now))?;
            return self.reconcile(view.ids()).await;
        };
        let sent = opening.clone();
        self.reconcile_from(opening, move || {
            let view = block_in_place(|| kept.view(store, identity, now))?;
            let mut reconciler = Reconciler::new(SortedIds::new(view.ids()));
            // The view loaded now is rebuilt when the store moved since the header was read;
            // its opening is then another message than the one the peer answered.
            if reconciler.initiate().encode() == sent {
                Ok(Ok(reconciler))
            } else {
                Ok(Err(view.ids()))
            }
        })
        .await
    }

    /// Sends `opening`, then goes on with the reconciler `make` returns (in the state of having
    /// sent that opening), called only if the peer's answer is not "in sync". When `make`
    /// returns a set instead (the one the opening was made from moved), reconciliation starts
    /// over with that set.
    async fn reconcile_from(
        &self,
        opening: Vec<u8>,
        make: impl FnOnce() -> Result<Result<Reconciler<SortedIds>, Vec<ItemId>>, PeerError>,
    ) -> Result<(Vec<ItemId>, Vec<ItemId>, usize), PeerError> {
        let mut stream = self.stream().await?;
        stream.write(&Request::Reconcile { first: opening }).await?;
        let mut round_trips = 1;
        let mut message = match self.reconcile_answer(&mut stream).await? {
            // No answer, or every range of the opening the same on both sides: in sync.
            Some(message) if !message.is_settled() => message,
            _ => {
                stream.finish();
                return Ok((Vec::new(), Vec::new(), round_trips));
            }
        };
        let mut reconciler = match make()? {
            Ok(reconciler) => reconciler,
            Err(ids) => {
                stream.finish();
                let (have, need, rounds) = Box::pin(self.reconcile(ids)).await?;
                return Ok((have, need, rounds + round_trips));
            }
        };
        let (mut have, mut need) = (Vec::new(), Vec::new());
        loop {
            let step = reconciler
                .respond(&message)
                .map_err(|e| stream.protocol(e))?;
            have.extend(step.have);
            need.extend(step.need);
            let Some(reply) = step.reply else { break };
            stream
                .write(&Request::Reconcile {
                    first: reply.encode(),
                })
                .await?;
            round_trips += 1;
            match self.reconcile_answer(&mut stream).await? {
                Some(next) => message = next,
                None => break,
            }
        }
        stream.finish();
        Ok((have, need, round_trips))
    }

    /// The peer's next reconciliation message; `None` when it has nothing more to say.
    async fn reconcile_answer(
        &self,
        stream: &mut Stream<'_>,
    ) -> Result<Option<Message>, PeerError> {
        let message = match stream.expect::<Response>("reconcile answer").await? {
            Response::Reconcile { message, .. } => message,
            Response::Refused { reason } => return Err(self.refused(reason)),
            _ => return Err(stream.protocol("expected a reconcile message")),
        };
        if message.is_empty() {
            return Ok(None);
        }
        Message::decode(&message)
            .map(Some)
            .map_err(|e| stream.protocol(e))
    }

    /// Fetches everything the peer may show us that we lack, verifies it and stores it.
    pub async fn fetch(
        &self,
        store: &Arc<Store>,
        identity: &Arc<Identity>,
    ) -> Result<FetchReport, PeerError> {
        Ok(self.fetch_and_list(store, identity).await?.0)
    }

    /// `tapes sync`: fetch, then push our own shared sessions the peer lacks or has older.
    pub async fn sync(
        &self,
        store: &Arc<Store>,
        identity: &Arc<Identity>,
    ) -> Result<(FetchReport, Vec<(SessionId, Result<u64, PeerError>)>), PeerError> {
        let me = MemberId(identity.verifying_key().to_bytes());
        let (report, need) = self.fetch_and_list(store, identity).await?;
        let mut sessions: Vec<SessionId> = need
            .iter()
            .filter(|i| item_kind(i) == Some(ItemKind::Session))
            .map(item_session)
            .collect();
        sessions.dedup();
        let mut pushed = Vec::new();
        for id in sessions {
            let Some(record) = block_in_place(|| store.session(&id))? else {
                continue;
            };
            if record.owner != Some(me) {
                continue;
            }
            let base = self.session(id).await?.map(|(_, theirs)| theirs.head);
            let result = self.push(store, identity, id, base).await;
            pushed.push((id, result));
        }
        Ok((report, pushed))
    }

    pub(crate) async fn fetch_and_list(
        &self,
        store: &Arc<Store>,
        identity: &Arc<Identity>,
    ) -> Result<(FetchReport, Vec<ItemId>), PeerError> {
        let me = MemberId(identity.verifying_key().to_bytes());
        let (kept, hello) = if self.relay {
            let teams = self.hello().await?;
            let kept = block_in_place(|| {
                access::view_for_teams_kept(store, identity, &teams, crate::now_ms())
            })?;
            (kept, 1)
        } else {
            let kept = block_in_place(|| {
                access::view_for_kept(store, identity, &self.peer, crate::now_ms())
            })?;
            (kept, 0)
        };
        let (have, need, rounds) = self.reconcile_kept(&kept, store, identity).await?;
        let mut report = FetchReport {
            round_trips: rounds + hello,
            ..FetchReport::default()
        };
        let (manifests, rest): (Vec<ItemId>, Vec<ItemId>) = have
            .into_iter()
            .partition(|i| item_kind(i) == Some(ItemKind::Manifest));
        if !manifests.is_empty() {
            report.round_trips += 1;
            let mut by_team: BTreeMap<TeamId, Vec<SignedManifest>> = BTreeMap::new();
            let mut tasks = JoinSet::new();
            let mut pending = manifests.into_iter();
            loop {
                // As many streams at once as the fetch below: a team with a long history has a
                // manifest per version, and a server cuts a peer that holds too many open.
                while tasks.len() < PARALLEL {
                    let Some(item) = pending.next() else { break };
                    let this = self.clone();
                    let (store, identity) = (store.clone(), identity.clone());
                    tasks.spawn(async move {
                        this.fetch_small(item, &store, &identity, &Mutex::new(Rings::default()))
                            .await
                    });
                }
                let Some(joined) = tasks.join_next().await else {
                    break;
                };
                if let Got::Manifest(team, bytes) =
                    joined.map_err(|e| self.refused(e.to_string()))??
                {
                    let signed =
                        SignedManifest::decode(&bytes).map_err(|e| PeerError::BadObject {
                            peer: self.name.to_string(),
                            what: "manifest of team",
                            id: team.short(),
                            why: e.to_string(),
                        })?;
                    by_team.entry(team).or_default().push(signed);
                }
            }
            for (team, list) in by_team {
                report.manifests += block_in_place(|| apply_manifests(store, &me, &team, list))
                    .map_err(|e| self.name_bad(e))?;
            }
        }
        if rest.is_empty() {
            self.finish_report(&mut report);
            return Ok((report, need));
        }
        report.round_trips += 1;
        let writer = Writer::start(store.clone(), me);
        // One set of team key rings for the whole fetch (as `Rings` means it), opened after the
        // manifests above were applied: loading and verifying a team chain and unwrapping its
        // key costs ~0.5 ms, which once per session was as much CPU as storing the session.
        let rings = Arc::new(Mutex::new(Rings::default()));
        let mut shares = Vec::new();
        let mut tasks = JoinSet::new();
        let mut pending = rest.into_iter();
        let mut needed_from = false;
        let mut failure = None;
        loop {
            while tasks.len() < PARALLEL {
                let Some(item) = pending.next() else { break };
                let this = self.clone();
                let store = store.clone();
                let identity = identity.clone();
                let writer = writer.sender();
                let rings = rings.clone();
                tasks.spawn(async move {
                    match item_kind(&item) {
                        Some(ItemKind::Session) => {
                            let have_head = local_head(&store, &item_session(&item))?;
                            let mut stream = this.stream().await?;
                            stream.write(&Request::Fetch { item, have_head }).await?;
                            this.receive_session(
                                &mut stream,
                                &store,
                                &identity,
                                &writer,
                                &rings,
                                have_head,
                                Some(item),
                            )
                            .await
                        }
                        _ => this.fetch_small(item, &store, &identity, &rings).await,
                    }
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined.map_err(|e| self.refused(e.to_string())) {
                Ok(Ok(Got::Share(bytes))) => shares.push(bytes),
                Ok(Ok(Got::Session { nodes, asked_from })) => {
                    report.nodes += nodes;
                    needed_from |= asked_from;
                }
                Ok(Ok(Got::Kept(id))) => report.kept.push(id),
                Ok(Ok(_)) => {}
                // A peer or relay that refuses one item (a session whose newest messages wait
                // for its owner's secret gate, one unshared since the listing) refuses that
                // item: the rest of the fetch goes on, and the caller reports it.
                Ok(Err(e @ PeerError::Refused { .. })) => {
                    tracing::debug!("{e}");
                    report.rejected.push(e.to_string());
                }
                Ok(Err(e @ PeerError::BadObject { .. })) if self.relay => {
                    // Reported by the caller with the rest of the report; a log line at the
                    // default level would print it a second time.
                    tracing::debug!("{e}");
                    report.rejected.push(e.to_string());
                }
                Ok(Err(e)) | Err(e) => {
                    // Stop asking; what is verified so far is still stored below.
                    failure.get_or_insert(e);
                    tasks.abort_all();
                }
            }
        }
        let outcome = block_in_place(|| writer.finish())?;
        report.new_sessions = outcome.new;
        report.updated_sessions = outcome.updated;
        report.kept.extend(outcome.kept);
        if let Some(e) = failure {
            return Err(e);
        }
        block_in_place(|| {
            for applied in apply_shares(store, &shares) {
                match applied {
                    Ok(Some(_)) => report.shares += 1,
                    Ok(None) => {}
                    Err(why) => tracing::warn!(peer = %self.name, "skipped a share record: {why}"),
                }
            }
            store.storage().flush()
        })
        .map_err(crate::store::StoreError::from)?;
        // What this fetch stored goes into the kept view now, so the next fetch does not
        // rebuild it (unless a team chain changed).
        block_in_place(|| access::keep_after_own_writes(store, identity, &kept, crate::now_ms()))?;
        if needed_from {
            report.round_trips += 1;
        }
        self.finish_report(&mut report);
        Ok((report, need))
    }

    fn finish_report(&self, report: &mut FetchReport) {
        report.bytes_sent = self.counters.sent();
        report.bytes_received = self.counters.received();
    }

    fn name_bad(&self, e: PeerError) -> PeerError {
        match e {
            PeerError::BadObject { what, id, why, .. } => PeerError::BadObject {
                peer: self.name.to_string(),
                what,
                id,
                why,
            },
            other => other,
        }
    }

    /// Fetches a share or manifest item.
    async fn fetch_small(
        &self,
        item: ItemId,
        store: &Store,
        identity: &Identity,
        rings: &Mutex<Rings>,
    ) -> Result<Got, PeerError> {
        let mut stream = self.stream().await?;
        stream
            .write(&Request::Fetch {
                item,
                have_head: None,
            })
            .await?;
        stream.finish();
        match stream.expect::<Response>("item").await? {
            Response::Share(bytes) => Ok(Got::Share(bytes)),
            Response::SealedShare { team, sealed } => {
                let plain = block_in_place(|| {
                    rings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .open_sealed(store, identity, &team, &sealed)
                })
                .map_err(|why| PeerError::BadObject {
                    peer: self.name.to_string(),
                    what: "sealed share record of session",
                    id: item_session(&item).short(),
                    why,
                })?;
                Ok(Got::Share(plain))
            }
            Response::Manifest { team, manifest } => Ok(Got::Manifest(team, manifest)),
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected a share or a manifest")),
        }
    }

    /// Receives one session after a `Fetch` (or a pull's `Fetch`) was written on `stream`.
    #[allow(clippy::too_many_arguments)]
    async fn receive_session(
        &self,
        stream: &mut Stream<'_>,
        store: &Arc<Store>,
        identity: &Arc<Identity>,
        writer: &WriterTx,
        rings: &Mutex<Rings>,
        have_head: Option<NodeId>,
        item: Option<ItemId>,
    ) -> Result<Got, PeerError> {
        let me = MemberId(identity.verifying_key().to_bytes());
        let bad = |what: &'static str, id: String, why: String| PeerError::BadObject {
            peer: self.name.to_string(),
            what,
            id,
            why,
        };
        let (entry, ids, from_head) = match stream.expect::<Response>("session").await? {
            Response::Session {
                entry,
                ids,
                from_head,
            } => (entry, ids, from_head),
            Response::SealedSession {
                team,
                entry,
                ids,
                from_head,
            } if self.relay => {
                let what = item.map(|i| item_session(&i).short()).unwrap_or_default();
                let plain = block_in_place(|| {
                    rings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .open_sealed(store, identity, &team, &entry)
                })
                .map_err(|why| bad("sealed record of session", what.clone(), why))?;
                let entry: SessionEntry = postcard::from_bytes(&plain)
                    .map_err(|e| bad("sealed record of session", what, e.to_string()))?;
                (entry, ids, from_head)
            }
            Response::Refused { reason } => return Err(self.refused(reason)),
            _ => return Err(stream.protocol("expected a session")),
        };
        let record = check_entry(&entry)
            .map_err(|why| bad("session record", entry.id.short(), why.to_string()))?;
        if let Some(item) = item {
            if item_session(&item) != entry.id {
                return Err(stream.protocol("the session is not the one asked for"));
            }
        }
        let ends_at_head = ids.last() == Some(&record.head)
            || (ids.is_empty() && from_head && have_head == Some(record.head));
        if !ends_at_head {
            return Err(stream.protocol("the announced chain does not end at the record's head"));
        }
        // Our own sessions come back only from a relay, and only when this machine has none
        // (a new machine restoring what it shared): a fetch never replaces our own work.
        if record.owner == Some(me) && item.is_some() && !(self.relay && have_head.is_none()) {
            stream.finish();
            return Ok(Got::Kept(format!("{} (yours)", entry.id.short())));
        }
        // The objects are asked for (or, from our head, read) once this session has a place.
        let _receiving = tokio::time::timeout(BULK_WAIT, self.bulk.acquire())
            .await
            .ok()
            .and_then(Result::ok);
        let (start, parent, asked_from) = if from_head && self.relay {
            // A relay announces the whole chain; we continue after our head.
            let at = have_head.and_then(|h| ids.iter().position(|id| *id == h));
            let Some(at) = at else {
                return Err(stream.protocol("the relay's chain does not contain our head"));
            };
            (at + 1, have_head, false)
        } else if from_head {
            (0, have_head, false)
        } else if have_head.is_some() {
            // Our head is not in their chain: they are behind, or the session diverged.
            stream.finish();
            return Ok(Got::Kept(format!(
                "{} (yours is ahead or diverged)",
                entry.id.short()
            )));
        } else {
            let k = first_missing(store, &ids)?;
            stream.write(&Request::From { index: k as u64 }).await?;
            (k, k.checked_sub(1).map(|i| ids[i]), true)
        };
        stream.finish();
        let mut check = ChainCheck::new(ids, start, parent);
        if self.relay {
            check = check.aligning();
        }
        let mut nodes = 0;
        // The stream's content key and the index of its next keyed batch (SPEC.md §15.3).
        let mut keyed: Option<(Arc<ContentKey>, TeamId, u64)> = None;
        loop {
            let objects = match stream.expect_objects("objects").await? {
                Incoming::PlainBatch(payload) => Received::plain_frame(payload)
                    .map_err(|why| bad("batch of session", entry.id.short(), why.to_string()))?,
                Incoming::KeyedBatch(payload) => {
                    let Some((key, team, index)) = keyed.as_mut() else {
                        return Err(bad(
                            "sealed batch of session",
                            entry.id.short(),
                            super::receive::KEYED_HERE.into(),
                        ));
                    };
                    let opened = Received::keyed_frame(payload, key, team, &entry.id, *index)
                        .map_err(|why| bad("sealed batch of session", entry.id.short(), why))?;
                    *index += 1;
                    opened
                }
                // A batch sealed to the team (a relay's): opened and checked on this task, as
                // every batch is (a few ms of CPU; handing the runtime thread over for it per
                // batch spread the fetch over dozens of threads, each keeping freed memory).
                Incoming::Other(Response::Objects(objects)) => {
                    open_batch(rings, store, identity, objects)
                        .map_err(|why| bad("sealed batch of session", entry.id.short(), why))?
                }
                Incoming::Other(Response::ContentKey { team, wrapped }) => {
                    // Not handed to a blocking thread: after the first stream of a connection
                    // this is a lookup, and the first unwrap is one X25519 agreement.
                    let key = rings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .content_key(store, identity, &team, &wrapped)
                        .map_err(|why| bad("content key of session", entry.id.short(), why))?;
                    keyed = Some((key, team, 0));
                    continue;
                }
                Incoming::Other(Response::End) => break,
                Incoming::Other(Response::Refused { reason }) => return Err(self.refused(reason)),
                Incoming::Other(_) => return Err(stream.protocol("expected objects")),
            };
            // Each object is checked where it lies in the frame (or the opened plaintext),
            // and the writer stores it from there.
            let batch = objects
                .check(&mut check)
                .map_err(|(id, why)| bad("node", id, why))?;
            nodes += batch.len();
            writer.objects(batch).await?;
        }
        if !check.is_complete() {
            return Err(stream.protocol("the chain ended before its head"));
        }
        writer.send(WriteMsg::Ref {
            entry: Box::new(entry),
            record: Box::new(record),
        })?;
        Ok(Got::Session { nodes, asked_from })
    }

    /// `tapes pull` of a session of one's own: its record and missing nodes.
    pub async fn pull(
        &self,
        store: &Arc<Store>,
        identity: &Arc<Identity>,
        id: SessionId,
    ) -> Result<FetchReport, PeerError> {
        let me = MemberId(identity.verifying_key().to_bytes());
        let mut stream = self.stream().await?;
        stream.write(&Request::Session { id }).await?;
        let entry = match stream.expect::<Response>("session entry").await? {
            Response::Entry(Some(entry)) => entry,
            Response::Entry(None) => {
                return Err(self.refused(format!(
                    "it has no session {} that you may pull",
                    id.short()
                )))
            }
            Response::Refused { reason } => return Err(self.refused(reason)),
            _ => return Err(stream.protocol("expected a session entry")),
        };
        if entry.signer != me {
            return Err(self.refused(format!(
                "session {} is not yours; `tapes fetch` brings what is shared with you",
                id.short()
            )));
        }
        let have_head = block_in_place(|| local_head(store, &id))?;
        stream
            .write(&Request::Fetch {
                item: session_item(&id, &entry.record),
                have_head,
            })
            .await?;
        let writer = Writer::spawn(store.clone(), me, true);
        let got = self
            .receive_session(
                &mut stream,
                store,
                identity,
                &writer.sender(),
                &Mutex::new(Rings::default()),
                have_head,
                None,
            )
            .await;
        let outcome = block_in_place(|| writer.finish())?;
        let mut report = FetchReport {
            new_sessions: outcome.new,
            updated_sessions: outcome.updated,
            kept: outcome.kept,
            ..FetchReport::default()
        };
        match got? {
            Got::Session { nodes, .. } => report.nodes = nodes,
            Got::Kept(why) => report.kept.push(why),
            _ => {}
        }
        self.finish_report(&mut report);
        Ok(report)
    }

    /// Pushes session `id` (ours) to the peer, expecting the peer to be at `base`.
    pub async fn push(
        &self,
        store: &Store,
        identity: &Identity,
        id: SessionId,
        base: Option<NodeId>,
    ) -> Result<u64, PeerError> {
        let plan = block_in_place(|| {
            crate::sync::transfer::plan_push(store, identity, &id, base.as_ref())
        })
        .map_err(PeerError::from_transfer)?;
        self.push_plan(store, identity, plan).await
    }

    /// Sends a push built by [`crate::sync::transfer::plan_push`], with the signed entry and share
    /// records around it, sealed to the team when the session is shared with one the peer is in.
    pub async fn push_plan(
        &self,
        store: &Store,
        identity: &Identity,
        plan: crate::sync::remote::PushPlan,
    ) -> Result<u64, PeerError> {
        let id = plan.session;
        let base = plan.base;
        let prepared = block_in_place(|| prepare_push(store, identity, &self.peer, &id))?;
        let mut stream = self.stream().await?;
        stream
            .write(&Request::Push {
                entry: prepared.entry,
                expected: base,
                ids: plan.objects.iter().map(|o| o.id).collect(),
                ref_signature: plan.signature.signature.to_vec(),
                shares: prepared.shares,
            })
            .await?;
        let sent = async {
            let mut chain = prepared.seal_to;
            let mut batch = Vec::new();
            let mut bytes = 0;
            let total = plan.objects.len();
            for (i, object) in plan.objects.into_iter().enumerate() {
                bytes += object.bytes.len();
                batch.push(object.bytes);
                if bytes >= BATCH_BYTES || i + 1 == total {
                    let list = std::mem::take(&mut batch);
                    bytes = 0;
                    let objects = match &mut chain {
                        None => Objects::Plain(list),
                        Some(chain) => {
                            let team = chain.team_id();
                            let sealed = block_in_place(|| {
                                team::seal_for(
                                    store,
                                    identity,
                                    chain,
                                    &encode_batch(&list),
                                    crate::now_ms(),
                                )
                            })?;
                            Objects::Sealed {
                                team,
                                sealed: sealed.encode(),
                            }
                        }
                    };
                    stream.write(&Request::Upload(objects)).await?;
                }
            }
            stream.write(&Request::Done).await?;
            stream.finish();
            Ok::<(), PeerError>(())
        }
        .await;
        if let Err(e @ PeerError::Connection { .. }) = sent {
            // A peer that refuses a push may stop reading before all of it arrived; its answer
            // is still on the stream and says why, which the broken write would hide.
            return match stream.expect::<Response>("push answer").await {
                Ok(Response::Refused { reason }) => Err(self.refused(reason)),
                Ok(Response::Conflict { current }) => {
                    Err(PeerError::conflict_at_peer(&self.name, &id, current))
                }
                _ => Err(e),
            };
        }
        sent?;
        match stream.expect::<Response>("push answer").await? {
            Response::Pushed { nodes } => Ok(nodes),
            Response::Conflict { current } => {
                Err(PeerError::conflict_at_peer(&self.name, &id, current))
            }
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected a push answer")),
        }
    }

    /// The verified objects of session `id`'s chain at the peer that `have` says we lack,
    /// root first (what `tapes pull` stores itself).
    pub async fn chain_objects(
        &self,
        id: SessionId,
        have: &mut dyn FnMut(&NodeId) -> bool,
    ) -> Result<Vec<StoredObject>, PeerError> {
        let mut stream = self.stream().await?;
        stream.write(&Request::Session { id }).await?;
        let entry = match stream.expect::<Response>("session entry").await? {
            Response::Entry(Some(entry)) => entry,
            Response::Entry(None) => return Ok(Vec::new()),
            Response::Refused { reason } => return Err(self.refused(reason)),
            _ => return Err(stream.protocol("expected a session entry")),
        };
        stream
            .write(&Request::Fetch {
                item: session_item(&id, &entry.record),
                have_head: None,
            })
            .await?;
        let ids = match stream.expect::<Response>("session").await? {
            Response::Session { ids, .. } => ids,
            Response::Refused { reason } => return Err(self.refused(reason)),
            _ => return Err(stream.protocol("expected a session")),
        };
        // Parents are stored before children, so what we have is a prefix of the chain.
        let start = ids.iter().position(|i| !have(i)).unwrap_or(ids.len());
        stream
            .write(&Request::From {
                index: start as u64,
            })
            .await?;
        stream.finish();
        let mut check = ChainCheck::new(ids, start, None);
        let mut out = Vec::new();
        loop {
            match stream.expect::<Response>("objects").await? {
                Response::Objects(Objects::Plain(list)) => {
                    for bytes in list {
                        out.push(check.check_id_only(bytes).map_err(|(id, why)| {
                            PeerError::BadObject {
                                peer: self.name.to_string(),
                                what: "node",
                                id,
                                why,
                            }
                        })?);
                    }
                }
                Response::Objects(Objects::Sealed { .. }) => {
                    return Err(stream.protocol("a pull of your own session came sealed"))
                }
                Response::End => break,
                Response::Refused { reason } => return Err(self.refused(reason)),
                _ => return Err(stream.protocol("expected objects")),
            }
        }
        Ok(out)
    }

    /// The peer's current record of a session, if it shows it to us.
    pub async fn session(
        &self,
        id: SessionId,
    ) -> Result<Option<(SessionEntry, SessionRecord)>, PeerError> {
        let mut stream = self.stream().await?;
        stream.write(&Request::Session { id }).await?;
        stream.finish();
        match stream.expect::<Response>("session entry").await? {
            Response::Entry(Some(entry)) => {
                let record = check_entry(&entry).map_err(|why| PeerError::BadObject {
                    peer: self.name.to_string(),
                    what: "session record",
                    id: id.short(),
                    why: why.to_string(),
                })?;
                Ok(Some((entry, record)))
            }
            Response::Entry(None) => Ok(None),
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected a session entry")),
        }
    }

    /// Sends a join request to the inviter and returns its answer.
    pub async fn join(&self, request: &JoinRequest) -> Result<JoinResponse, PeerError> {
        let mut stream = self.stream().await?;
        stream
            .write(&Request::Join {
                request: postcard::to_stdvec(request)
                    .expect("postcard encoding to a Vec cannot fail"),
            })
            .await?;
        stream.finish();
        match stream.expect::<Response>("join answer").await? {
            Response::Join(bytes) => tapes_protocol::sync::decode_payload(&bytes, "join answer")
                .map_err(|e| stream.protocol(e)),
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected a join answer")),
        }
    }
}

/// What one fetch stream brought.
enum Got {
    Share(Vec<u8>),
    Manifest(TeamId, Vec<u8>),
    Session { nodes: usize, asked_from: bool },
    Kept(String),
}

struct Prepared {
    entry: SessionEntry,
    shares: Vec<Vec<u8>>,
    seal_to: Option<tapes_protocol::team_chain::TeamChain>,
}

/// What the sync protocol sends around a [`crate::sync::remote::PushPlan`]: the signed entry, the
/// share records, and the team to seal to when the session is shared with a team the peer is in.
fn prepare_push(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    id: &SessionId,
) -> Result<Prepared, PeerError> {
    let entry = access::session_entry(store, identity, id)?
        .ok_or(crate::store::StoreError::SessionNotFound(id.short()))?;
    let mut shares = Vec::new();
    let mut seal_to = None;
    for (_, share) in
        crate::share::shares_of(store, id).map_err(|e| PeerError::Local(e.to_string()))?
    {
        if let Audience::Team(team) = share.record.audience {
            if share.is_live(crate::now_ms()) && seal_to.is_none() {
                if let Ok(chain) = team::load(store, &team) {
                    if chain.head().manifest.member(peer).is_some() {
                        seal_to = Some(chain);
                    }
                }
            }
        }
        shares.push(share.encode());
    }
    Ok(Prepared {
        entry,
        shares,
        seal_to,
    })
}
