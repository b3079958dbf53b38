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
pub mod summary;

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
    #[error(transparent)]
    ContentStaysHere(#[from] summary::ContentStaysHere),
    #[error("{sharer} shared session {session} with {audience} as metadata only: its messages were not shared with you, so there is nothing here to show, fork or check out (`tapes shared` lists its summary). Ask {sharer} to share it with its content: `tapes share {session} --team <team>` without --metadata-only")]
    ContentNotShared {
        session: String,
        sharer: String,
        audience: String,
    },
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
    /// Only the summary was shared (SPEC.md §11.4): asked for, or because the session's
    /// project keeps its content here (`content_policy` then says so).
    pub metadata_only: bool,
    /// Set when the project's `sync.content` setting made the share metadata-only.
    pub content_policy: Option<summary::ContentStaysHere>,
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
    // A project whose content stays here is shared as its summary only (SPEC.md §11.4).
    if let Err(stays) = summary::check_may_leave(store, id, &record)? {
        let prices = crate::session::pricing::PriceTable::defaults();
        let mut done = share_metadata_only(store, identity, id, options, false, &prices, now_ms)?;
        done.content_policy = Some(stays);
        return Ok(done);
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
    commit_share(
        store,
        identity,
        &record,
        &signed,
        signed.encode(),
        note,
        expires_ms,
        "content",
    )?;
    Ok(Shared {
        session,
        redacted_spans,
        redacted_texts,
        metadata_only: false,
        content_policy: None,
    })
}

/// Writes a signed share record (`bytes`: the record, and for a metadata-only share its
/// summary) and the session's visibility in one ref transaction, then the audit entry.
#[allow(clippy::too_many_arguments)]
fn commit_share(
    store: &Store,
    identity: &Identity,
    record: &SessionRecord,
    signed: &SignedShare,
    bytes: Vec<u8>,
    note: Option<String>,
    expires_ms: Option<i64>,
    detail: &str,
) -> Result<(), ShareError> {
    let session = signed.record.session;
    let options_audience = signed.record.audience;
    let raw = store.session_raw(&session)?;
    let mut updated = record.clone();
    updated.visibility = match options_audience {
        Audience::Public => Visibility::Public,
        Audience::Team(t) if record.visibility != Visibility::Public => Visibility::Team(t),
        Audience::Team(_) => record.visibility,
    };
    if let Some(note) = note {
        updated.note = Some(note);
    }
    updated.expires_ms = expires_ms.or(record.expires_ms);
    let key = share_key(&session, &options_audience);
    let current = store.storage().get_ref(&key).map_err(StoreError::from)?;
    store.commit(
        &[],
        &[
            RefUpdate {
                key,
                expected: current,
                new: Some(bytes),
            },
            RefUpdate {
                key: session_ref_key(&session),
                expected: raw,
                new: Some(updated.encode()),
            },
        ],
    )?;
    if let Audience::Team(team) = options_audience {
        audit_own(
            store,
            identity,
            &team,
            crate::audit::AuditAction::Share,
            &session,
            detail,
        );
    }
    Ok(())
}

/// Appends an entry about our own action to a team's audit log. The share or unshare is
/// already stored: a log that cannot be written is reported, not a reason to undo it.
fn audit_own(
    store: &Store,
    identity: &Identity,
    team: &TeamId,
    action: crate::audit::AuditAction,
    session: &SessionId,
    detail: &str,
) {
    let event = crate::audit::Event {
        action,
        actor: MemberId(identity.verifying_key().to_bytes()),
        actor_name: identity.profile.name.clone(),
        session: Some(*session),
        detail: detail.to_string(),
    };
    if let Err(e) = crate::audit::record(store, identity, team, event, crate::now_ms()) {
        tracing::warn!(error = %e, "could not append to the audit log");
    }
}

/// Shares session `id` as its signed summary only (SPEC.md §11.4): the share record travels
/// with a summary (counts, tokens, cost at `prices`, status, duration, model, project, title;
/// the first prompt only with `with_first_prompt`), and no node of the session ever does. The
/// texts that travel (title, note, first prompt) pass the secret gate like a share's note.
pub fn share_metadata_only(
    store: &Store,
    identity: &Identity,
    id: &SessionId,
    options: &ShareOptions,
    with_first_prompt: bool,
    prices: &crate::session::pricing::PriceTable,
    now_ms: i64,
) -> Result<Shared, ShareError> {
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    if !is_mine(&record, store.local_owner()?.as_ref()) {
        return Err(ShareError::NotYours(id.short()));
    }
    let previous = store
        .storage()
        .get_ref(&share_key(id, &options.audience))
        .map_err(StoreError::from)?
        .and_then(|raw| SignedShare::decode_stored(&raw).ok());
    let mut title = options
        .title
        .clone()
        .or_else(|| previous.as_ref().and_then(|p| p.record.title.clone()))
        .or_else(|| record.title.clone());
    let mut note = options
        .note
        .clone()
        .or_else(|| previous.as_ref().and_then(|p| p.record.note.clone()));
    let mut first_prompt = with_first_prompt.then(|| record.summary.first_prompt.clone());
    let expires_ms = options.expires_ms.or_else(|| {
        previous
            .as_ref()
            .and_then(|p| p.record.expires_ms.filter(|_| p.is_live(now_ms)))
    });
    // The secret gate over what travels: the texts, never the nodes (they stay here).
    let mut hits = Vec::new();
    for (place, text) in [
        ("title", &title),
        ("note", &note),
        ("first prompt", &first_prompt),
    ] {
        if let Some(text) = text {
            for hit in secrets::scan_text(text) {
                hits.push(format!("  share {place}: {}", hit.kind));
            }
        }
    }
    let mut redacted_texts = 0;
    if !hits.is_empty() {
        match options.secrets {
            SecretPolicy::Allow => {}
            SecretPolicy::Redact => {
                redacted_texts = hits.len();
                for text in [&mut title, &mut note, &mut first_prompt] {
                    if let Some(t) = text.as_mut() {
                        *t = redact_field(t);
                    }
                }
            }
            _ => {
                return Err(ShareError::Secrets {
                    session: id.short(),
                    count: hits.len(),
                    list: hits.join("\n"),
                })
            }
        }
    }
    let share_record = ShareRecord {
        session: *id,
        head: record.head,
        audience: options.audience,
        sharer: MemberId(identity.verifying_key().to_bytes()),
        sharer_name: identity.profile.name.clone(),
        title,
        note: note.clone(),
        shared_ms: now_ms,
        expires_ms,
        revoked: false,
    };
    let mut summary_fields = summary::summarize(store, &record, &share_record, prices, false)?;
    summary_fields.first_prompt = first_prompt;
    let signed = SignedShare::sign(share_record, identity.signing_key());
    let signed_summary =
        tapes_protocol::summary::SignedSummary::sign(summary_fields, identity.signing_key());
    let bytes = tapes_protocol::summary::attach(&signed.encode(), &signed_summary);
    commit_share(
        store,
        identity,
        &record,
        &signed,
        bytes,
        note,
        expires_ms,
        "metadata only",
    )?;
    Ok(Shared {
        session: *id,
        redacted_spans: 0,
        redacted_texts,
        metadata_only: true,
        content_policy: None,
    })
}

/// A metadata-only share someone shared with this store: the share and its verified summary.
#[derive(Debug, Clone)]
pub struct SummaryShare {
    pub share: SignedShare,
    pub summary: tapes_protocol::summary::ShareSummary,
}

/// Every share record in the store that carries a summary (metadata-only shares), the summary
/// checked against its record and signer. Ones that do not check are skipped with a warning.
pub fn all_summaries(store: &Store) -> Result<Vec<SummaryShare>, ShareError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(SHARE_REF_PREFIX) {
        let (key, value) = entry.map_err(StoreError::from)?;
        if !tapes_protocol::summary::has_tail(&value) {
            continue;
        }
        let checked = SignedShare::decode_stored(&value).and_then(|share| {
            tapes_protocol::summary::of_share_bytes(&value)
                .map(|s| s.map(|s| (share, s.summary)))
                .map_err(tapes_protocol::signed::ShareError::from)
        });
        match checked {
            Ok(Some((share, summary))) => out.push(SummaryShare { share, summary }),
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(key = %String::from_utf8_lossy(&key), %why, "skipping a damaged share summary")
            }
        }
    }
    Ok(out)
}

