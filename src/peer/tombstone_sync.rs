//! Passing signed tombstones between teammates (SPEC.md §3.5): after a fetch or sync with a
//! teammate's node, one `Request::Tombstones` asks for the tombstones it holds (its owner's
//! `tapes rm --everywhere`, and those it received), and each is applied here through
//! [`crate::session::tombstone::apply_signed`], which checks it against this store's copy of
//! the session before anything is removed. A refused one is reported with its reason and
//! removes nothing. The answering side is [`serve`]. [`retention`] asks a relay for its
//! retention (SPEC.md §16.14), for `tapes storage status`.

use tapes_protocol::sync::{Request, Response};
use tapes_protocol::tombstone::Published;
use tapes_protocol::MemberId;
use tokio::task::block_in_place;

use crate::identity::Identity;
use crate::peer::client::PeerConn;
use crate::peer::PeerError;
use crate::session::tombstone;
use crate::store::Store;

/// What one exchange did.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Sessions removed here because their owner removed them everywhere.
    pub removed: Vec<tapes_protocol::SessionId>,
    /// Tombstones refused, with the reason.
    pub refused: Vec<String>,
}

/// Asks a teammate's node or a relay for its tombstones and applies them; to a relay, first
/// hands over this store's own signed tombstones ([`bury`]).
pub async fn pull(conn: &PeerConn, store: &Store) -> Result<Pulled, PeerError> {
    let mut pulled = Pulled::default();
    if conn.relay {
        pulled.refused.extend(bury(conn, store).await?);
    }
    let mut stream = conn.stream().await?;
    stream.write(&Request::Tombstones).await?;
    stream.finish();
    let items = match stream.expect::<Response>("tombstones").await? {
        Response::Tombstones(items) => items,
        Response::Refused { reason } => {
            tracing::debug!(%reason, "tombstones not served");
            return Ok(pulled);
        }
        _ => return Err(stream.protocol("expected tombstones")),
    };
    let now = crate::now_ms();
    for item in items {
        match block_in_place(|| tombstone::apply_signed(store, &item.session, &item.tombstone, now))
        {
            Ok(true) => pulled.removed.push(item.session),
            Ok(false) => {}
            Err(e) => pulled
                .refused
                .push(format!("session {}: {e}", item.session.short())),
        }
    }
    Ok(pulled)
}

/// Sends every signed tombstone this store holds to a relay (`Request::Bury`), which drops
/// the sessions it holds of them (SPEC.md §3.5); returns the relay's refusals.
pub async fn bury(conn: &PeerConn, store: &Store) -> Result<Vec<String>, PeerError> {
    let own = block_in_place(|| tombstone::signed_tombstones(store)).map_err(|e| {
        PeerError::Store(crate::store::StoreError::Storage(
            crate::store::backend::StorageError::Backend(e.to_string()),
        ))
    })?;
    let mut refused = Vec::new();
    for (session, bytes) in own {
        let mut stream = conn.stream().await?;
        stream
            .write(&Request::Bury(Published {
                session,
                tombstone: bytes,
            }))
            .await?;
        stream.finish();
        match stream.expect::<Response>("tombstone answer").await? {
            Response::Accepted => {}
            Response::Refused { reason } => refused.push(format!(
                "the relay refused the tombstone of {}: {reason}",
                session.short()
            )),
            _ => return Err(stream.protocol("expected accepted or refused")),
        }
    }
    Ok(refused)
}

/// [`pull`] after a fetch or sync: never a reason to fail the fetch it follows; what was
/// removed and what was refused is returned as lines for the user.
pub async fn pull_quietly(conn: &PeerConn, store: &Store) -> Vec<String> {
    match pull(conn, store).await {
        Ok(pulled) => pulled
            .removed
            .iter()
            .map(|id| format!("  removed {}: its owner removed it everywhere", id.short()))
            .chain(
                pulled
                    .refused
                    .iter()
                    .map(|why| format!("  refused a tombstone: {why}")),
            )
            .collect(),
        Err(e) => {
            tracing::debug!(peer = %conn.name, error = %e, "could not ask for tombstones");
            Vec::new()
        }
    }
}

/// A node answering `Request::Tombstones` from `peer`: the signed tombstones it holds, for a
/// teammate only (a stranger learns nothing about what was removed here).
pub fn serve(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
) -> Result<Vec<Published>, String> {
    let me = MemberId(identity.verifying_key().to_bytes());
    let teammate = crate::team::list(store)
        .map_err(|e| e.to_string())?
        .iter()
        .any(|chain| {
            let head = &chain.head().manifest;
            head.member(&me).is_some() && head.member(peer).is_some()
        });
    if !teammate {
        return Err("you are in none of this node's teams, so it shows you no tombstones".into());
    }
    Ok(tombstone::signed_tombstones(store)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(session, tombstone)| Published { session, tombstone })
        .collect())
}

/// A relay's retention for this member's teams, one line each (`Request::Retention`); empty
/// when it keeps everything, or does not answer.
pub async fn retention(conn: &PeerConn) -> Result<Vec<String>, PeerError> {
    let mut stream = conn.stream().await?;
    stream.write(&Request::Retention).await?;
    stream.finish();
    match stream.expect::<Response>("retention").await? {
        Response::Retention(lines) => Ok(lines),
        Response::Refused { reason } => {
            tracing::debug!(%reason, "retention not served");
            Ok(Vec::new())
        }
        _ => Err(stream.protocol("expected retention lines")),
    }
}
