//! Pull and push of one session against a [`Remote`].
//!
//! Pull copies a session you own from a remote: the missing nodes (verified before anything is
//! stored) and its ref. Push sends the nodes after your base and asks the remote to move the
//! ref from your base digest to your head — compare-and-swap, so two people continuing the same
//! session from the same base cannot both win; the loser is told to pull or branch.
//!
//! Like a share, a push leaves the machine, so [`push_gated`] runs the secret gate
//! ([`crate::share::gate`], SPEC.md §11.2) on what it would send first: the nodes after the base, and
//! the record's texts when the remote does not hold the session yet. A session new to the remote
//! can go as a redacted copy instead; a continuation cannot (redacting changes node ids). What
//! is sent carries no local paths ([`crate::share::outgoing`], §11.3): the record's source path is
//! blanked before it is signed, and node metadata keeps only the project's name.

use tapes_protocol::{MemberId, Node, NodeId, SessionId, StoredObject};

use crate::identity::Identity;
use crate::session::lineage::is_mine;
use crate::session::{session_ref_key, SessionRecord};
use crate::share::gate::{self, Exit, GateError, SecretPolicy, Verdict};
use crate::share::outgoing::{self, PathPolicy};
use crate::share::ShareError;
use crate::store::backend::RefUpdate;
use crate::store::{Store, StoreError};
use crate::sync::remote::{PushPlan, RefSignature, Remote, RemoteError};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The session's project keeps its content on this machine (SPEC.md §11.4).
    #[error(transparent)]
    ContentStaysHere(#[from] crate::share::summary::ContentStaysHere),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The seed's wording for sessions that do not exist or are not yours to pull.
    #[error("Session not found.")]
    NotFound,
    #[error(
        "session {0} belongs to someone else; fork it to push your own copy (`tapes fork {0}`)"
    )]
    NotYours(String),
    #[error(
        "session {session}: your base {base} is not in its history here; `tapes pull` it again"
    )]
    BaseNotInHistory { session: String, base: String },
    #[error("node {id} from remote {remote} does not verify: {why}; nothing was stored")]
    BadObject {
        remote: String,
        id: NodeId,
        why: String,
    },
    /// The secret gate refused what a push would send (or `--redact` where it cannot be done).
    #[error(transparent)]
    Gate(#[from] GateError),
    /// Making the redacted copy that goes in the session's place.
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// What a pull brought.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: SessionRecord,
    pub new_nodes: usize,
    /// The number of messages, which is the base count for a later push.
    pub count: u64,
}

/// Pulls session `id` (yours) from `remote` into `store`.
pub fn pull(store: &Store, remote: &dyn Remote, id: &SessionId) -> Result<Pulled, TransferError> {
    let record = remote.session(id)?.ok_or(TransferError::NotFound)?;
    if !is_mine(&record, store.local_owner()?.as_ref()) {
        return Err(TransferError::NotFound);
    }
    let mut have_error = None;
    let objects = remote.fetch_chain(id, &record.head, &mut |node| match store.has_node(node) {
        Ok(present) => present,
        Err(e) => {
            have_error = Some(e);
            true
        }
    })?;
    if let Some(e) = have_error {
        return Err(e.into());
    }
    // Verify everything before storing anything, and check the chain links up.
    let mut expected_parent = None;
    for (i, object) in objects.iter().enumerate() {
        let node = StoredObject::verify(&object.id, &object.bytes).map_err(|e| {
            TransferError::BadObject {
                remote: remote.name().into(),
                id: object.id,
                why: e.to_string(),
            }
        })?;
        if i > 0 && node.body.parent != expected_parent {
            return Err(TransferError::BadObject {
                remote: remote.name().into(),
                id: object.id,
                why: "its parent is not the node before it".into(),
            });
        }
        expected_parent = Some(object.id);
    }
    let current = store.session_raw(id)?;
    // Source paths never travel (SPEC.md §11.3); the one this store recorded stays.
    let mut record = record;
    if record.source.path.is_empty() {
        if let Some(here) = current
            .as_deref()
            .and_then(|raw| SessionRecord::decode(raw).ok())
        {
            if here.source.kind == record.source.kind && here.source.id == record.source.id {
                record.source.path = here.source.path;
            }
        }
    }
    let update = RefUpdate {
        key: session_ref_key(id),
        expected: current,
        new: Some(record.encode()),
    };
    let new_nodes = store.commit(&objects, &[update])?.objects;
    let count = record.summary.messages;
    Ok(Pulled {
        record,
        new_nodes,
        count,
    })
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub nodes: usize,
    pub head: NodeId,
}