/// The metadata-only share of session `id` held here, if any (newest first when several
/// audiences have one): what `show`, `fork` and `checkout` name when the content is not here.
pub fn summary_of(store: &Store, id: &SessionId) -> Result<Option<SummaryShare>, ShareError> {
    let mut found: Option<SummaryShare> = None;
    for entry in store.storage().refs(&crate::store::keys::shares_of(id)) {
        let (_, value) = entry.map_err(StoreError::from)?;
        if let (Ok(share), Ok(Some(summary))) = (
            SignedShare::decode_stored(&value),
            tapes_protocol::summary::of_share_bytes(&value),
        ) {
            if found
                .as_ref()
                .is_none_or(|f| f.share.record.shared_ms < share.record.shared_ms)
            {
                found = Some(SummaryShare {
                    share,
                    summary: summary.summary,
                });
            }
        }
    }
    Ok(found)
}

/// Resolves a session the user names for something that needs its messages (`show`, `fork`,
/// `checkout`): like [`Store::resolve_session`], but a session shared with this store as
/// metadata only is named as such ([`ShareError::ContentNotShared`]: who to ask) rather than
/// "not found".
pub fn resolve_content(store: &Store, input: &str) -> Result<SessionId, ShareError> {
    match store.resolve_session(input) {
        Err(StoreError::SessionNotFound(_)) => {}
        other => return Ok(other?),
    }
    let prefix = input.trim().to_ascii_lowercase();
    let mut key = SHARE_REF_PREFIX.to_vec();
    key.extend_from_slice(prefix.as_bytes());
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::SessionNotFound(input.to_string()).into());
    }
    for entry in store.storage().refs(&key) {
        let (_, value) = entry.map_err(StoreError::from)?;
        if !tapes_protocol::summary::has_tail(&value) {
            continue;
        }
        if let Ok(share) = SignedShare::decode_stored(&value) {
            let r = &share.record;
            let audience = match r.audience {
                Audience::Public => "everyone".to_string(),
                Audience::Team(t) => match crate::team::load(store, &t) {
                    Ok(chain) => format!("team \"{}\"", chain.head().manifest.name),
                    Err(_) => format!("team {}", t.short()),
                },
            };
            return Err(ShareError::ContentNotShared {
                session: r.session.short(),
                sharer: if r.sharer_name.is_empty() {
                    r.sharer.short()
                } else {
                    r.sharer_name.clone()
                },
                audience,
            });
        }
    }
    Err(StoreError::SessionNotFound(input.to_string()).into())
}

