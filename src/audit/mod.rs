//! The audit log (SPEC.md §18): who shared, unshared, fetched, deposited, deleted what, when —
//! one log per team, made of one hash-chained, signed chain per writer (a member's node, or a
//! relay the team registered). The entry format is `tapes_protocol::audit`.
//!
//! * [`record`] appends an event this node witnessed to its own chain in a team's log (share
//!   and unshare here, a teammate fetching a session from this node's server, …). It is the one
//!   hook other modules call (`tapes rm` will call it with [`AuditAction::Delete`]).
//! * [`receive`] merges entries written elsewhere: each must be signed by its writer, the writer
//!   must be a member of the team (any version of its chain held here) or a relay registered
//!   for it (`relay-teams/<relay>`, recorded when this node synced with the relay), and the
//!   entry must extend the writer's chain as held here. Anything else is refused with the
//!   reason; nothing of a refused batch's bad entry is stored.
//! * [`verify`] re-checks every chain: signatures, `prev` links, that the first entry is 0 and
//!   the newest matches the head this store recorded (so a removed, altered or reordered entry
//!   — the last one included — is found).
//! * [`list`] and [`view_count`] read it for `tapes audit` and `tapes show`/`tapes shared`.
//!
//! Refs (SPEC.md §4.1): `audit/<team>/<writer>/<seq>` → the signed entry;
//! `audit-head/<team>/<writer>` → `seq u64le ‖ entry id` of the newest entry seen.

use std::collections::BTreeMap;

use serde::Serialize;
use tapes_protocol::{MemberId, SessionId, TeamId};

pub use tapes_protocol::audit::{AuditAction, AuditEntry, AuditError, EntryId, SignedAuditEntry};

use crate::identity::Identity;
use crate::store::backend::{RefUpdate, StorageError};
use crate::store::{keys, Store, StoreError};

/// Why the audit log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit entry {seq} of {writer} for team {team} is refused: {why}")]
    Refused {
        team: String,
        writer: String,
        seq: u64,
        why: String,
    },
    #[error("the audit log of team {team} is being written by another process; retry")]
    Busy { team: String },
}

impl From<StorageError> for AuditLogError {
    fn from(e: StorageError) -> Self {
        AuditLogError::Store(e.into())
    }
}

/// An event to append (the writer, team, chain position and time are added by [`record`]).
#[derive(Debug, Clone)]
pub struct Event {
    pub action: AuditAction,
    pub actor: MemberId,
    pub actor_name: String,
    pub session: Option<SessionId>,
    pub detail: String,
}

fn encode_head(seq: u64, id: &EntryId) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.extend_from_slice(&id.0);
    v
}

/// A ref as stored: key and value.
type RefEntry = (Vec<u8>, Vec<u8>);

/// A chain head as stored (for compare-and-swap) and as read: `(seq, id)` of the newest entry.
type Head = (Option<Vec<u8>>, Option<(u64, EntryId)>);

fn decode_head(raw: &[u8]) -> Option<(u64, EntryId)> {
    let seq = u64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
    let id: [u8; 32] = raw.get(8..40)?.try_into().ok()?;
    Some((seq, EntryId(id)))
}

/// The newest entry of `writer`'s chain in `team`'s log held here.
fn head(store: &Store, team: &TeamId, writer: &MemberId) -> Result<Head, StoreError> {
    let raw = store.storage().get_ref(&keys::audit_head(team, writer))?;
    let parsed = raw.as_deref().and_then(decode_head);
    Ok((raw, parsed))
}

/// Appends `event` to this node's chain in `team`'s log, signed with this node's key; returns
/// the entry. Concurrent appends (a server answering several fetches) are serialized by
/// compare-and-swap on the chain's head.
pub fn record(
    store: &Store,
    identity: &Identity,
    team: &TeamId,
    event: Event,
    now_ms: i64,
) -> Result<SignedAuditEntry, AuditLogError> {
    append(store, identity, team, event, now_ms, true)
}

