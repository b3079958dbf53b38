//! Fetching and merging the teams' audit logs (SPEC.md §18.3) from a teammate's node or a
//! relay: one `Request::Audit` per team both sides are in, saying how many entries of each
//! writer this store holds; the answer's entries (sealed to the team when they come from a
//! relay) are checked and merged by [`crate::audit::merge`].

use tapes_protocol::sync::{Request, Response};
use tapes_protocol::MemberId;

use crate::audit::{self, Merged, SignedAuditEntry};
use crate::identity::Identity;
use crate::peer::client::PeerConn;
use crate::peer::receive::Rings;
use crate::peer::PeerError;
use crate::store::Store;

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
    }
    Ok(total)
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
