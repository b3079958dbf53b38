//! Fetching and merging the teams' audit logs (SPEC.md §18.3) from a teammate's node or a
//! relay: one `Request::Audit` per team both sides are in, saying how many entries of each
//! writer this store holds; the answer's entries (sealed to the team when they come from a
//! relay) are checked and merged by [`crate::audit::merge`]. At a relay this node then
//! deposits its own chain's new entries, sealed (`Request::AuditDeposit`), so members who never
//! reach it directly still get them.

use tapes_protocol::sync::{Request, Response, MAX_AUDIT_DEPOSIT};
use tapes_protocol::MemberId;

use crate::audit::{self, Merged, SignedAuditEntry};
use crate::identity::Identity;
use crate::peer::client::PeerConn;
use crate::peer::receive::Rings;
use crate::peer::PeerError;
use crate::store::backend::{RefUpdate, StorageError};
use crate::store::{keys, Store, StoreError};

/// Fetches the audit logs of every team this node is a current member of (and, for a
/// teammate, the peer too) and merges them. A team the peer refuses is skipped.
pub async fn pull(
    conn: &PeerConn,
    store: &Store,
    identity: &Identity,
) -> Result<Merged, PeerError> {
    let me = MemberId(identity.verifying_key().to_bytes());
    let mut total = Merged::default();
    let mut rings = Rings::default();
    for chain in crate::team::list(store)? {
        let head = &chain.head().manifest;
        if head.member(&me).is_none() || (!conn.relay && head.member(&conn.peer).is_none()) {
            continue;
        }
        let team = chain.team_id();
        let have = audit::have(store, &team)?;
        let mut stream = conn.stream().await?;
        stream.write(&Request::Audit { team, have }).await?;
        stream.finish();
        let raw = match stream.expect::<Response>("audit entries").await? {
            Response::Audit(entries) => entries,
            Response::Refused { reason } => {
                tracing::debug!(team = %team.short(), %reason, "audit log not served");
                continue;
            }
            _ => return Err(stream.protocol("expected audit entries")),
        };
        let mut entries = Vec::with_capacity(raw.len());
        for bytes in raw {
            let plain = if conn.relay {
                match rings.open_sealed(store, identity, &team, &bytes) {
                    Ok(plain) => plain,
                    Err(why) => {
                        total
                            .refused
                            .push(format!("a sealed audit entry does not open: {why}"));
                        continue;
                    }
                }
            } else {
                bytes
            };
            match SignedAuditEntry::decode(&plain) {
                Ok(e) if e.entry.team == team => entries.push(e),
                Ok(_) => total
                    .refused
                    .push("an audit entry of another team came with this one".into()),
                Err(e) => total.refused.push(e.to_string()),
            }
        }
        let merged = audit::merge(store, entries)?;
        total.new += merged.new;
        total.known += merged.known;
        total.refused.extend(merged.refused);
        if conn.relay {
            total.deposited += deposit(conn, store, &chain, &me).await?;
        }
    }
    Ok(total)
}

/// Deposits this node's own entries of `chain`'s team log that the relay has not taken yet
/// (counted in `relay-audit/<relay>/<team>`), sealed to the team; returns how many were sent.
async fn deposit(
    conn: &PeerConn,
    store: &Store,
    chain: &tapes_protocol::team_chain::TeamChain,
    me: &MemberId,
) -> Result<usize, PeerError> {
    let team = chain.team_id();
    // Only durable entries leave: a served fetch appends its entry without a flush, and an
    // entry sent, then lost in a crash, would be written again differently under the same
    // number, forking this writer's chain at the relay (found by killing `tapes serve` and
    // `tapes sync` in `crash_relay`).
    store.storage().flush().map_err(StoreError::from)?;
    let marker = keys::relay_audit(&conn.peer, &team);
    let raw = store.storage().get_ref(&marker).map_err(StoreError::from)?;
    let first = raw
        .as_deref()
        .and_then(|v| Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?)))
        .unwrap_or(0);
    let mut entries = Vec::new();
    while entries.len() < MAX_AUDIT_DEPOSIT {
        let seq = first + entries.len() as u64;
        let Some(entry) = store
            .storage()
            .get_ref(&keys::audit_entry(&team, me, seq))
            .map_err(StoreError::from)?
        else {
            break;
        };
        let sealed = crate::team::keyring::seal_encoded(chain, &entry)
            .map_err(|e| PeerError::Local(format!("sealing an audit entry: {e}")))?;
        entries.push(sealed);
    }
    if entries.is_empty() {
        return Ok(0);
    }
    let sent = entries.len();
    match send_deposit(conn, &team, first, entries).await {
        Ok(()) => {}
        Err(PeerError::Refused { reason, .. }) => {
            // A relay that lost what it had (restored from a backup) asks for the whole chain.
            tracing::warn!(peer = %conn.name, team = %team.short(), %reason, "audit entries not taken");
            if first > 0 && reason.contains("gap") {
                store
                    .storage()
                    .update_refs(&[RefUpdate {
                        key: marker,
                        expected: raw,
                        new: None,
                    }])
                    .map_err(StoreError::from)?;
            }
            return Ok(0);
        }
        Err(e) => return Err(e),
    }
    let next = first + sent as u64;
    // Only ever forward: a concurrent sync that got further keeps its count.
    match store.storage().update_refs(&[RefUpdate {
        key: marker,
        expected: raw,
        new: Some(next.to_le_bytes().to_vec()),
    }]) {
        Ok(()) | Err(StorageError::Conflict { .. }) => {}
        Err(e) => return Err(StoreError::from(e).into()),
    }
    Ok(sent)
}

/// Sends `Request::AuditDeposit`: entries `first, first + 1, …` of this node's chain in
/// `team`'s log, each already sealed to the team. A refusal is [`PeerError::Refused`] with the
/// relay's reason.
pub async fn send_deposit(
    conn: &PeerConn,
    team: &tapes_protocol::TeamId,
    first: u64,
    entries: Vec<Vec<u8>>,
) -> Result<(), PeerError> {
    let mut stream = conn.stream().await?;
    stream
        .write(&Request::AuditDeposit {
            team: *team,
            first,
            entries,
        })
        .await?;
    stream.finish();
    match stream.expect::<Response>("the relay's answer").await? {
        Response::Accepted => Ok(()),
        Response::Refused { reason } => Err(PeerError::Refused {
            peer: conn.name.to_string(),
            reason,
        }),
        _ => Err(stream.protocol("expected the relay to accept the audit entries")),
    }
}

/// [`pull`] after a fetch or sync: what could not be merged is reported on the log (`-v`),
/// never a reason to fail the fetch it follows.
pub async fn pull_quietly(conn: &PeerConn, store: &Store, identity: &Identity) {
    match pull(conn, store, identity).await {
        Ok(merged) => {
            for why in merged.refused {
                tracing::warn!(peer = %conn.name, "audit log: {why}");
            }
        }
        Err(e) => tracing::warn!(peer = %conn.name, error = %e, "could not fetch the audit log"),
    }
}
