//! The member's side of a relay (SPEC.md §16): register a team, keep the relay's manifest
//! chain current, deposit our shared sessions (sealed to the team, or plain when public),
//! collect join requests that waited there, and one `relay_sync` that does all of it after a
//! fetch. Fetching from a relay is the ordinary fetch with [`PeerConn::relay`] set.
//!
//! What we last deposited is remembered per relay in refs
//! `relay-sync/<relay hex>/<team hex | public>/<session hex>` → head ‖ share item, so
//! `tapes storage status` can count pending pushes without the network, and a deposit knows
//! which head the relay should be at.
//!
//! A relay that refuses one item refuses that item (§16.4): the sync reports it
//! ([`RelaySyncReport::failures`]) and goes on with the others; only a broken connection ends
//! it. A revoked or expired share travels as a *share-only* deposit (§16.3), which carries no
//! objects, so no quota stands between an unshare and the relay's public page. A
//! metadata-only share travels as a *summary deposit* (§11.4, §16.3): the share and its signed
//! summary, never a node; it replaces content the relay held for that scope (tracked with an
//! all-zero head, so a later share with content deposits the whole chain).

use std::collections::BTreeSet;
use std::fmt;

use tapes_protocol::join::{JoinRequest, JoinResponse};
use tapes_protocol::manifest::SignedManifest;
use tapes_protocol::sync::{
    encode_batch, item_kind, item_session, session_item, share_item, Deposit, ItemId, ItemKind,
    Objects, Request, Response, Scope,
};
use tapes_protocol::{MemberId, NodeId, SessionId, StoredObject, TeamId};
use tokio::task::block_in_place;

use super::client::{FetchReport, PeerConn};
use super::server::BATCH_BYTES;
use super::PeerError;
use crate::identity::Identity;
use crate::share::access;
use crate::share::{share_key, Audience, SignedShare};
use crate::store::backend::RefUpdate;
use crate::store::{Store, StoreError};
use crate::team;

/// What one `relay_sync` did.
#[derive(Debug, Default)]
pub struct RelaySyncReport {
    pub fetched: FetchReport,
    /// Deposits that landed: (session, scope, new nodes; 0 for records only).
    pub deposited: Vec<(SessionId, Scope, u64)>,
    /// Those of `deposited` that carried an ended share (records only): (session, scope,
    /// true when revoked by an unshare, false when it expired).
    pub ended: Vec<(SessionId, Scope, bool)>,
    /// Those of `deposited` that were summary deposits (a metadata-only share, §11.4): the
    /// relay holds the share and its summary, no node, and removed any content it held.
    pub summaries: Vec<(SessionId, Scope)>,
    /// Deposits that did not, with why. They stay pending and the next sync tries them again.
    pub failed: Vec<(SessionId, Scope, PeerError)>,
    /// Every other item that failed (the fetch, a team's manifests, a join answer), each
    /// once, with why. The sync went on without it.
    pub failed_items: Vec<(SyncItem, PeerError)>,
    pub manifests_sent: usize,
    /// Join requests this node accepted or refused at the relay.
    pub joins_answered: Vec<(TeamId, String, bool)>,
}

impl RelaySyncReport {
    /// Every item that failed, in the order the sync met them (deposits after the fetch and
    /// the manifests, before join answers), each once.
    pub fn failures(&self) -> Vec<(SyncItem, &PeerError)> {
        let (joins, before): (Vec<_>, Vec<_>) = self
            .failed_items
            .iter()
            .partition(|(item, _)| matches!(item, SyncItem::JoinAnswer { .. }));
        before
            .into_iter()
            .map(|(item, e)| (item.clone(), e))
            .chain(
                self.failed
                    .iter()
                    .map(|(session, scope, e)| (SyncItem::Deposit(*session, *scope), e)),
            )
            .chain(joins.into_iter().map(|(item, e)| (item.clone(), e)))
            .collect()
    }

    /// Whether anything failed.
    pub fn has_failures(&self) -> bool {
        !self.failed.is_empty() || !self.failed_items.is_empty()
    }

    /// Records a failed item once: the same item failing again later in the sync (a team's
    /// chain refused before join answers and again with them) is not reported twice.
    fn fail(&mut self, item: SyncItem, e: PeerError) {
        tracing::debug!(%item, "relay sync: {e}");
        if !self.failed_items.iter().any(|(i, _)| *i == item) {
            self.failed_items.push((item, e));
        }
    }
}

/// One thing a relay sync does that can fail on its own (SPEC.md §16.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncItem {
    /// Step 1, fetching what the relay has for us; the sync still deposited.
    Fetch,
    /// The manifests of a team that the relay lacks.
    Manifests(TeamId),
    /// The deposit of one of our sessions for one scope.
    Deposit(SessionId, Scope),
    /// Our answer to a join request that waited at the relay: the team, the joiner's name.
    JoinAnswer(TeamId, String),
}

