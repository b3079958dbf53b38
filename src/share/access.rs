//! Access: which records of this store another node may see, as sync items (SPEC.md §15.2),
//! and the signed entry every outgoing record is sent as (§11.3: without local paths).
//!
//! A peer is authenticated by its node id (the QUIC handshake proves it holds the key) and
//! authorized by the *current verified manifest* of each team this node has:
//!
//! * the manifests of a team go to anyone who is, or ever was, in it (a removed member learns
//!   that it was removed, and nothing after);
//! * a share to a team, and the session it shares while the share is live, go to the team's
//!   current members, sealed with the team key when the nodes travel;
//! * a public share, and its session while live, go to anyone;
//! * private sessions go to nobody (their owner moves them with an explicit push or pull).
//!
//! The same function gives both sides of a sync their item sets: the server computes what
//! the client may see, the client what it would be shown by the server, so two nodes that agree
//! on the team manifests reconcile two equal sets when nothing changed.

use std::collections::BTreeMap;

use tapes_protocol::bundle::SessionEntry;
use tapes_protocol::sync::{manifest_item, session_item, share_item, ItemId};
use tapes_protocol::team_chain::TeamChain;
use tapes_protocol::{MemberId, SessionId, TeamId};

use crate::identity::Identity;
use crate::session::SessionRecord;
use crate::share::{share_key, Audience, ShareError};
use crate::store::{Store, StoreError};
use crate::sync::remote::RefSignature;
use crate::team::{self, TeamError};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// Why a peer may see a session, which decides how its nodes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Through a live share to this team: nodes travel sealed to it.
    Team(TeamId),
    /// Through a live public share: nodes travel plain.
    Public,
}

/// One item a peer may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewItem {
    Session {
        id: SessionId,
        grant: Grant,
    },
    /// A share record, by its ref key.
    Share {
        key: Vec<u8>,
    },
    Manifest {
        team: TeamId,
        version: u64,
    },
}

/// Everything one peer may see of this store, by item id.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub items: BTreeMap<ItemId, ViewItem>,
}

impl View {
    pub fn ids(&self) -> Vec<ItemId> {
        self.items.keys().copied().collect()
    }

    /// The grant under which `session` is visible, if it is.
    pub fn grant_for(&self, session: &SessionId) -> Option<Grant> {
        self.items.values().find_map(|item| match item {
            ViewItem::Session { id, grant } if id == session => Some(*grant),
            _ => None,
        })
    }
}

/// The signed entry of a session as it is served: the record as it may leave the machine,
/// signed by its owner. This node signs its own sessions afresh, over the record without its
/// local source path and with a project name rather than a path (SPEC.md §11.3,
/// [`crate::share::outgoing::record`]); for others' it keeps the record as received and the owner's
/// signature (`sig/<session hex>`), and serves nothing if that no longer matches the record.
/// Every outgoing entry (peer fetch and push, relay deposit) is made here.
pub fn session_entry(
    store: &Store,
    identity: &Identity,
    id: &SessionId,
) -> Result<Option<SessionEntry>, StoreError> {
    let Some(raw) = store.session_raw(id)? else {
        return Ok(None);
    };
    let Ok(record) = SessionRecord::decode(&raw) else {
        return Ok(None);
    };
    let me = MemberId(identity.verifying_key().to_bytes());
    let Some(owner) = record.owner else {
        return Ok(None);
    };
    let (raw, signature) = if owner == me {
        let paths = crate::share::outgoing::PathPolicy::load(store)?;
        let record = crate::share::outgoing::record(&record, paths);
        let signature = RefSignature::sign(identity.signing_key(), id, None, &record);
        (record.encode(), signature)
    } else {
        match stored_signature(store, id)? {
            Some(sig) if sig.signer == owner && sig.verify(id, None, &record) => (raw, sig),
            _ => return Ok(None),
        }
    };
    Ok(Some(SessionEntry {
        id: *id,
        record: raw,
        signer: signature.signer,
        signature: signature.signature.to_vec(),
    }))
}