fn append(
    store: &Store,
    identity: &Identity,
    team: &TeamId,
    event: Event,
    now_ms: i64,
    flush: bool,
) -> Result<SignedAuditEntry, AuditLogError> {
    let mut written = append_all(store, identity, team, &[event], now_ms, flush)?;
    written
        .pop()
        .ok_or_else(|| AuditLogError::Busy { team: team.short() })
}

/// Appends `events`, in order, to this node's chain in `team`'s log as one atomic update
/// (every entry and the moved head, or nothing): what a server answering many fetches writes
/// in one go instead of one ref transaction per fetched session.
fn append_all(
    store: &Store,
    identity: &Identity,
    team: &TeamId,
    events: &[Event],
    now_ms: i64,
    flush: bool,
) -> Result<Vec<SignedAuditEntry>, AuditLogError> {
    let writer = MemberId(identity.verifying_key().to_bytes());
    for _ in 0..64 {
        let (raw, mut current) = head(store, team, &writer)?;
        let mut signed_all = Vec::with_capacity(events.len());
        let mut updates = Vec::with_capacity(events.len() + 1);
        for event in events {
            let entry = AuditEntry {
                team: *team,
                writer,
                seq: current.map_or(0, |(seq, _)| seq + 1),
                prev: current.map(|(_, id)| id),
                at_ms: now_ms,
                action: event.action,
                actor: event.actor,
                actor_name: event.actor_name.clone(),
                session: event.session,
                detail: event.detail.clone(),
            };
            let signed = SignedAuditEntry::sign(entry, identity.signing_key());
            current = Some((signed.entry.seq, signed.id()));
            updates.push(RefUpdate {
                key: keys::audit_entry(team, &writer, signed.entry.seq),
                expected: None,
                new: Some(signed.encode()),
            });
            signed_all.push(signed);
        }
        let Some((seq, id)) = current else {
            return Ok(Vec::new());
        };
        updates.push(RefUpdate {
            key: keys::audit_head(team, &writer),
            expected: raw,
            new: Some(encode_head(seq, &id)),
        });
        match store.storage().update_refs(&updates) {
            Ok(()) => {
                if flush {
                    store.storage().flush()?;
                }
                return Ok(signed_all);
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AuditLogError::Busy { team: team.short() })
}

/// The hook of a serving node (`tapes serve`, SPEC.md §18.2): `peer` (named `peer_name`)
/// fetched each of `sessions`, visible to it through a share to the paired team (a public
/// share belongs to no team's log and is not passed here). One atomic update per team, however
/// many sessions. Best effort: a log that cannot be written is reported on the log, never a reason
/// to fail the fetch. The entries are not flushed on their own (the store's next flush carries
/// them; entries and head are one atomic update, so a crash loses all of them or none).
pub fn served(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    peer_name: &str,
    sessions: &[(SessionId, TeamId)],
) {
    let mut by_team: BTreeMap<TeamId, Vec<Event>> = BTreeMap::new();
    for (session, team) in sessions {
        by_team.entry(*team).or_default().push(Event {
            action: AuditAction::Fetch,
            actor: *peer,
            actor_name: peer_name.to_string(),
            session: Some(*session),
            detail: String::new(),
        });
    }
    for (team, events) in by_team {
        if let Err(e) = append_all(store, identity, &team, &events, crate::now_ms(), false) {
            tracing::warn!(error = %e, team = %team.short(), sessions = events.len(), "could not append fetches to the audit log");
        }
    }
}

/// What this store holds of `team`'s log: per writer, how many entries (its next seq). What
/// a member sends in `Request::Audit` (SPEC.md §18.3).
pub fn have(store: &Store, team: &TeamId) -> Result<Vec<(MemberId, u64)>, StoreError> {
    let prefix = format!("{}{}/", keys::AUDIT_HEAD, team.to_hex());
    let mut out = Vec::new();
    for entry in store.storage().refs(prefix.as_bytes()) {
        let (key, value) = entry?;
        let writer = String::from_utf8_lossy(&key[prefix.len()..]).parse::<MemberId>();
        if let (Ok(writer), Some((seq, _))) = (writer, decode_head(&value)) {
            out.push((writer, seq + 1));
        }
    }
    Ok(out)
}

/// A member's node answering `Request::Audit` from `peer`: the entries of `team`'s log past
/// what the peer holds (`have`), each writer's in chain order. Only when both this node and
/// the peer are current members of the team; otherwise the reason.
pub fn serve(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    team: &TeamId,
    have: &[(MemberId, u64)],
) -> Result<Vec<Vec<u8>>, String> {
    let me = MemberId(identity.verifying_key().to_bytes());
    let chain = crate::team::load(store, team).map_err(|e| e.to_string())?;
    let head = &chain.head().manifest;
    if head.member(&me).is_none() || head.member(peer).is_none() {
        return Err(format!(
            "the audit log of team {} goes to its current members only",
            team.short()
        ));
    }
    let held: BTreeMap<MemberId, u64> = have.iter().copied().collect();
    // Only durable entries leave this machine: a fetch's entry is appended without a flush,
    // and one served, then lost in a crash, would be written again differently under the
    // same number, forking this writer's chain at the peer (SPEC.md §18.3).
    store.storage().flush().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in entries(store, Some(team)).map_err(|e| e.to_string())? {
        let text = String::from_utf8_lossy(&key[keys::audit_team(team).len()..]).into_owned();
        let Some((writer, seq)) = text.split_once('/') else {
            continue;
        };
        let (Ok(writer), Ok(seq)) = (writer.parse::<MemberId>(), seq.parse::<u64>()) else {
            continue;
        };
        if seq >= held.get(&writer).copied().unwrap_or(0) {
            out.push(value);
        }
    }
    Ok(out)
}

/// Merges entries fetched from a teammate or a relay: per writer, as [`receive`] does; a
/// writer whose entries are refused is skipped and its reason returned, the others merge.
pub fn merge(store: &Store, entries: Vec<SignedAuditEntry>) -> Result<Merged, StoreError> {
    let mut by_writer: BTreeMap<(TeamId, MemberId), Vec<SignedAuditEntry>> = BTreeMap::new();
    for e in entries {
        by_writer
            .entry((e.entry.team, e.entry.writer))
            .or_default()
            .push(e);
    }
    let mut merged = Merged::default();
    for (_, batch) in by_writer {
        match receive(store, batch) {
            Ok(r) => {
                merged.new += r.new;
                merged.known += r.known;
            }
            Err(AuditLogError::Store(e)) => return Err(e),
            Err(e) => merged.refused.push(e.to_string()),
        }
    }
    Ok(merged)
}

/// What [`merge`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Merged {
    pub new: usize,
    pub known: usize,
    /// Why a writer's entries were refused, one line per writer.
    pub refused: Vec<String>,
    /// This node's own entries deposited at the relay (a relay sync only).
    pub deposited: usize,
}

/// The hook for team membership changes this node made or witnessed (a join it accepted, a
/// member it removed, its own leaving): best effort, like [`served`].
pub fn membership(
    store: &Store,
    identity: &Identity,
    team: &TeamId,
    action: AuditAction,
    member: &MemberId,
    name: &str,
) {
    let event = Event {
        action,
        actor: *member,
        actor_name: name.to_string(),
        session: None,
        detail: String::new(),
    };
    if let Err(e) = record(store, identity, team, event, crate::now_ms()) {
        tracing::warn!(error = %e, "could not append a membership change to the audit log");
    }
}

/// Who may write to `team`'s log: a member of any version of its chain held here, or a relay
/// this node saw registered for the team. `None`: allowed; `Some(why)`: refused.
fn refusal_of_writer(store: &Store, team: &TeamId, writer: &MemberId) -> Option<String> {
    if let Ok(chain) = crate::team::load(store, team) {
        if chain
            .versions()
            .iter()
            .any(|v| v.manifest.member(writer).is_some())
        {
            return None;
        }
    } else {
        return Some(format!(
            "this store does not hold team {}, so nobody can vouch for the writer",
            team.short()
        ));
    }
    let registered = store
        .storage()
        .get_ref(&keys::relay_teams(writer))
        .ok()
        .flatten()
        .is_some_and(|raw| raw.chunks_exact(32).any(|t| t == team.0));
    if registered {
        None
    } else {
        Some("it is signed by neither a member of the team nor a relay the team registered".into())
    }
}

/// What [`receive`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Received {
    pub new: usize,
    pub known: usize,
}