impl fmt::Display for SyncItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncItem::Fetch => write!(f, "fetch"),
            SyncItem::Manifests(team) => write!(f, "manifests of team {}", team.short()),
            SyncItem::Deposit(session, Scope::Team(team)) => {
                write!(
                    f,
                    "deposit of {} for team {}",
                    session.short(),
                    team.short()
                )
            }
            SyncItem::Deposit(session, Scope::Public) => {
                write!(f, "deposit of {} for the public", session.short())
            }
            SyncItem::JoinAnswer(team, who) => {
                write!(
                    f,
                    "answer to the join request of {who} for team {}",
                    team.short()
                )
            }
        }
    }
}

/// Errors after which nothing more can be asked of this relay in this sync.
fn ends_sync(e: &PeerError) -> bool {
    matches!(
        e,
        PeerError::Bind(_)
            | PeerError::Connect { .. }
            | PeerError::RelayConnect { .. }
            | PeerError::Connection { .. }
            | PeerError::Protocol { .. }
    )
}

/// The state of our sessions against one relay (what `tapes storage status` prints).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayCounts {
    /// Our shared sessions whose last deposit matches what we have.
    pub synced: usize,
    /// Our shared sessions with changes the relay does not have yet.
    pub pending_push: usize,
}

fn scope_part(scope: &Scope) -> String {
    match scope {
        Scope::Team(t) => t.to_hex(),
        Scope::Public => "public".into(),
    }
}

fn tracking_key(relay: &MemberId, scope: &Scope, session: &SessionId) -> Vec<u8> {
    crate::store::keys::relay_sync(relay, &scope_part(scope), session)
}

/// What a deposit would say about one of our sessions for one scope.
struct Wanted {
    scope: Scope,
    session: SessionId,
    head: NodeId,
    share_raw: Vec<u8>,
    share: SignedShare,
    /// A metadata-only share (SPEC.md §11.4): the relay gets the share and its summary only
    /// (a summary deposit, §16.3), never a node.
    summary: bool,
}

/// The head a tracking ref names for a summary deposit: the relay holds no node of it.
const NO_CONTENT: NodeId = NodeId([0; 32]);

impl Wanted {
    fn share_item(&self) -> ItemId {
        if self.summary {
            // The item of a metadata-only share is over the record alone (§11.4).
            share_item(&self.session, &self.share.encode())
        } else {
            share_item(&self.session, &self.share_raw)
        }
    }

    fn tracking_value(&self) -> Vec<u8> {
        let head = if self.summary { NO_CONTENT } else { self.head };
        tracking_value(&head, &self.share_item())
    }

    /// Revoked or expired: the relay serves nothing of it, so it needs the share record only,
    /// never the session's nodes (§16.3, share-only deposits).
    fn ended(&self, now_ms: i64) -> bool {
        !self.share.is_live(now_ms)
    }
}

fn tracking_value(head: &NodeId, share: &ItemId) -> Vec<u8> {
    let mut v = head.0.to_vec();
    v.extend_from_slice(&share.0);
    v
}

/// What a tracking ref says the relay holds: its head, and the share item.
fn parse_tracked(tracked: Option<&[u8]>) -> (Option<NodeId>, Option<ItemId>) {
    let head = tracked
        .and_then(|t| t.get(..32))
        .and_then(NodeId::from_slice);
    let share = tracked
        .and_then(|t| t.get(32..64))
        .and_then(NodeId::from_slice);
    (head, share)
}

/// Our sessions shared with `teams` (the relay's teams we are in) or the public: what the
/// relay should hold from us.
fn wanted(store: &Store, me: &MemberId, teams: &[TeamId]) -> Result<Vec<Wanted>, PeerError> {
    let mut out = Vec::new();
    for share in crate::share::all_shares(store).map_err(|e| PeerError::Local(e.to_string()))? {
        let record = &share.record;
        if record.sharer != *me {
            continue;
        }
        let scope = match record.audience {
            Audience::Team(t) if teams.contains(&t) => Scope::Team(t),
            Audience::Team(_) => continue,
            Audience::Public => Scope::Public,
        };
        let Some(session) = store.session(&record.session)? else {
            continue;
        };
        if session.owner != Some(*me) {
            continue;
        }
        let Some(share_raw) = store
            .storage()
            .get_ref(&share_key(&record.session, &record.audience))
            .map_err(StoreError::from)?
        else {
            continue;
        };
        let Some(summary) = deposit_kind(store, &record.session, &record.audience, &share_raw)?
        else {
            continue;
        };
        out.push(Wanted {
            scope,
            session: record.session,
            head: session.head,
            share_raw,
            share,
            summary,
        });
    }
    Ok(out)
}

