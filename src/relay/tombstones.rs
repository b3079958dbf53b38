//! Tombstones at a relay (SPEC.md §3.5, §16.14): a member sends its signed tombstone
//! (`Request::Bury`) and the relay, after checking it against its own deposits of the session
//! (the session named, the depositing owner, not older than the deposit), removes every deposit
//! of that session, its record and blobs, keeps the tombstone (`buried/<session>`), refuses
//! later deposits of the session, and passes the tombstone on to members
//! (`Request::Tombstones`). A refused tombstone removes nothing.

use tapes_protocol::sync::Scope;
use tapes_protocol::tombstone::{Published, SignedTombstone};
use tapes_protocol::{MemberId, SessionId};

use super::backend::Written;
use super::retention;
use super::state::{buried_key, deposit_prefix, RelayState};
use super::RelayError;

/// Whether `session` was removed here by its owner's tombstone.
pub fn is_buried(state: &RelayState, session: &SessionId) -> Result<bool, RelayError> {
    Ok(state.backend().get(&buried_key(session))?.is_some())
}

/// `Request::Bury` from `peer`: checks the tombstone against every deposit of its session and
/// removes them all; returns how many deposits were removed.
pub fn bury(state: &RelayState, peer: &MemberId, item: &Published) -> Result<usize, RelayError> {
    let refused =
        |why: String| RelayError::Malformed(format!("tombstone refused, nothing removed: {why}"));
    let signed = SignedTombstone::decode(&item.tombstone).map_err(|e| refused(e.to_string()))?;
    let session = item.session;
    let mut scopes: Vec<Scope> = state
        .teams()
        .iter()
        .map(|chain| Scope::Team(chain.team_id()))
        .collect();
    scopes.push(Scope::Public);
    let mut found = Vec::new();
    for scope in scopes {
        if let Some((deposited, _)) = state.deposited(&scope, &session)? {
            signed
                .check(&session, &deposited.owner)
                .map_err(|e| refused(e.to_string()))?;
            if deposited.updated_ms > signed.tombstone.removed_ms {
                return Err(refused(format!(
                    "session {} was deposited again after the tombstone was signed (an old tombstone replayed)",
                    session.short()
                )));
            }
            found.push(scope);
        }
    }
    if found.is_empty() {
        // Nothing held: still named and signed by its claimed owner, but no deposit to check
        // the owner against; nothing is recorded.
        signed
            .check(&session, &signed.tombstone.owner)
            .map_err(|e| refused(e.to_string()))?;
        let _ = peer;
        return Ok(0);
    }
    // Recorded first: from here on, deposits of the session are refused and members are told.
    let key = buried_key(&session);
    if state.backend().get(&key)?.is_none()
        && state.backend().put(&key, item.tombstone.clone(), None)? == Written::Lost
    {
        tracing::debug!("tombstone recorded by another request meanwhile");
    }
    let mut removed = 0;
    for scope in found {
        let prefix = deposit_prefix(&scope);
        let key = format!("{prefix}{}", session.to_hex());
        if retention::drop_deposit(state, &scope, &key)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// `Request::Tombstones` at a relay: every tombstone it holds, for a member of any of its
/// registered teams (anyone else gets none).
pub fn published(state: &RelayState, peer: &MemberId) -> Result<Vec<Published>, RelayError> {
    if state.teams_of(peer).is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (key, versioned) in state.backend().list("buried/")? {
        if let Some(session) = key
            .rsplit('/')
            .next()
            .and_then(|hex| hex.parse::<SessionId>().ok())
        {
            out.push(Published {
                session,
                tombstone: versioned.bytes,
            });
        }
    }
    Ok(out)
}
