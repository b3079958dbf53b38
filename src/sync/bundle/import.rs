//! Importing a bundle (SPEC.md §12.5): all or nothing and idempotent. The check pass stages
//! each new node in a pack that is not yet part of the store; only when everything has checked
//! out are the staged nodes committed and every ref written in one compare-and-swap
//! transaction, so a bundle lands whole or not at all.

use super::*;

/// What happened to one session on import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// It existed here and moved forward (or its record changed).
    Updated,
    /// Already as the bundle has it.
    Unchanged,
    /// This store already has a newer history of it.
    Newer,
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub info: BundleInfo,
    pub sessions: Vec<(SessionId, Outcome)>,
    pub shares_written: usize,
    pub objects_written: usize,
    pub bytes_written: usize,
}

impl ImportReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.sessions.iter().filter(|s| s.1 == outcome).count()
    }

    /// True when the import changed nothing.
    pub fn nothing_new(&self) -> bool {
        self.objects_written == 0
            && self.shares_written == 0
            && self
                .sessions
                .iter()
                .all(|s| matches!(s.1, Outcome::Unchanged | Outcome::Newer))
    }
}

/// Imports a bundle: all or nothing, idempotent. One pass checks everything [`verify`] checks
/// and stages the new nodes meanwhile; only if it passes are they committed, then the refs.
/// `progress` gets bytes read.
pub fn import(
    store: &Store,
    identity: Option<&Identity>,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport, BundleError> {
    let file = File::open(path).map_err(io(path))?;
    let size = file.metadata().map_err(io(path))?.len();
    // An error anywhere below drops the staging, and the staged nodes with it.
    let staging = store.storage().stage().map_err(StoreError::from)?;
    let mut check = Check::new(store, identity, path, Some(staging));
    let checksum = run(&file, path, &mut check, progress)?;
    let info = check.info(path, size, checksum);
    let (updates, outcomes, shares_written) = plan(store, &check)?;
    let mut report = ImportReport {
        info,
        sessions: outcomes,
        shares_written,
        objects_written: 0,
        bytes_written: 0,
    };
    let staging = check.staging.take();
    if check.new_objects == 0 && updates.is_empty() {
        return Ok(report);
    }
    let written = commit_staged(store, staging)?;
    // Every new node is stored and flushed; now every ref in one transaction.
    match store.commit(&[], &updates) {
        Ok(_) => {}
        Err(StoreError::Storage(StorageError::Conflict { .. })) => return Err(BundleError::Raced),
        Err(e) => return Err(e.into()),
    }
    report.objects_written = written.objects;
    report.bytes_written = written.bytes;
    Ok(report)
}

/// Adds the staged nodes to the store and makes them durable before any ref names them
/// (SPEC.md §6).
fn commit_staged(
    store: &Store,
    staging: Option<Box<dyn Staging + '_>>,
) -> Result<Written, StoreError> {
    let Some(staging) = staging else {
        return Ok(Written::default());
    };
    let started = std::time::Instant::now();
    let written = staging.commit()?;
    let committed = started.elapsed();
    if written.objects > 0 {
        store.storage().flush()?;
    }
    tracing::debug!(
        objects = written.objects,
        commit_ms = committed.as_millis() as u64,
        flush_ms = (started.elapsed() - committed).as_millis() as u64,
        "stored a bundle's nodes"
    );
    Ok(written)
}

type Plan = (Vec<RefUpdate>, Vec<(SessionId, Outcome)>, usize);

/// The ref updates an import makes, decided before anything is written.
fn plan(store: &Store, check: &Check<'_>) -> Result<Plan, BundleError> {
    let mut updates = Vec::new();
    let mut outcomes = Vec::new();
    for s in &check.sessions {
        let raw = store.session_raw(&s.id)?;
        // Records travel without the local transcript path (SPEC §11.3); a session this
        // store already has keeps its own path, so one's own bundle imports as unchanged.
        let local_path = raw
            .as_deref()
            .and_then(|bytes| SessionRecord::decode(bytes).ok())
            .map(|here| here.source.path)
            .filter(|path| !path.is_empty());
        let new = match local_path {
            Some(path) if s.record.source.path.is_empty() => {
                let mut kept = s.record.clone();
                kept.source.path = path;
                kept.encode()
            }
            _ => s.record.encode(),
        };
        let outcome = match &raw {
            None => Outcome::Created,
            Some(bytes) if bytes == &new => Outcome::Unchanged,
            Some(bytes) => {
                let here =
                    SessionRecord::decode(bytes).map_err(|source| StoreError::BadRecord {
                        id: s.id.to_hex(),
                        source,
                    })?;
                if here.owner.is_some() && here.owner != s.record.owner {
                    return Err(BundleError::OtherOwner {
                        session: s.id.short(),
                        here: here.owner.map(|o| o.short()).unwrap_or_default(),
                        there: s.record.owner.map(|o| o.short()).unwrap_or_default(),
                    });
                }
                if here.head == s.record.head || descends(store, check, &s.record.head, &here.head)?
                {
                    Outcome::Updated
                } else if descends(store, check, &here.head, &s.record.head)? {
                    Outcome::Newer
                } else {
                    return Err(BundleError::Diverged {
                        session: s.id.short(),
                        here: here.head.short(),
                        there: s.record.head.short(),
                    });
                }
            }
        };
        if outcome == Outcome::Created || outcome == Outcome::Updated {
            updates.push(RefUpdate {
                key: session_ref_key(&s.id),
                expected: raw,
                new: Some(new),
            });
        }
        outcomes.push((s.id, outcome));
    }
    let mut shares = 0;
    for (share, _, payload) in &check.shares {
        let key = share_key(&share.record.session, &share.record.audience);
        let current = store.storage().get_ref(&key).map_err(StoreError::from)?;
        let newer_here = current
            .as_deref()
            .and_then(|c| SignedShare::decode(c).ok())
            .is_some_and(|c| c.record.shared_ms >= share.record.shared_ms);
        if current.as_deref() == Some(payload.as_slice()) || newer_here {
            continue;
        }
        updates.push(RefUpdate {
            key,
            expected: current,
            new: Some(payload.clone()),
        });
        shares += 1;
    }
    Ok((updates, outcomes, shares))
}

/// The version of `chain` that removed `member` (the first one without them after one with
/// them) and who signed it.
pub(super) fn removed_by(chain: &TeamChain, member: &MemberId) -> Option<(u64, MemberId)> {
    let versions = chain.versions();
    versions.windows(2).find_map(|pair| {
        let (before, after) = (&pair[0], &pair[1]);
        (before.manifest.member(member).is_some() && after.manifest.member(member).is_none()).then(
            || {
                let by = after
                    .signatures
                    .first()
                    .map_or(MemberId([0; 32]), |s| s.signer);
                (after.manifest.version, by)
            },
        )
    })
}

/// True when `ancestor` is on the chain of `head` (through the bundle's nodes, then the store).
fn descends(
    store: &Store,
    check: &Check<'_>,
    head: &NodeId,
    ancestor: &NodeId,
) -> Result<bool, BundleError> {
    let mut seen = HashSet::new();
    let mut next = Some(*head);
    while let Some(id) = next {
        if &id == ancestor {
            return Ok(true);
        }
        if !seen.insert(id) {
            return Ok(false);
        }
        next = match check.parents.get(&id) {
            Some(parent) => *parent,
            None => match store.storage().get_object(&id).map_err(StoreError::from)? {
                Some(bytes) => StoredObject::parent_of(&bytes)
                    .map_err(|source| StoreError::BadNode { id, source })?,
                None => None,
            },
        };
    }
    Ok(false)
}
