//! Sharing: signed share records, unshare and expiry, what is shared with me, and the secret
//! gate every share passes first.
//!
//! A share record says "session S (at head H) is visible to team T / to anyone, shared by M at
//! time t, until e, with this note and title", signed by M's node key, so a peer or relay that
//! receives it can check who shared what. Unsharing writes a newer signed record marked revoked
//! rather than deleting, so the revocation itself can travel to peers; access ends from then
//! on. Refs: `share/<session hex>/<team hex | "public">` → signed record (SPEC.md §11).
//!
//! Before anything is shared the session, its record's texts and the share's own note and
//! title pass the secret gate ([`crate::share::gate`], SPEC.md §11.2): a hit blocks the share with a
//! list, unless the user shares a redacted copy (a new chain whose redacted spans are marked,
//! with the note and title redacted too; the original stays untouched) or overrides.

pub mod access;
pub mod gate;
pub mod outgoing;
pub mod secrets;

use tapes_protocol::{MemberId, SessionId, StoredObject, TeamId};

use crate::identity::Identity;
use crate::session::lineage::is_mine;
use crate::session::{
    session_ref_key, Lineage, SessionRecord, SessionSource, SessionSummary, Visibility,
};
use crate::store::backend::RefUpdate;
use crate::store::{Store, StoreError};
use gate::{Exit, GateError};

pub use tapes_protocol::signed::{Audience, ShareRecord, SignedShare};

/// The part of a share's ref key that names its audience: the team's hex id or `public`.
fn audience_key(audience: &Audience) -> String {
    match audience {
        Audience::Team(t) => t.to_hex(),
        Audience::Public => "public".into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("you can only share your own sessions; fork it first (`tapes fork {0}`)")]
    NotYours(String),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("{}", gate::refusal_text(Exit::Share, session, *count, list))]
    Secrets {
        session: String,
        count: usize,
        list: String,
    },
    #[error("session {session} has no share to revoke{}; nothing changed (`tapes share {session}` shares it)", match .audience { None => "", Some(Audience::Public) => " for the public", Some(Audience::Team(_)) => " for that team" })]
    NotShared {
        session: String,
        audience: Option<Audience>,
    },
    #[error("share record of session {0} is damaged: {1}")]
    Damaged(String, String),
    #[error("cannot make a new session id: {0}")]
    Random(String),
}

/// Where share records live among the refs.
pub const SHARE_REF_PREFIX: &[u8] = crate::store::keys::SHARE;

/// The ref key of a share: `share/<session hex>/<team hex | "public">`.
pub fn share_key(session: &SessionId, audience: &Audience) -> Vec<u8> {
    crate::store::keys::share(session, &audience_key(audience))
}

pub use crate::share::gate::{scan_chain, Hit, SecretPolicy};

/// The session's own descriptive fields (title, description, note, tags) that contain
/// possible secrets, listed like node hits: `  session S record (title): kind masked`.
pub fn scan_record_fields(store: &Store, id: &SessionId) -> Result<Vec<String>, ShareError> {
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    Ok(gate::scan_texts(id, "record", &gate::record_texts(&record))
        .iter()
        .map(gate::FieldHit::describe)
        .collect())
}

/// Scans every node of a session for secrets.
pub fn scan_session(store: &Store, id: &SessionId) -> Result<Vec<Hit>, ShareError> {
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    Ok(scan_chain(id, &store.chain(&record.head)?, 0))
}

/// The texts a share publishes besides the session (the relay's public page shows them).
pub fn share_texts(options: &ShareOptions) -> Vec<(&'static str, &str)> {
    let mut out = Vec::new();
    if let Some(title) = &options.title {
        out.push(("title", title.as_str()));
    }
    if let Some(note) = &options.note {
        out.push(("note", note.as_str()));
    }
    out
}