/// What a relay gets of a share of ours (SPEC.md §11.4): `Some(true)` the summary only (a
/// metadata-only share), `Some(false)` the content, `None` nothing (an ordinary share of a
/// project whose content stays here: it has no summary to send).
fn deposit_kind(
    store: &Store,
    session: &SessionId,
    audience: &Audience,
    share_raw: &[u8],
) -> Result<Option<bool>, PeerError> {
    if tapes_protocol::summary::has_tail(share_raw) {
        return Ok(Some(true));
    }
    let withheld = crate::share::content_withheld(store, session, audience)
        .map_err(|e| PeerError::Local(e.to_string()))?;
    Ok((!withheld).then_some(false))
}

/// Counts our shared sessions against what we last deposited at `relay` (no network).
pub fn counts(
    store: &Store,
    identity: &Identity,
    relay: &MemberId,
    teams: &[TeamId],
) -> Result<RelayCounts, PeerError> {
    let me = MemberId(identity.verifying_key().to_bytes());
    let now = crate::now_ms();
    let mut counts = RelayCounts::default();
    for w in wanted(store, &me, teams)? {
        let tracked = store
            .storage()
            .get_ref(&tracking_key(relay, &w.scope, &w.session))
            .map_err(StoreError::from)?;
        let synced = if w.ended(now) {
            // A revoked or expired share the relay never had needs no deposit; one it has
            // needs only its share record.
            match parse_tracked(tracked.as_deref()) {
                (None, _) => continue,
                (Some(_), share) => share == Some(w.share_item()),
            }
        } else {
            tracked.as_deref() == Some(w.tracking_value().as_slice())
        };
        if synced {
            counts.synced += 1;
        } else {
            counts.pending_push += 1;
        }
    }
    Ok(counts)
}

/// The relay's teams we are in, as last seen (refs `relay-teams/<relay hex>`).
pub fn known_teams(store: &Store, relay: &MemberId) -> Result<Vec<TeamId>, StoreError> {
    let raw = store
        .storage()
        .get_ref(&crate::store::keys::relay_teams(relay))?;
    Ok(raw
        .map(|b| b.chunks_exact(32).filter_map(TeamId::from_slice).collect())
        .unwrap_or_default())
}

fn remember_teams(store: &Store, relay: &MemberId, teams: &[TeamId]) -> Result<(), StoreError> {
    let key = crate::store::keys::relay_teams(relay);
    let current = store.storage().get_ref(&key)?;
    let new: Vec<u8> = teams.iter().flat_map(|t| t.0).collect();
    if current.as_deref() == Some(new.as_slice()) {
        return Ok(());
    }
    store.commit(
        &[],
        &[RefUpdate {
            key,
            expected: current,
            new: Some(new),
        }],
    )?;
    Ok(())
}

impl PeerConn {
    /// The relay's registered teams we are a current member of (1 round trip).
    pub async fn hello(&self) -> Result<Vec<TeamId>, PeerError> {
        let mut stream = self.stream().await?;
        stream.write(&Request::Hello).await?;
        stream.finish();
        match stream.expect::<Response>("relay hello").await? {
            Response::Relay { teams } => Ok(teams),
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected the relay's teams")),
        }
    }

    async fn expect_accepted(&self, request: Request) -> Result<(), PeerError> {
        let mut stream = self.stream().await?;
        stream.write(&request).await?;
        stream.finish();
        match stream.expect::<Response>("relay answer").await? {
            Response::Accepted => Ok(()),
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected the relay to accept or refuse")),
        }
    }

    /// `tapes relay register`: signs `team` onto the relay with its whole chain.
    pub async fn register(&self, store: &Store, team: &TeamId) -> Result<(), PeerError> {
        let chain = block_in_place(|| team::load(store, team))?;
        let manifests = chain
            .versions()
            .iter()
            .map(SignedManifest::encode)
            .collect();
        self.expect_accepted(Request::Register { manifests }).await
    }

    /// Sends the relay the manifests of `team` it lacks.
    pub async fn send_manifests(
        &self,
        team: TeamId,
        manifests: Vec<Vec<u8>>,
    ) -> Result<(), PeerError> {
        self.expect_accepted(Request::Manifests { team, manifests })
            .await
    }

    /// Leaves a join request at the relay, sealed to the inviter (`inviter`: its age recipient,
    /// from the invite's `age:` hint) so the relay never holds the invite secret. Returns the
    /// answer if the inviter already left one, else `None` (it waits there).
    pub async fn join_at_relay(
        &self,
        request: &JoinRequest,
        inviter: &age::x25519::Recipient,
    ) -> Result<Option<JoinResponse>, PeerError> {
        let plain = postcard::to_stdvec(request).expect("postcard encoding to a Vec cannot fail");
        let sealed = age::encrypt(inviter, &plain)
            .map_err(|e| PeerError::Local(format!("cannot seal the join request: {e}")))?;
        let mut stream = self.stream().await?;
        stream
            .write(&Request::JoinSealed {
                team: request.body.team,
                sealed,
            })
            .await?;
        stream.finish();
        match stream.expect::<Response>("join answer").await? {
            Response::Queued => Ok(None),
            Response::Join(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| stream.protocol(format!("a malformed join answer: {e}"))),
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected a join answer")),
        }
    }