/// Where the nodes a push sends begin in `chain` (root first): just after `base`, or at the root
/// when the remote does not have the session yet.
fn delta_start(
    chain: &[(NodeId, Node)],
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<usize, TransferError> {
    match base {
        None => Ok(0),
        Some(base) => chain
            .iter()
            .position(|(node, _)| node == base)
            .map(|i| i + 1)
            .ok_or_else(|| TransferError::BaseNotInHistory {
                session: id.short(),
                base: base.short(),
            }),
    }
}

/// The gate's exit for a push from `base`: a session the remote does not hold yet, or a
/// continuation of one it does.
pub fn push_exit(base: Option<&NodeId>) -> Exit {
    match base {
        None => Exit::Push,
        Some(_) => Exit::PushContinuation,
    }
}

/// The secret gate's findings in what a push of `id` from `base` would send: the nodes after
/// the base (the remote holds the rest already, so refusing over them would change nothing),
/// and the record's texts when the remote does not hold the session yet. Indexes are positions
/// in the whole chain, as `tapes share` lists them.
pub fn scan_outgoing(
    store: &Store,
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<gate::Findings, TransferError> {
    let record = store.session(id)?.ok_or(TransferError::NotFound)?;
    let chain = store.chain(&record.head)?;
    let start = delta_start(&chain, id, base)?;
    let fields = match base {
        None => gate::scan_texts(id, "record", &gate::record_texts(&record)),
        Some(_) => Vec::new(),
    };
    Ok(gate::Findings {
        session: *id,
        nodes: gate::scan_chain(id, &chain, start),
        fields,
    })
}

/// What `tapes push --dry-run` prints for `id`: the findings, and what `--redact` would do.
pub fn dry_run(
    store: &Store,
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<String, TransferError> {
    Ok(scan_outgoing(store, id, base)?.dry_run(push_exit(base)))
}

/// What [`push_gated`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatedPush {
    pub pushed: Pushed,
    /// The session that went: `id`, or the redacted copy made in its place.
    pub session: SessionId,
    /// Spans redacted in the copy (0 when the session went as is).
    pub redacted_spans: usize,
}

/// Pushes `id` through the secret gate: refused on a finding under [`SecretPolicy::Block`];
/// under [`SecretPolicy::Redact`] a redacted copy ([`crate::share::redacted_copy`], a new
/// session here) is pushed in its place when the remote does not hold `id` yet.
pub fn push_gated(
    store: &Store,
    identity: &Identity,
    remote: &dyn Remote,
    id: &SessionId,
    base: Option<&NodeId>,
    policy: SecretPolicy,
    now_ms: i64,
) -> Result<GatedPush, TransferError> {
    gated(
        store,
        identity,
        remote,
        id,
        base,
        push_exit(base),
        policy,
        now_ms,
    )
}

/// Creates `id` on `remote` (a new branch or fork: the remote does not hold it) through the
/// secret gate at `exit` ([`Exit::Branch`], [`Exit::Fork`]); as [`push_gated`] otherwise.
pub fn create_gated(
    store: &Store,
    identity: &Identity,
    remote: &dyn Remote,
    id: &SessionId,
    exit: Exit,
    policy: SecretPolicy,
    now_ms: i64,
) -> Result<GatedPush, TransferError> {
    gated(store, identity, remote, id, None, exit, policy, now_ms)
}

#[allow(clippy::too_many_arguments)]
fn gated(
    store: &Store,
    identity: &Identity,
    remote: &dyn Remote,
    id: &SessionId,
    base: Option<&NodeId>,
    exit: Exit,
    policy: SecretPolicy,
    now_ms: i64,
) -> Result<GatedPush, TransferError> {
    // A project whose content never leaves this machine is refused first (SPEC.md §11.4).
    if let Some(record) = store.session(id)? {
        crate::share::summary::check_may_leave(store, id, &record)??;
    }
    let findings = scan_outgoing(store, id, base)?;
    match findings.check(exit, policy)? {
        Verdict::Clean | Verdict::Allowed(_) => Ok(GatedPush {
            pushed: push(store, identity, remote, id, base)?,
            session: *id,
            redacted_spans: 0,
        }),
        Verdict::Redact(_) => {
            let (copy, spans) = crate::share::redacted_copy(store, id, now_ms)?;
            Ok(GatedPush {
                pushed: push(store, identity, remote, &copy, None)?,
                session: copy,
                redacted_spans: spans,
            })
        }
    }
}

/// Builds the push of local session `id` from `base`: the owner check (a session imported
/// before `tapes init` is this identity's, and the store's record says so from now on), the
/// nodes after the base, the outgoing record and the owner's signature over the update.
pub fn plan_push(
    store: &Store,
    identity: &Identity,
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<PushPlan, TransferError> {
    let raw = store.session_raw(id)?.ok_or(TransferError::NotFound)?;
    let mut record = SessionRecord::decode(&raw).map_err(|source| StoreError::BadRecord {
        id: id.to_hex(),
        source,
    })?;
    let me = MemberId(identity.verifying_key().to_bytes());
    match record.owner {
        Some(owner) if owner != me => return Err(TransferError::NotYours(id.short())),
        Some(_) => {}
        None => {
            record.owner = Some(me);
            store.commit(
                &[],
                &[RefUpdate {
                    key: session_ref_key(id),
                    expected: Some(raw),
                    new: Some(record.encode()),
                }],
            )?;
        }
    }
    let chain = store.chain(&record.head)?;
    let start = delta_start(&chain, id, base)?;
    let paths = PathPolicy::load(store)?;
    let mut leaving = outgoing::Outgoing::new(paths);
    let mut objects = Vec::with_capacity(chain.len() - start);
    for (node, _) in &chain[start..] {
        let bytes = store
            .storage()
            .get_object(node)
            .map_err(StoreError::from)?
            .ok_or(StoreError::MissingNode(*node))?;
        objects.push(StoredObject {
            id: *node,
            bytes: leaving.object(bytes),
        });
    }
    // Signed as it travels: without the local source path.
    let record = outgoing::record(&record, paths);
    let signature = RefSignature::sign(identity.signing_key(), id, base, &record);
    Ok(PushPlan {
        session: *id,
        base: base.copied(),
        objects,
        record,
        signature,
    })
}

/// Pushes local session `id` to `remote`, expecting the remote to be at `base` (the head you
/// pulled or branched from; `None` for a session the remote does not have yet).
pub fn push(
    store: &Store,
    identity: &Identity,
    remote: &dyn Remote,
    id: &SessionId,
    base: Option<&NodeId>,
) -> Result<Pushed, TransferError> {
    let plan = plan_push(store, identity, id, base)?;
    // What the remote stored: 0 when it already held this very update (a retried push).
    let nodes = remote.push(&plan)?;
    Ok(Pushed {
        nodes: nodes as usize,
        head: plan.record.head,
    })
}