/// Merges entries written elsewhere (SPEC.md §18.3): checked one by one in chain order per
/// writer; the first that is refused stops its writer's batch with the reason (entries of that
/// writer before it are kept, since each one extends a verified chain).
pub fn receive(
    store: &Store,
    mut entries: Vec<SignedAuditEntry>,
) -> Result<Received, AuditLogError> {
    entries.sort_by(|a, b| {
        (a.entry.team, a.entry.writer, a.entry.seq).cmp(&(
            b.entry.team,
            b.entry.writer,
            b.entry.seq,
        ))
    });
    let mut report = Received::default();
    for signed in entries {
        let e = &signed.entry;
        let refused = |why: String| AuditLogError::Refused {
            team: e.team.short(),
            writer: e.writer.short(),
            seq: e.seq,
            why,
        };
        if let Some(why) = refusal_of_writer(store, &e.team, &e.writer) {
            return Err(refused(why));
        }
        if !signed.verify() {
            return Err(refused(
                "its signature does not verify (altered or forged)".into(),
            ));
        }
        let key = keys::audit_entry(&e.team, &e.writer, e.seq);
        if let Some(held) = store.storage().get_ref(&key)? {
            if held == signed.encode() {
                report.known += 1;
                continue;
            }
            return Err(refused(
                "the writer's chain here holds another entry at that position (a forked or rewritten log)".into(),
            ));
        }
        let (raw, current) = head(store, &e.team, &e.writer)?;
        let follows = match current {
            None => e.seq == 0 && e.prev.is_none(),
            Some((seq, id)) => e.seq == seq + 1 && e.prev == Some(id),
        };
        if !follows {
            return Err(refused(format!(
                "it is out of its writer's chain (this store holds up to entry {}, and it names another previous entry)",
                current.map_or("none".to_string(), |(s, _)| s.to_string())
            )));
        }
        let updates = [
            RefUpdate {
                key,
                expected: None,
                new: Some(signed.encode()),
            },
            RefUpdate {
                key: keys::audit_head(&e.team, &e.writer),
                expected: raw,
                new: Some(encode_head(e.seq, &signed.id())),
            },
        ];
        match store.storage().update_refs(&updates) {
            Ok(()) => report.new += 1,
            Err(StorageError::Conflict { .. }) => {
                return Err(AuditLogError::Busy {
                    team: e.team.short(),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    store.storage().flush()?;
    Ok(report)
}

/// Every entry of `team`'s log (every team's when `None`), each writer's chain in order.
pub fn entries(store: &Store, team: Option<&TeamId>) -> Result<Vec<RefEntry>, StoreError> {
    let prefix = match team {
        Some(t) => keys::audit_team(t),
        None => keys::AUDIT.as_bytes().to_vec(),
    };
    let mut out = Vec::new();
    for entry in store.storage().refs(&prefix) {
        out.push(entry?);
    }
    Ok(out)
}

/// Entries of every team's log held here, decoded (damaged ones are left to [`verify`]).
pub fn all(store: &Store, team: Option<&TeamId>) -> Result<Vec<SignedAuditEntry>, StoreError> {
    Ok(entries(store, team)?
        .into_iter()
        .filter_map(|(_, v)| SignedAuditEntry::decode(&v).ok())
        .collect())
}

/// What `tapes audit` filters by.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub team: Option<TeamId>,
    pub session: Option<SessionId>,
    pub since_ms: Option<i64>,
}

/// One line of `tapes audit`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub at_ms: i64,
    pub team: TeamId,
    pub action: &'static str,
    pub actor: MemberId,
    pub actor_name: String,
    pub session: Option<SessionId>,
    pub writer: MemberId,
    pub seq: u64,
    pub detail: String,
    pub id: String,
}

/// The entries matching `filter`, oldest first.
pub fn list(store: &Store, filter: &Filter) -> Result<Vec<Row>, StoreError> {
    let mut rows: Vec<Row> = all(store, filter.team.as_ref())?
        .into_iter()
        .filter(|s| filter.session.is_none_or(|id| s.entry.session == Some(id)))
        .filter(|s| filter.since_ms.is_none_or(|t| s.entry.at_ms >= t))
        .map(|s| Row {
            id: s.id().to_hex(),
            at_ms: s.entry.at_ms,
            team: s.entry.team,
            action: s.entry.action.as_str(),
            actor: s.entry.actor,
            actor_name: s.entry.actor_name,
            session: s.entry.session,
            writer: s.entry.writer,
            seq: s.entry.seq,
            detail: s.entry.detail,
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.at_ms, a.team, a.writer, a.seq).cmp(&(b.at_ms, b.team, b.writer, b.seq))
    });
    Ok(rows)
}

/// How many times teammates fetched `session` (fetch entries by anyone but the sharer), over
/// every team's log held here: a share's `view_count`.
pub fn view_count(store: &Store, session: &SessionId) -> Result<u64, StoreError> {
    Ok(all(store, None)?
        .iter()
        .filter(|s| s.entry.action == AuditAction::Fetch && s.entry.session == Some(*session))
        .count() as u64)
}

/// `view_count` for every session at once (one read of the log), for listings.
pub fn view_counts(store: &Store) -> Result<BTreeMap<SessionId, u64>, StoreError> {
    let mut out = BTreeMap::new();
    for s in all(store, None)? {
        if let (AuditAction::Fetch, Some(id)) = (s.entry.action, s.entry.session) {
            *out.entry(id).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// One problem [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub team: TeamId,
    pub writer: MemberId,
    pub what: String,
}

/// What `tapes audit verify` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Verified {
    pub teams: usize,
    pub writers: usize,
    pub entries: usize,
    pub problems: Vec<Problem>,
}

impl Verified {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every writer's chain in every team's log (SPEC.md §18.4).
pub fn verify(store: &Store) -> Result<Verified, StoreError> {
    // Group the stored entries by (team, writer) from their keys, so an entry filed under the
    // wrong chain is found too.
    let mut chains: BTreeMap<(String, String), Vec<RefEntry>> = BTreeMap::new();
    for (key, value) in entries(store, None)? {
        let text = String::from_utf8_lossy(&key[keys::AUDIT.len()..]).into_owned();
        let mut parts = text.splitn(3, '/');
        let team = parts.next().unwrap_or_default().to_string();
        let writer = parts.next().unwrap_or_default().to_string();
        chains.entry((team, writer)).or_default().push((key, value));
    }
    // Heads with no entries left at all.
    for entry in store.storage().refs(keys::AUDIT_HEAD.as_bytes()) {
        let (key, _) = entry?;
        let text = String::from_utf8_lossy(&key[keys::AUDIT_HEAD.len()..]).into_owned();
        if let Some((team, writer)) = text.split_once('/') {
            chains
                .entry((team.to_string(), writer.to_string()))
                .or_default();
        }
    }
    let mut report = Verified::default();
    let mut teams = std::collections::BTreeSet::new();
    for ((team_hex, writer_hex), stored) in chains {
        let (Ok(team), Ok(writer)) = (team_hex.parse::<TeamId>(), writer_hex.parse::<MemberId>())
        else {
            continue;
        };
        teams.insert(team);
        report.writers += 1;
        let mut found: Vec<String> = Vec::new();
        check_one(
            store,
            &team,
            &writer,
            &stored,
            &mut found,
            &mut report.entries,
        )?;
        report
            .problems
            .extend(found.into_iter().map(|what| Problem { team, writer, what }));
    }
    report.teams = teams.len();
    Ok(report)
}

/// Checks one writer's chain in one team's log; problems go to `found`.
fn check_one(
    store: &Store,
    team: &TeamId,
    writer: &MemberId,
    stored: &[RefEntry],
    found: &mut Vec<String>,
    count: &mut usize,
) -> Result<(), StoreError> {
    let (team, writer) = (*team, *writer);
    let mut problem = |what: String| found.push(what);
    {
        let mut decoded = Vec::with_capacity(stored.len());
        let mut damaged = false;
        for (key, value) in stored {
            match SignedAuditEntry::decode(value) {
                Ok(s) if *key == keys::audit_entry(&team, &writer, s.entry.seq) => decoded.push(s),
                Ok(s) => {
                    problem(format!(
                        "entry {} is filed under another writer's, team's or position's key (moved or reordered)",
                        s.entry.seq
                    ));
                    damaged = true;
                }
                Err(e) => {
                    problem(format!(
                        "an entry does not decode ({e}): it was altered or damaged"
                    ));
                    damaged = true;
                }
            }
        }
        *count += decoded.len();
        if damaged {
            return Ok(());
        }
        if let Err(e) = tapes_protocol::audit::check_chain(&decoded) {
            problem(e.to_string());
            return Ok(());
        }
        if let Some(why) = refusal_of_writer(store, &team, &writer) {
            problem(why);
        }
        let (_, recorded) = head(store, &team, &writer)?;
        let last = decoded.last().map(|s| (s.entry.seq, s.id()));
        if recorded != last {
            problem(match (recorded, last) {
                (Some((seq, _)), Some((held, _))) if seq > held => format!(
                    "entries {}..={seq} are missing: the chain ends at {held} but this store had seen {seq}",
                    held + 1
                ),
                (Some((seq, _)), None) => format!("every entry is missing: this store had seen up to {seq}"),
                _ => "the newest entry is not the one this store recorded (altered or replaced)".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Profile;

    fn setup() -> (tempfile::TempDir, Store, Identity, TeamId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let me = Identity::generate(Profile {
            name: "ada".into(),
            email: None,
        })
        .unwrap();
        store
            .set_local_owner(&MemberId(me.verifying_key().to_bytes()))
            .unwrap();
        let team = crate::team::create(&store, &me, "core", 1)
            .unwrap()
            .team_id();
        (dir, store, me, team)
    }

    fn event(me: &Identity, action: AuditAction) -> Event {
        Event {
            action,
            actor: MemberId(me.verifying_key().to_bytes()),
            actor_name: "ada".into(),
            session: Some(SessionId([1; 16])),
            detail: String::new(),
        }
    }

    #[test]
    fn appended_entries_chain_and_verify_and_a_removed_one_is_found() {
        let (_dir, store, me, team) = setup();
        for (i, action) in [AuditAction::Share, AuditAction::Fetch, AuditAction::Fetch]
            .into_iter()
            .enumerate()
        {
            let e = record(&store, &me, &team, event(&me, action), i as i64).unwrap();
            assert_eq!(e.entry.seq, i as u64);
        }
        let report = verify(&store).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.entries, 3);
        assert_eq!(view_count(&store, &SessionId([1; 16])).unwrap(), 2);
        // Remove the newest entry: the head this store recorded names it.
        let writer = MemberId(me.verifying_key().to_bytes());
        store
            .storage()
            .update_refs(&[RefUpdate {
                key: keys::audit_entry(&team, &writer, 2),
                expected: store
                    .storage()
                    .get_ref(&keys::audit_entry(&team, &writer, 2))
                    .unwrap(),
                new: None,
            }])
            .unwrap();
        let report = verify(&store).unwrap();
        assert!(!report.is_clean());
        assert!(report.problems[0].what.contains("missing"), "{report:?}");
    }
}