/// The ref key holding the owner's signature over the stored record of a session.
pub fn signature_key(id: &SessionId) -> Vec<u8> {
    crate::store::keys::sig(id)
}

/// Encodes a record signature for [`signature_key`].
pub fn encode_signature(sig: &RefSignature) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(sig.signer.as_bytes());
    out.extend_from_slice(&sig.signature);
    out
}

fn stored_signature(store: &Store, id: &SessionId) -> Result<Option<RefSignature>, StoreError> {
    let raw = store.storage().get_ref(&signature_key(id))?;
    Ok(raw.and_then(|raw| {
        let signer: [u8; 32] = raw.get(..32)?.try_into().ok()?;
        let signature: [u8; 64] = raw.get(32..96)?.try_into().ok()?;
        Some(RefSignature {
            signer: MemberId(signer),
            signature,
        })
    }))
}

/// What `peer` may see of this store, `me` being this store's node.
pub fn view_for(
    store: &Store,
    identity: &Identity,
    peer: &MemberId,
    now_ms: i64,
) -> Result<View, AccessError> {
    view_where(store, identity, now_ms, |chain| {
        let ever = chain
            .versions()
            .iter()
            .any(|v| v.manifest.member(peer).is_some());
        (ever, chain.head().manifest.member(peer).is_some())
    })
}

/// What this node and a relay serving `teams` (the relay's registered teams we are in) have
/// in common: those teams' manifests and shares, and public shares (SPEC.md §16.4).
pub fn view_for_teams(
    store: &Store,
    identity: &Identity,
    teams: &[TeamId],
    now_ms: i64,
) -> Result<View, AccessError> {
    view_where(store, identity, now_ms, |chain| {
        let listed = teams.contains(&chain.team_id());
        (listed, listed)
    })
}

/// The view for a peer described by `member_of(chain) = (ever a member, a member now)`.
fn view_where(
    store: &Store,
    identity: &Identity,
    now_ms: i64,
    member_of: impl Fn(&TeamChain) -> (bool, bool),
) -> Result<View, AccessError> {
    let me = MemberId(identity.verifying_key().to_bytes());
    let mut view = View::default();
    // Teams both are in now; teams the peer was ever in (for the manifests).
    let mut shared_teams = Vec::new();
    for chain in team::list(store)? {
        let team = chain.team_id();
        let head = &chain.head().manifest;
        if head.member(&me).is_none() {
            continue;
        }
        let (ever, now) = member_of(&chain);
        if !ever {
            continue;
        }
        for signed in chain.versions() {
            view.items.insert(
                manifest_item(&team, &signed.encode()),
                ViewItem::Manifest {
                    team,
                    version: signed.manifest.version,
                },
            );
        }
        if now {
            shared_teams.push(team);
        }
    }
    for share in crate::share::all_shares(store)? {
        let record = &share.record;
        let grant = match record.audience {
            Audience::Team(team) if shared_teams.contains(&team) => Grant::Team(team),
            Audience::Team(_) => continue,
            Audience::Public => Grant::Public,
        };
        // Only the session's owner may share it; anything else is not passed on.
        let Some(entry) = session_entry(store, identity, &record.session)? else {
            continue;
        };
        let owner = SessionRecord::decode(&entry.record)
            .ok()
            .and_then(|r| r.owner);
        if owner != Some(record.sharer) {
            continue;
        }
        view.items.insert(
            share_item(&record.session, &share.encode()),
            ViewItem::Share {
                key: share_key(&record.session, &record.audience),
            },
        );
        if share.is_live(now_ms) {
            let item = session_item(&record.session, &entry.record);
            // A team grant wins over a public one: team content only travels sealed.
            let keep = matches!(
                view.items.get(&item),
                Some(ViewItem::Session {
                    grant: Grant::Team(_),
                    ..
                })
            );
            if !keep {
                view.items.insert(
                    item,
                    ViewItem::Session {
                        id: record.session,
                        grant,
                    },
                );
            }
        }
    }
    Ok(view)
}