    /// As an admin of `team`: accepts (or refuses, per the invite's rules) every join request
    /// waiting at the relay, and leaves the answers there. A request we cannot decide, a chain
    /// or an answer the relay refuses is recorded in `report`, and the other answers still go.
    async fn answer_joins(
        &self,
        store: &Store,
        identity: &Identity,
        team: TeamId,
        report: &mut RelaySyncReport,
    ) -> Result<(), PeerError> {
        let mut stream = self.stream().await?;
        stream.write(&Request::Mailbox { team }).await?;
        stream.finish();
        let list = match stream.expect::<Response>("waiting joins").await? {
            Response::Joins(list) => list,
            Response::Refused { .. } => return Ok(()),
            _ => return Err(stream.protocol("expected the waiting join requests")),
        };
        let mut answers = Vec::new();
        for (joiner, sealed) in list {
            // Sealed to whoever issued the invite: another admin's requests are not ours to
            // answer (we would not know the invite).
            let Ok(plain) = age::decrypt(identity.age_identity(), &sealed) else {
                continue;
            };
            let Ok(request) = postcard::from_bytes::<JoinRequest>(&plain) else {
                continue;
            };
            if request.body.member.id != joiner || request.body.team != team {
                continue;
            }
            let name = request.body.member.name.clone();
            match block_in_place(|| team::accept_join(store, identity, &request, crate::now_ms())) {
                Ok(response) => {
                    if matches!(
                        response,
                        tapes_protocol::join::JoinResponse::Accepted { .. }
                    ) {
                        crate::audit::membership(
                            store,
                            identity,
                            &team,
                            crate::audit::AuditAction::Join,
                            &joiner,
                            &name,
                        ); // SPEC §18
                    }
                    answers.push((request.body.member.id, name, response))
                }
                Err(e) => report.fail(SyncItem::JoinAnswer(team, name), e.into()),
            }
        }
        if answers.is_empty() {
            return Ok(());
        }
        // The relay learns the new members before they come to collect their answers. If it
        // refuses the chain (the members quota), the answers still go: a refusal reaches its
        // joiner, and an acceptance waits there until the chain is taken.
        let chain = block_in_place(|| team::load(store, &team))?;
        let manifests = chain
            .versions()
            .iter()
            .map(SignedManifest::encode)
            .collect();
        match self.send_manifests(team, manifests).await {
            Ok(()) => {}
            Err(e) if ends_sync(&e) => return Err(e),
            Err(e) => report.fail(SyncItem::Manifests(team), e),
        }
        for (joiner, name, response) in answers {
            let accepted = matches!(response, JoinResponse::Accepted { .. });
            let sent = self
                .expect_accepted(Request::Answer {
                    team,
                    joiner,
                    response: postcard::to_stdvec(&response)
                        .expect("postcard encoding to a Vec cannot fail"),
                })
                .await;
            match sent {
                Ok(()) => report.joins_answered.push((team, name, accepted)),
                Err(e) if ends_sync(&e) => return Err(e),
                Err(e) => report.fail(SyncItem::JoinAnswer(team, name), e),
            }
        }
        Ok(())
    }

    /// Deposits one of our sessions for `scope`, building on what the relay has. A relay that
    /// is at an older head of ours (a deposit cut short, or another machine of ours) is
    /// caught up from there.
    pub async fn deposit(
        &self,
        store: &Store,
        identity: &Identity,
        scope: Scope,
        session: SessionId,
    ) -> Result<u64, PeerError> {
        let me = MemberId(identity.verifying_key().to_bytes());
        let wanted =
            block_in_place(|| wanted_one(store, &me, scope, session))?.ok_or_else(|| {
                PeerError::Local(format!(
                    "session {} is not yours and shared there, so there is nothing to deposit",
                    session.short()
                ))
            })?;
        Ok(self
            .deposit_wanted(store, identity, &wanted, &Chains::default())
            .await?
            .unwrap_or(0))
    }