/// Makes a redacted copy of session `id`: a new chain (every node re-encoded with redacted
/// blocks, so new ids) in a new session owned by the same owner, whose lineage names the
/// original. Returns the copy's id and how many spans were redacted.
pub fn redacted_copy(
    store: &Store,
    id: &SessionId,
    now_ms: i64,
) -> Result<(SessionId, usize), ShareError> {
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    let chain = store.chain(&record.head)?;
    let mut objects = Vec::with_capacity(chain.len());
    let mut parent = None;
    let mut redacted = 0;
    let mut summary = SessionSummary::default();
    for (_, node) in &chain {
        let (blocks, spans) = secrets::redact_blocks(&node.body.blocks);
        redacted += spans;
        let object = StoredObject::encode_parts(
            parent.as_ref(),
            node.body.role,
            &node.body.model,
            &blocks,
            &node.meta,
        );
        summary.add(node.body.role, &node.body.model, &blocks, &node.meta);
        parent = Some(object.id);
        objects.push(object);
    }
    let head = parent.ok_or_else(|| ShareError::Damaged(id.short(), "empty session".into()))?;
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| ShareError::Random(e.to_string()))?;
    let copy = SessionId(raw);
    let new = SessionRecord {
        head,
        source: SessionSource {
            kind: "tapes".into(),
            id: copy.to_hex(),
            path: String::new(),
        },
        // The record's own texts travel with the share too: redact them like the nodes.
        title: Some(format!(
            "{} (redacted)",
            record
                .title
                .as_deref()
                .map(redact_field)
                .unwrap_or_else(|| summary.first_prompt.chars().take(60).collect())
        )),
        description: record.description.as_deref().map(redact_field),
        note: record.note.as_deref().map(redact_field),
        tags: record.tags.iter().map(|t| redact_field(t)).collect(),
        parent_session: None,
        summary,
        created_ms: now_ms,
        updated_ms: now_ms,
        lineage: Lineage {
            root: record.lineage.root,
            parent: Some(*id),
            base_count: 0,
            base_digest: None,
        },
        visibility: Visibility::Private,
        ..record
    };
    let update = RefUpdate {
        key: session_ref_key(&copy),
        expected: None,
        new: Some(new.encode()),
    };
    store.commit(&objects, &[update])?;
    Ok((copy, redacted))
}

/// `text` with every secret the scanner finds replaced by its `[REDACTED:<kind>]` marker.
fn redact_field(text: &str) -> String {
    secrets::redact_text(text, &secrets::scan_text(text))
}

/// Options of one share.
#[derive(Debug, Clone)]
pub struct ShareOptions {
    pub audience: Audience,
    pub title: Option<String>,
    pub note: Option<String>,
    pub expires_ms: Option<i64>,
    pub secrets: SecretPolicy,
}

/// What a share did.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The session that was shared (a redacted copy's id under `SecretPolicy::Redact`).
    pub session: SessionId,
    pub redacted_spans: usize,
    /// Secrets redacted in the share's own note and title.
    pub redacted_texts: usize,
}