/// Whether this node keeps the content of `session` back from `audience` (SPEC.md §11.4).
pub fn content_withheld(
    store: &Store,
    session: &SessionId,
    audience: &Audience,
) -> Result<bool, ShareError> {
    Ok(summary::withheld(store, session, audience)?)
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
    let mut revoked_teams = Vec::new();
    for (key, share) in shares_of(store, id)? {
        let hit = audience.is_none_or(|a| a == share.record.audience);
        if hit && !share.record.revoked {
            let mut record = share.record.clone();
            record.revoked = true;
            record.shared_ms = now_ms;
            let signed = SignedShare::sign(record, identity.signing_key());
            updates.push(RefUpdate {
                key: key.clone(),
                // The bytes as stored (a metadata-only share carries its summary after them).
                expected: store.storage().get_ref(&key).map_err(StoreError::from)?,
                new: Some(signed.encode()),
            });
            if let Audience::Team(team) = share.record.audience {
                revoked_teams.push(team);
            }
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
    for team in revoked_teams {
        audit_own(
            store,
            identity,
            &team,
            crate::audit::AuditAction::Unshare,
            id,
            "",
        );
    }
    Ok(revoked)
}

/// Every share record of session `id`, verified.
pub fn shares_of(store: &Store, id: &SessionId) -> Result<Vec<(Vec<u8>, SignedShare)>, ShareError> {
    let mut out = Vec::new();
    for entry in store.storage().refs(&crate::store::keys::shares_of(id)) {
        let (key, value) = entry.map_err(StoreError::from)?;
        let share = SignedShare::decode(&value)
            .map_err(|why| ShareError::Damaged(id.short(), why.to_string()))?;
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