    /// Deposits what `wanted` describes and records it in the tracking ref. `None`: nothing
    /// had to be sent (a revoked or expired share the relay never had, or whose record it
    /// already holds). `chains` holds team chains loaded for sealing across deposits (loading
    /// verifies the whole chain, which costs more than sealing a small session).
    async fn deposit_wanted(
        &self,
        store: &Store,
        identity: &Identity,
        wanted: &Wanted,
        chains: &Chains,
    ) -> Result<Option<u64>, PeerError> {
        let key = tracking_key(&self.peer, &wanted.scope, &wanted.session);
        let tracked = block_in_place(|| store.storage().get_ref(&key)).map_err(StoreError::from)?;
        let (tracked_head, tracked_share) = parse_tracked(tracked.as_deref());
        let share_changed = tracked_share != Some(wanted.share_item());
        if wanted.ended(crate::now_ms()) {
            // The relay needs the share record only, and only if it holds the session.
            return match tracked_head {
                Some(at) if share_changed => {
                    self.deposit_share_only(store, identity, wanted, at, chains)
                        .await
                }
                _ => Ok(None),
            };
        }
        if wanted.summary {
            return self.deposit_summary(store, identity, wanted, chains).await;
        }
        // After a summary deposit the relay holds no node: the content goes whole.
        let from = tracked_head.filter(|h| *h != NO_CONTENT);
        match self
            .deposit_nodes(store, identity, wanted, from, chains)
            .await
        {
            Ok(nodes) => {
                block_in_place(|| set_tracking(store, &key, Some(wanted.tracking_value())))?;
                Ok(Some(nodes))
            }
            Err(refused @ PeerError::Refused { .. }) => {
                // The nodes were refused (a quota, say), but a changed share record (a new
                // expiry, title or note) still lands on its own; the nodes stay pending.
                if let (Some(at), true) = (tracked_head, share_changed) {
                    if let Err(e) = self
                        .deposit_share_only(store, identity, wanted, at, chains)
                        .await
                    {
                        if ends_sync(&e) {
                            return Err(e);
                        }
                        tracing::debug!("the share record alone did not land either: {e}");
                    }
                }
                Err(refused)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the nodes of `wanted` after `expected` (the tracked head), catching the relay up
    /// from its head when it is at an older one of ours (§16.3, catch-up retry).
    async fn deposit_nodes(
        &self,
        store: &Store,
        identity: &Identity,
        wanted: &Wanted,
        mut expected: Option<NodeId>,
        chains: &Chains,
    ) -> Result<u64, PeerError> {
        let session = wanted.session;
        let mut tries = 0;
        loop {
            tries += 1;
            match self
                .deposit_once(store, identity, wanted, expected, chains)
                .await
            {
                Ok(nodes) => return Ok(nodes),
                Err(PeerError::Conflict { .. }) if tries < 3 => {
                    // Where is the relay? Claiming it is at our head either lands (it is:
                    // only the records changed) or tells us its head; if that is on our chain,
                    // continue from there.
                    let probe = Payload::Nodes {
                        expected: Some(wanted.head),
                        objects: Vec::new(),
                    };
                    match self
                        .send_deposit(store, identity, wanted, probe, chains)
                        .await?
                    {
                        Ok(_) => return Ok(0),
                        Err(current) => {
                            let ours = match current {
                                None => true,
                                Some(h) => block_in_place(|| store.has_node(&h))?,
                            };
                            if !ours || current == expected {
                                return Err(self.conflict(&session, current));
                            }
                            expected = current;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A share-only deposit (§16.3): the relay keeps its head, entry and nodes of the session
    /// and takes our newer share record. `at` is the head we think it holds; as no node is
    /// sent, a conflict is retried at whatever head the relay names. `None`: the relay holds
    /// nothing of the session (there is nothing to revoke there, and the next deposit of a
    /// live share sends the whole chain).
    async fn deposit_share_only(
        &self,
        store: &Store,
        identity: &Identity,
        wanted: &Wanted,
        mut at: NodeId,
        chains: &Chains,
    ) -> Result<Option<u64>, PeerError> {
        let key = tracking_key(&self.peer, &wanted.scope, &wanted.session);
        for _ in 0..3 {
            let payload = Payload::ShareOnly { at };
            match self
                .send_deposit(store, identity, wanted, payload, chains)
                .await?
            {
                Ok(_) => {
                    let value = tracking_value(&at, &wanted.share_item());
                    block_in_place(|| set_tracking(store, &key, Some(value)))?;
                    return Ok(Some(0));
                }
                Err(None) => {
                    block_in_place(|| set_tracking(store, &key, None))?;
                    return Ok(None);
                }
                Err(Some(current)) if current != at => at = current,
                Err(current) => return Err(self.conflict(&wanted.session, current)),
            }
        }
        Err(self.conflict(&wanted.session, Some(at)))
    }

    /// A summary deposit (§11.4, §16.3): the relay replaces its record of the session for
    /// this scope with our metadata-only share and its summary, and removes any content it
    /// held. No node depends on it, so a lost race is simply sent again.
    async fn deposit_summary(
        &self,
        store: &Store,
        identity: &Identity,
        wanted: &Wanted,
        chains: &Chains,
    ) -> Result<Option<u64>, PeerError> {
        let key = tracking_key(&self.peer, &wanted.scope, &wanted.session);
        for _ in 0..3 {
            match self
                .send_deposit(store, identity, wanted, Payload::Summary, chains)
                .await?
            {
                Ok(_) => {
                    block_in_place(|| set_tracking(store, &key, Some(wanted.tracking_value())))?;
                    return Ok(Some(0));
                }
                Err(current) => tracing::debug!(
                    "summary deposit of {} raced another change (relay at {current:?}); again",
                    wanted.session.short()
                ),
            }
        }
        Err(self.conflict(&wanted.session, None))
    }

    fn conflict(&self, session: &SessionId, current: Option<NodeId>) -> PeerError {
        PeerError::conflict_at_relay(&self.name, session, current)
    }

    async fn deposit_once(
        &self,
        store: &Store,
        identity: &Identity,
        wanted: &Wanted,
        expected: Option<NodeId>,
        chains: &Chains,
    ) -> Result<u64, PeerError> {
        let objects = block_in_place(|| chain_after(store, &wanted.head, expected.as_ref()))?;
        let Some(objects) = objects else {
            return Err(self.conflict(&wanted.session, expected));
        };
        // The secret gate, for what was added or changed since the share passed it, and no
        // local paths (SPEC.md §11.2, §11.3).
        let objects = block_in_place(|| {
            crate::share::gate::deposit(
                store,
                &crate::share::gate::SharedAs::from(&wanted.share.record),
                objects,
            )
        })
        .map_err(|e| PeerError::Local(e.to_string()))?;
        match self
            .send_deposit(
                store,
                identity,
                wanted,
                Payload::Nodes { expected, objects },
                chains,
            )
            .await?
        {
            Ok(nodes) => Ok(nodes),
            Err(current) => Err(self.conflict(&wanted.session, current)),
        }
    }

    /// One deposit exchange. `Ok(Err(current))` is a lost compare-and-swap.
    async fn send_deposit(
        &self,
        store: &Store,
        identity: &Identity,
        wanted: &Wanted,
        payload: Payload,
        chains: &Chains,
    ) -> Result<Result<u64, Option<NodeId>>, PeerError> {
        // (expected, head, objects, the plain entry and its item; none for share-only)
        let (expected, head, objects, entry) = match payload {
            Payload::Nodes { expected, objects } => {
                let entry =
                    block_in_place(|| access::session_entry(store, identity, &wanted.session))?
                        .ok_or_else(|| {
                            PeerError::Local(format!("session {} is gone", wanted.session.short()))
                        })?;
                let item = session_item(&wanted.session, &entry.record);
                let plain =
                    postcard::to_stdvec(&entry).expect("postcard encoding to a Vec cannot fail");
                (expected, wanted.head, objects, Some((plain, item)))
            }
            Payload::ShareOnly { at } => (Some(at), at, Vec::new(), None),
            // A summary deposit: no entry, no ids, no expected head (§16.3).
            Payload::Summary => (None, NO_CONTENT, Vec::new(), None),
        };
        let mut chain = match wanted.scope {
            Scope::Team(team) => {
                let cached = chains
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&team);
                Some(match cached {
                    Some(chain) => chain,
                    None => block_in_place(|| team::load(store, &team))?,
                })
            }
            Scope::Public => None,
        };
        let mut seal = |bytes: &[u8]| -> Result<Vec<u8>, PeerError> {
            match &mut chain {
                None => Ok(bytes.to_vec()),
                Some(chain) => Ok(block_in_place(|| {
                    team::seal_for(store, identity, chain, bytes, crate::now_ms())
                })?
                .encode()),
            }
        };
        let (entry, session_item) = match entry {
            Some((plain, item)) => (seal(&plain)?, item),
            // Share-only: no entry; the relay keeps its own and ignores the item.
            None => (Vec::new(), NodeId([0; 32])),
        };
        let deposit = Deposit {
            scope: wanted.scope,
            session: wanted.session,
            expected,
            head,
            ids: objects.iter().map(|o| o.id).collect(),
            entry,
            session_item,
            share: seal(&wanted.share_raw)?,
            share_item: wanted.share_item(),
            expires_ms: wanted.share.record.expires_ms,
            revoked: wanted.share.record.revoked,
        };
        let mut stream = self.stream().await?;
        stream.write(&Request::Deposit(deposit)).await?;
        let mut batch = Vec::new();
        let mut bytes = 0;
        let total = objects.len();
        for (i, object) in objects.into_iter().enumerate() {
            bytes += object.bytes.len();
            batch.push(object.bytes);
            if bytes >= BATCH_BYTES || i + 1 == total {
                let list = std::mem::take(&mut batch);
                bytes = 0;
                let upload = match wanted.scope {
                    Scope::Public => Objects::Plain(list),
                    Scope::Team(team) => Objects::Sealed {
                        team,
                        sealed: seal(&encode_batch(&list))?,
                    },
                };
                stream.write(&Request::Upload(upload)).await?;
            }
        }
        stream.write(&Request::Done).await?;
        stream.finish();
        if let Some(chain) = chain {
            chains
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(chain.team_id(), chain);
        }
        match stream.expect::<Response>("deposit answer").await? {
            Response::Pushed { nodes } => Ok(Ok(nodes)),
            Response::Conflict { current } => Ok(Err(current)),
            Response::Refused { reason } => Err(self.refused(reason)),
            _ => Err(stream.protocol("expected a deposit answer")),
        }
    }

    /// Everything against a relay: fetch what it has for us, send the manifests it lacks,
    /// deposit our shared sessions it lacks or has older, answer waiting join requests of
    /// teams we administer.
    pub async fn relay_sync(
        &self,
        store: &std::sync::Arc<Store>,
        identity: &std::sync::Arc<Identity>,
    ) -> Result<RelaySyncReport, PeerError> {
        self.relay_sync_only(store, identity, None).await
    }

    /// [`PeerConn::relay_sync`], depositing and answering joins only for `only` (the teams a
    /// `storage.toml` filter names); manifests and fetches still cover every team.
    ///
    /// An item the relay refuses (or that fails on its own) is recorded in the report and the
    /// sync goes on with the rest (§16.4); only a broken connection or protocol ends it with
    /// an error. What did not land stays pending and is tried again at the next sync.
    pub async fn relay_sync_only(
        &self,
        store: &std::sync::Arc<Store>,
        identity: &std::sync::Arc<Identity>,
        only: Option<&[TeamId]>,
    ) -> Result<RelaySyncReport, PeerError> {
        let me = MemberId(identity.verifying_key().to_bytes());
        let mut report = RelaySyncReport::default();
        let need = match self.fetch_and_list(store, identity).await {
            Ok((fetched, need)) => {
                report.fetched = fetched;
                need
            }
            // A refused or bad item ended the fetch (what verified so far is stored): the
            // deposits, unshares among them, still go, from a reconciliation of their own.
            Err(
                e @ (PeerError::Refused { .. }
                | PeerError::Protocol { .. }
                | PeerError::BadObject { .. }),
            ) => {
                report.fail(SyncItem::Fetch, e);
                let listed = self.hello().await?;
                let view = block_in_place(|| {
                    access::view_for_teams(store, identity, &listed, crate::now_ms())
                })?;
                self.reconcile(view.ids()).await?.1
            }
            Err(e) => return Err(e),
        };
        let listed = self.hello().await?;
        // The relay's teams we hold a chain of (a fetch above brought any we lacked).
        let teams: Vec<TeamId> = listed
            .into_iter()
            .filter(|t| team::load(store, t).is_ok())
            .collect();
        // Manifests the relay lacks, per team (it applies them through the chain rules).
        let need_set: BTreeSet<ItemId> = need.iter().copied().collect();
        for team in &teams {
            let chain = block_in_place(|| team::load(store, team))?;
            if chain.head().manifest.member(&me).is_none() {
                // We left or were removed, and the relay does not know yet: tell it, so it
                // stops serving us (and whoever else the newer manifests removed).
                let manifests = chain
                    .versions()
                    .iter()
                    .map(SignedManifest::encode)
                    .collect();
                if self.send_manifests(*team, manifests).await.is_ok() {
                    report.manifests_sent += 1;
                }
                continue;
            }
            let missing: Vec<Vec<u8>> = chain
                .versions()
                .iter()
                .map(SignedManifest::encode)
                .filter(|m| need_set.contains(&tapes_protocol::sync::manifest_item(team, m)))
                .collect();
            if !missing.is_empty() {
                let count = missing.len();
                match self.send_manifests(*team, missing).await {
                    Ok(()) => report.manifests_sent += count,
                    Err(e) if ends_sync(&e) => return Err(e),
                    // (The members quota, say: the relay keeps authorizing by its older head,
                    // so deposits for the team still land.)
                    Err(e) => report.fail(SyncItem::Manifests(*team), e),
                }
            }
        }
        // From here on, only the teams we are still in.
        let teams: Vec<TeamId> = teams
            .into_iter()
            .filter(|t| team::load(store, t).is_ok_and(|c| c.head().manifest.member(&me).is_some()))
            .filter(|t| only.is_none_or(|o| o.contains(t)))
            .collect();
        block_in_place(|| remember_teams(store, &self.peer, &teams))?;
        // Sessions: ours whose record or share the relay lacks, for every scope shared there.
        let changed: BTreeSet<SessionId> = need
            .iter()
            .filter(|i| matches!(item_kind(i), Some(ItemKind::Session | ItemKind::Share)))
            .map(item_session)
            .collect();
        let heads_before = block_in_place(|| head_versions(store, &teams))?;
        let mut wanted = block_in_place(|| wanted(store, &me, &teams))?;
        // Revocations and expiries first: they carry no objects, and they reach the relay
        // even if a long deposit after them breaks the connection.
        let now = crate::now_ms();
        wanted.sort_by_key(|w| !w.ended(now));
        let chains = Chains::default();
        for w in wanted {
            if !changed.contains(&w.session) {
                continue;
            }
            match self.deposit_wanted(store, identity, &w, &chains).await {
                Ok(Some(nodes)) => {
                    if w.ended(now) {
                        report
                            .ended
                            .push((w.session, w.scope, w.share.record.revoked));
                    } else if w.summary {
                        report.summaries.push((w.session, w.scope));
                    }
                    report.deposited.push((w.session, w.scope, nodes))
                }
                Ok(None) => {}
                Err(e) if ends_sync(&e) => return Err(e),
                Err(e) => report.failed.push((w.session, w.scope, e)),
            }
        }
        // Sealing may have rotated a team key that a removal left owed: teammates need the new
        // manifest to open what we just deposited. (Not to a relay that refused this team's
        // chain in this sync: it would refuse the newer versions too.)
        let heads_after = block_in_place(|| head_versions(store, &teams))?;
        for (team, (before, after)) in teams.iter().zip(heads_before.iter().zip(&heads_after)) {
            let item = SyncItem::Manifests(*team);
            if after > before && !report.failed_items.iter().any(|(i, _)| *i == item) {
                let chain = block_in_place(|| team::load(store, team))?;
                let manifests = chain.versions()
                    [(*before as usize + 1).min(chain.versions().len())..]
                    .iter()
                    .map(SignedManifest::encode)
                    .collect::<Vec<_>>();
                let count = manifests.len();
                match self.send_manifests(*team, manifests).await {
                    Ok(()) => report.manifests_sent += count,
                    Err(e) if ends_sync(&e) => return Err(e),
                    Err(e) => report.fail(item, e),
                }
            }
        }
        for team in &teams {
            let chain = block_in_place(|| team::load(store, team))?;
            let admin = chain
                .head()
                .manifest
                .member(&me)
                .is_some_and(|m| m.role != tapes_protocol::manifest::TeamRole::Member);
            if admin {
                self.answer_joins(store, identity, *team, &mut report)
                    .await?;
            }
        }
        Ok(report)
    }
}

/// What one deposit exchange sends.
enum Payload {
    /// The nodes after `expected` (none: a records-only deposit at our head) with our record
    /// and share.
    Nodes {
        expected: Option<NodeId>,
        objects: Vec<StoredObject>,
    },
    /// Only the share record, at the relay's head `at` (§16.3, share-only deposits).
    ShareOnly { at: NodeId },
    /// A metadata-only share and its summary, replacing the relay's record (§16.3).
    Summary,
}

/// Writes (or, with `None`, removes) a tracking ref.
fn set_tracking(store: &Store, key: &[u8], value: Option<Vec<u8>>) -> Result<(), StoreError> {
    let current = store.storage().get_ref(key)?;
    if current == value {
        return Ok(());
    }
    store.commit(
        &[],
        &[RefUpdate {
            key: key.to_vec(),
            expected: current,
            new: value,
        }],
    )?;
    Ok(())
}

/// Team chains loaded for sealing, shared by the deposits of one sync.
type Chains =
    std::sync::Mutex<std::collections::HashMap<TeamId, tapes_protocol::team_chain::TeamChain>>;

fn head_versions(store: &Store, list: &[TeamId]) -> Result<Vec<u64>, PeerError> {
    list.iter()
        .map(|t| Ok(team::load(store, t)?.head().manifest.version))
        .collect()
}

/// What a deposit of one session for one scope would say, read directly (not by listing
/// every share in the store).
fn wanted_one(
    store: &Store,
    me: &MemberId,
    scope: Scope,
    session: SessionId,
) -> Result<Option<Wanted>, PeerError> {
    let audience = match scope {
        Scope::Team(t) => Audience::Team(t),
        Scope::Public => Audience::Public,
    };
    let Some(share_raw) = store
        .storage()
        .get_ref(&share_key(&session, &audience))
        .map_err(StoreError::from)?
    else {
        return Ok(None);
    };
    let Ok(share) = SignedShare::decode(&share_raw) else {
        return Ok(None);
    };
    let Some(record) = store.session(&session)? else {
        return Ok(None);
    };
    if share.record.sharer != *me || record.owner != Some(*me) {
        return Ok(None);
    }
    let Some(summary) = deposit_kind(store, &session, &audience, &share_raw)? else {
        return Ok(None);
    };
    Ok(Some(Wanted {
        scope,
        session,
        head: record.head,
        share_raw,
        share,
        summary,
    }))
}

/// The objects of the chain ending at `head` after `stop` (exclusive), root first; `None` if
/// `stop` is not on the chain.
fn chain_after(
    store: &Store,
    head: &NodeId,
    stop: Option<&NodeId>,
) -> Result<Option<Vec<StoredObject>>, StoreError> {
    let mut out = Vec::new();
    let mut next = Some(*head);
    let mut reader = store.storage().chain_reader();
    while let Some(id) = next {
        if Some(&id) == stop {
            out.reverse();
            return Ok(Some(out));
        }
        let bytes = reader.get(&id)?.ok_or(StoreError::MissingNode(id))?;
        next = StoredObject::parent_of(&bytes).map_err(|_| StoreError::MissingNode(id))?;
        out.push(StoredObject { id, bytes });
    }
    if stop.is_some() {
        return Ok(None);
    }
    out.reverse();
    Ok(Some(out))
}