/// Shares session `id` after the secret gate; writes the signed record and the session's
/// visibility in one ref transaction.
pub fn share(
    store: &Store,
    identity: &Identity,
    id: &SessionId,
    options: &ShareOptions,
    now_ms: i64,
) -> Result<Shared, ShareError> {
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    if !is_mine(&record, store.local_owner()?.as_ref()) {
        return Err(ShareError::NotYours(id.short()));
    }
    let findings = gate::scan_session(store, id, None, &share_texts(options))?;
    let mut redacted_texts = 0;
    let (session, redacted_spans, title, note) = match findings.check(Exit::Share, options.secrets)
    {
        Ok(gate::Verdict::Clean | gate::Verdict::Allowed(_)) => {
            (*id, 0, options.title.clone(), options.note.clone())
        }
        Ok(gate::Verdict::Redact(found)) => {
            redacted_texts = found.fields.iter().filter(|f| f.place == "share").count();
            // A copy only when the session itself has findings; the share's own texts are
            // redacted either way.
            let (copy, spans) =
                if found.nodes.is_empty() && found.fields.iter().all(|f| f.place != "record") {
                    (*id, 0)
                } else {
                    redacted_copy(store, id, now_ms)?
                };
            // The note and title are published with the share: redacted like the copy.
            let title = options.title.as_deref().map(redact_field);
            let note = options.note.as_deref().map(redact_field);
            (copy, spans, title, note)
        }
        Err(GateError::Refused { count, list, .. }) => {
            return Err(ShareError::Secrets {
                session: id.short(),
                count,
                list,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let record = store
        .session(&session)?
        .ok_or(StoreError::SessionNotFound(session.short()))?;
    // Sharing again keeps what this call does not give: the earlier share's title and note,
    // and its expiry while that share is still live (a revoked or lapsed one's has passed).
    let previous = [session, *id]
        .iter()
        .map(|s| store.storage().get_ref(&share_key(s, &options.audience)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::from)?
        .into_iter()
        .flatten()
        .find_map(|raw| SignedShare::decode_stored(&raw).ok());
    let (previous_title, previous_note, previous_expiry) = match &previous {
        Some(p) => (
            p.record.title.clone(),
            p.record.note.clone(),
            p.record.expires_ms.filter(|_| p.is_live(now_ms)),
        ),
        None => (None, None, None),
    };
    let note = note.or(previous_note);
    let expires_ms = options.expires_ms.or(previous_expiry);
    let signed = SignedShare::sign(
        ShareRecord {
            session,
            head: record.head,
            audience: options.audience,
            sharer: MemberId(identity.verifying_key().to_bytes()),
            sharer_name: identity.profile.name.clone(),
            title: title.or(previous_title).or_else(|| record.title.clone()),
            note: note.clone(),
            shared_ms: now_ms,
            expires_ms,
            revoked: false,
        },
        identity.signing_key(),
    );
    let raw = store.session_raw(&session)?;
    let mut updated = record.clone();
    updated.visibility = match options.audience {
        Audience::Public => Visibility::Public,
        Audience::Team(t) if record.visibility != Visibility::Public => Visibility::Team(t),
        Audience::Team(_) => record.visibility,
    };
    if let Some(note) = note {
        updated.note = Some(note);
    }
    updated.expires_ms = expires_ms.or(record.expires_ms);
    let key = share_key(&session, &options.audience);
    let current = store.storage().get_ref(&key).map_err(StoreError::from)?;
    store.commit(
        &[],
        &[
            RefUpdate {
                key,
                expected: current,
                new: Some(signed.encode()),
            },
            RefUpdate {
                key: session_ref_key(&session),
                expected: raw,
                new: Some(updated.encode()),
            },
        ],
    )?;
    Ok(Shared {
        session,
        redacted_spans,
        redacted_texts,
    })
}

/// Unshares: writes a revoked record (so peers learn of it) and narrows the session's
/// visibility to what remaining shares allow.
pub fn unshare(
    store: &Store,
    identity: &Identity,
    id: &SessionId,
    audience: Option<Audience>,
    now_ms: i64,
) -> Result<usize, ShareError> {
    let mut revoked = 0;
    let mut updates = Vec::new();
    let mut still_team = None;
    let mut still_public = false;
    for (key, share) in shares_of(store, id)? {
        let hit = audience.is_none_or(|a| a == share.record.audience);
        if hit && !share.record.revoked {
            let mut record = share.record.clone();
            record.revoked = true;
            record.shared_ms = now_ms;
            let signed = SignedShare::sign(record, identity.signing_key());
            updates.push(RefUpdate {
                key,
                expected: Some(share.encode()),
                new: Some(signed.encode()),
            });
            revoked += 1;
        } else if share.is_live(now_ms) {
            match share.record.audience {
                Audience::Public => still_public = true,
                Audience::Team(t) => still_team = Some(t),
            }
        }
    }
    if revoked == 0 {
        return Err(ShareError::NotShared {
            session: id.short(),
            audience,
        });
    }
    let raw = store.session_raw(id)?;
    if let Some(raw) = raw {
        let mut record = SessionRecord::decode(&raw)
            .map_err(|e| ShareError::Damaged(id.short(), e.to_string()))?;
        record.visibility = if still_public {
            Visibility::Public
        } else {
            still_team.map_or(Visibility::Private, Visibility::Team)
        };
        updates.push(RefUpdate {
            key: session_ref_key(id),
            expected: Some(raw),
            new: Some(record.encode()),
        });
    }
    store.commit(&[], &updates)?;
    Ok(revoked)
}

/// Every share record of session `id`, verified.
pub fn shares_of(store: &Store, id: &SessionId) -> Result<Vec<(Vec<u8>, SignedShare)>, ShareError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(&crate::store::keys::shares_of(id)) {
        let (key, value) = entry.map_err(StoreError::from)?;
        let share =
            SignedShare::decode(&value).map_err(|why| ShareError::Damaged(id.short(), why))?;
        out.push((key, share));
    }
    Ok(out)
}

/// Every share record in the store (ones that do not decode are skipped with a warning; their
/// signatures were checked when they were stored, see [`SignedShare::decode_stored`]).
pub fn all_shares(store: &Store) -> Result<Vec<SignedShare>, ShareError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(SHARE_REF_PREFIX) {
        let (key, value) = entry.map_err(StoreError::from)?;
        match SignedShare::decode_stored(&value) {
            Ok(share) => out.push(share),
            Err(why) => {
                tracing::warn!(key = %String::from_utf8_lossy(&key), %why, "skipping a damaged share record")
            }
        }
    }
    Ok(out)
}

/// Read markers for `tapes shared`.
fn read_key(share: &ShareRecord) -> Vec<u8> {
    crate::store::keys::read(&share.session, &audience_key(&share.audience))
}

pub fn is_read(store: &Store, share: &ShareRecord) -> Result<bool, ShareError> {
    Ok(store
        .storage()
        .get_ref(&read_key(share))
        .map_err(StoreError::from)?
        .is_some())
}

pub fn mark_read(store: &Store, share: &ShareRecord) -> Result<(), ShareError> {
    let key = read_key(share);
    let current = store.storage().get_ref(&key).map_err(StoreError::from)?;
    if current.is_none() {
        store.commit(
            &[],
            &[RefUpdate {
                key,
                expected: None,
                new: Some(vec![1]),
            }],
        )?;
    }
    Ok(())
}

/// What is shared with `me` right now: live shares by others to teams I am in, or public;
/// newest first.
pub fn shared_with_me(
    store: &Store,
    me: &MemberId,
    my_teams: &[TeamId],
    now_ms: i64,
) -> Result<Vec<SignedShare>, ShareError> {
    let mut out: Vec<SignedShare> = all_shares(store)?
        .into_iter()
        .filter(|s| &s.record.sharer != me && s.is_live(now_ms))
        .filter(|s| match s.record.audience {
            Audience::Public => true,
            // The signature proves who shared; the team's verified manifest proves they may.
            Audience::Team(t) => {
                my_teams.contains(&t)
                    && crate::team::load(store, &t)
                        .is_ok_and(|chain| chain.head().manifest.member(&s.record.sharer).is_some())
            }
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.record.shared_ms));
    Ok(out)
}

/// The session id in a public page link (`https://host/s/<32 hex digits>[/]`, the seed's
/// `<sessionId|url>`), or None when `text` is not such a link.
pub fn session_from_link(text: &str) -> Option<SessionId> {
    let text = text.trim();
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return None;
    }
    let path = text.split(['?', '#']).next()?;
    let (_, id) = path.trim_end_matches('/').rsplit_once("/s/")?;
    id.parse().ok()
}

#[cfg(test)]
mod link_tests {
    #[test]
    fn page_links_name_their_session() {
        let hex = "0123456789abcdef0123456789abcdef";
        let id = super::session_from_link(&format!("https://tapes.example.com/s/{hex}/")).unwrap();
        assert_eq!(id.to_hex(), hex);
        assert!(super::session_from_link(&format!("http://10.0.0.3:8080/s/{hex}?x=1")).is_some());
        assert!(super::session_from_link("https://tapes.example.com/s/0123").is_none());
        assert!(super::session_from_link(hex).is_none());
    }
}
