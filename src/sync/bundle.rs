//! Bundles: sessions in one file, for air-gapped transfer and archives (SPEC.md §12).
//!
//! [`create`] streams the selected sessions' nodes, their signed session records and share
//! records into a file (sealed to a team in ~1 MiB chunks, or plain), signs a manifest of
//! everything it included and ends with a BLAKE3 checksum. [`verify`] checks a bundle
//! without touching the store; [`import`] is all or nothing: it reads the file once, never
//! holding it whole, staging each new node as it is verified ([`crate::store::backend::Staging`]: a
//! pack file that is not part of the store yet). Only when every byte, every node, every
//! signature and the team chain have checked out does it commit the staged nodes, flush, and
//! write every ref in one compare-and-swap transaction, so a bundle lands whole or not at all.
//!
//! Memory: one frame (or sealed chunk) at a time, plus about 150 bytes per node in the bundle
//! (its id and parent, to check that chains link up, and where it sits in the staged pack) and
//! the session records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tapes_protocol::bundle::{
    self as format, kind, Checksum, FormatError, FrameHead, Header, ObjectList, RefEntry, Refs,
    SessionEntry, SignedRefs, PRELUDE_LEN, TRAILER_LEN,
};
use tapes_protocol::manifest::SignedManifest;
use tapes_protocol::team_chain::TeamChain;
use tapes_protocol::{MemberId, NodeId, SessionId, StoredObject, TeamId};

use crate::identity::Identity;
use crate::session::{session_ref_key, SessionRecord};
use crate::share::outgoing::{self, PathPolicy};
use crate::share::{share_key, Audience, SignedShare};
use crate::store::backend::{RefUpdate, Staging, StorageError, Written};
use crate::store::{Store, StoreError};
use crate::sync::remote::RefSignature;
use crate::team::keyring::{self, KeyError, KeyRing, Sealed};
use crate::team::{self, TeamError};

/// Plaintext per sealed chunk: large enough to amortize age's per-message header, small
/// enough to keep memory flat.
pub const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Team(#[from] TeamError),
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a tapes bundle, or its start is damaged: {why}")]
    NotABundle { path: String, why: FormatError },
    #[error("{path} is truncated: it ends at byte {len}, inside {what}; copy the file again")]
    Truncated {
        path: String,
        len: u64,
        what: &'static str,
    },
    #[error("{path} is damaged: its checksum does not match its contents, so bytes were changed after it was made (first problem seen: {detail}); copy the file again")]
    Damaged { path: String, detail: String },
    #[error(
        "{path} has {extra} bytes of trailing garbage after the bundle's end; copy the file again"
    )]
    Trailing { path: String, extra: u64 },
    #[error("{path} is not a valid bundle: {why}")]
    Invalid { path: String, why: String },
    #[error("{path} is sealed to team {name} ({team}), which you are not a member of; ask a member of {name} to invite you, or ask the sender for a bundle sealed to a team you are in")]
    NotMember {
        path: String,
        team: String,
        name: String,
    },
    #[error("{path} is sealed to team {name} ({team}); opening it needs your identity: run `tapes init` and join the team first")]
    NoIdentity {
        path: String,
        team: String,
        name: String,
    },
    #[error("{path} is refused: {why}")]
    Signer { path: String, why: String },
    #[error("{path} is incremental on {basis_name} (checksum {basis}), whose nodes are not in your store: import {basis_name} first")]
    NeedsBasis {
        path: String,
        basis_name: String,
        basis: String,
    },
    #[error("{path} needs node {id} ({what}), which is neither in the bundle nor in your store; ask the sender for a complete bundle")]
    MissingNode {
        path: String,
        id: String,
        what: String,
    },
    #[error("session {session}: your store has it at node {here} and the bundle at node {there}, and neither history contains the other; import the bundle into another TAPES_HOME, or ask the sender to fork the session")]
    Diverged {
        session: String,
        here: String,
        there: String,
    },
    #[error("session {session} in your store belongs to {here}, but the bundle's copy belongs to {there}")]
    OtherOwner {
        session: String,
        here: String,
        there: String,
    },
    #[error("the store changed during the import (another tapes process?); no session was changed; run the import again")]
    Raced,
    #[error("session {session} belongs to {owner}; a plain bundle carries only your own sessions: seal it to a team you share with them (--team T), or leave the session out")]
    NotYours { session: String, owner: String },
    #[error("session {session} belongs to {owner}, who is not a member of team {team}; seal to a team they are in, or leave the session out")]
    OwnerNotInTeam {
        session: String,
        owner: String,
        team: String,
    },
    #[error("you are not a member of team {0}; you can only seal bundles to your own teams")]
    NotInTeam(String),
    #[error("team {team}: {source}")]
    Key { team: String, source: KeyError },
    #[error("no session matches; nothing to bundle (`tapes sessions` lists them)")]
    NoSessions,
    /// The secret gate's scan could not be done.
    #[error(transparent)]
    Gate(#[from] crate::share::gate::GateError),
    /// A redacted copy could not be made.
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn me(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

fn short(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(6)])
}

// ------------------------------------------------------------------------------------------
// Create
// ------------------------------------------------------------------------------------------

/// Who a bundle is for, which decides what it may carry (SPEC.md §12.3).
pub enum Sealing {
    /// Sealed to the creator's own key: a personal backup only the same identity opens. Only
    /// the creator's own sessions (private ones included).
    Personal,
    /// Sealed to a team: only what that team may see (sessions shared with it or publicly),
    /// plus sessions of the creator's own that were named by id.
    Team(Box<TeamChain>),
    /// Not sealed (`--plain`): readable by whoever holds the file. Only the creator's own
    /// sessions.
    Plain,
}

/// A session [`prepare`] left out, and why.
#[derive(Debug, Clone)]
pub struct LeftOut {
    pub session: SessionId,
    /// It was named by id (rather than matched by a filter or `--all`).
    pub named: bool,
    pub why: String,
}

/// What [`prepare`] chose for a bundle.
#[derive(Debug, Default)]
pub struct Prepared {
    /// What to bundle (a redacted copy in place of a session under `--redact`).
    pub sessions: Vec<(SessionId, SessionRecord)>,
    /// Sessions the sealing does not allow.
    pub left_out: Vec<LeftOut>,
    /// Sessions the secret gate refused (each error names the session and every finding).
    pub refused: Vec<crate::share::gate::GateError>,
    /// (original, redacted copy, spans redacted).
    pub redacted: Vec<(SessionId, SessionId, usize)>,
    /// Under `dry_run`: the gate's report per session that would be bundled.
    pub reports: Vec<String>,
}

/// The personal backup's chain: a one-member team of the creator, made afresh (never stored)
/// and carried in the bundle like any team's chain, so the import checks it the same way and
/// only this identity's age key opens the content.
pub fn personal_chain(identity: &Identity, now_ms: i64) -> Result<TeamChain, BundleError> {
    let name = if identity.profile.name.is_empty() {
        "personal backup".to_string()
    } else {
        format!("personal backup of {}", identity.profile.name)
    };
    Ok(team::genesis(identity, &name, now_ms)?)
}

/// True when a live share of session `id` lets team `team` see it (a share to the team, or a
/// public one), made by `owner`.
fn shared_with(
    store: &Store,
    id: &SessionId,
    owner: &MemberId,
    team: &TeamId,
    now_ms: i64,
) -> Result<bool, BundleError> {
    let shares = crate::share::shares_of(store, id)?;
    Ok(shares.iter().any(|(_, s)| {
        s.is_live(now_ms)
            && &s.record.sharer == owner
            && (matches!(s.record.audience, Audience::Public)
                || matches!(s.record.audience, Audience::Team(t) if &t == team))
    }))
}

/// Chooses what a bundle sealed as `sealing` carries of `sessions` and runs the secret gate
/// on each (SPEC.md §11.2, §12.3): sessions the sealing does not allow are left out (a team
/// bundle never carries a session that team may not see); a finding refuses that session
/// under [`SecretPolicy::Block`], is carried as a redacted copy (made here like `tapes share
/// --redact` does) under `Redact`, as is under `Allow`. `named` are the sessions given by id.
/// With `dry_run` nothing is made: `reports` lists what the gate finds.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    store: &Store,
    identity: &Identity,
    sessions: Vec<(SessionId, SessionRecord)>,
    named: &[SessionId],
    sealing: &Sealing,
    policy: crate::share::gate::SecretPolicy,
    dry_run: bool,
    now_ms: i64,
) -> Result<Prepared, BundleError> {
    use crate::share::gate::{Exit, GateError, Verdict};
    let me = me(identity);
    let mut out = Prepared::default();
    for (id, record) in sessions {
        let owner = record.owner.unwrap_or(me);
        let named = named.contains(&id);
        let why = match sealing {
            Sealing::Plain | Sealing::Personal if owner != me => Some(format!(
                "it belongs to {}; a {} carries only your own sessions (seal to a team you share with them, --team T)",
                owner.short(),
                if matches!(sealing, Sealing::Plain) { "plain bundle" } else { "personal backup" }
            )),
            Sealing::Team(chain) => {
                let team = chain.team_id();
                let name = &chain.head().manifest.name;
                if chain.head().manifest.member(&owner).is_none() {
                    Some(format!(
                        "it belongs to {}, who is not a member of team {name}",
                        owner.short()
                    ))
                } else if (named && owner == me) || shared_with(store, &id, &owner, &team, now_ms)? {
                    None
                } else {
                    Some(format!(
                        "it is not shared with team {name}; share it first (`tapes share {} --team \"{name}\"`), or name it by id to bundle a session of yours",
                        id.short()
                    ))
                }
            }
            _ => None,
        };
        if let Some(why) = why {
            out.left_out.push(LeftOut {
                session: id,
                named,
                why,
            });
            continue;
        }
        let findings = crate::share::gate::scan_session(store, &id, None, &[])?;
        if dry_run {
            out.reports.push(findings.dry_run(Exit::Bundle));
            continue;
        }
        match findings.check(Exit::Bundle, policy) {
            Ok(Verdict::Clean | Verdict::Allowed(_)) => out.sessions.push((id, record)),
            Ok(Verdict::Redact(_)) => {
                let (copy, spans) = crate::share::redacted_copy(store, &id, now_ms)?;
                let copy_record = store
                    .session(&copy)?
                    .ok_or(StoreError::SessionNotFound(copy.short()))?;
                out.redacted.push((id, copy, spans));
                out.sessions.push((copy, copy_record));
            }
            Err(e @ (GateError::Refused { .. } | GateError::CannotRedact { .. })) => {
                out.refused.push(e)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// What to put in a bundle.
pub struct CreateOptions<'a> {
    /// The sessions (from [`crate::views::export::Filter::select`] or ids).
    pub sessions: Vec<(SessionId, SessionRecord)>,
    /// The selection as typed, recorded in the header.
    pub filter: BTreeMap<String, String>,
    /// Seal to this team; `None` makes a plain bundle.
    pub team: Option<TeamChain>,
    /// Leave out what this earlier bundle already carries.
    pub basis: Option<&'a Path>,
    pub now_ms: i64,
}

/// What [`create`] wrote.
#[derive(Debug, Clone)]
pub struct Created {
    pub path: PathBuf,
    pub size: u64,
    pub checksum: [u8; 32],
    pub sessions: usize,
    pub objects: u64,
    pub object_bytes: u64,
    pub shares: usize,
    /// Nodes and sessions left out because the basis has them.
    pub basis_objects: u64,
    pub basis_sessions: usize,
    pub team: Option<(TeamId, String)>,
}

/// What a basis bundle holds, to leave out.
struct Basis {
    checksum: [u8; 32],
    name: String,
    objects: HashSet<NodeId>,
    entries: HashSet<[u8; 32]>,
}

/// Reads the basis bundle, and the bundles it is itself incremental on when they sit next to
/// it under the names their headers give (checked by checksum): what the whole chain carries.
fn read_basis(store: &Store, identity: &Identity, path: &Path) -> Result<Basis, BundleError> {
    let mut basis = Basis {
        checksum: [0; 32],
        name: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        objects: HashSet::new(),
        entries: HashSet::new(),
    };
    let mut next = Some((path.to_path_buf(), None::<[u8; 32]>));
    let mut seen = HashSet::new();
    while let Some((path, expected)) = next.take() {
        let file = File::open(&path).map_err(io(&path))?;
        let mut check = Check::new(store, Some(identity), &path, None);
        let checksum = match run(&file, &path, &mut check, &mut |_| {}) {
            Ok(sum) => sum,
            Err(e) if expected.is_none() => return Err(e),
            // An earlier bundle that does not check out only makes this one less minimal.
            Err(_) => break,
        };
        if expected.is_some_and(|e| e != checksum) || !seen.insert(checksum) {
            break;
        }
        if expected.is_none() {
            basis.checksum = checksum;
        }
        basis
            .entries
            .extend(check.sessions.iter().map(|s| s.entry.digest));
        basis.entries.extend(check.shares.iter().map(|s| s.1));
        basis.objects.extend(check.parents.into_keys());
        if let Some(header) = &check.header {
            if let (Some(sum), Some(name)) = (header.basis, &header.basis_name) {
                let earlier = path.with_file_name(name);
                if earlier.is_file() {
                    next = Some((earlier, Some(sum)));
                }
            }
        }
    }
    Ok(basis)
}

/// Streams what a bundle writes, computing the checksum; seals content in chunks when a
/// team is given.
struct Sink {
    file: BufWriter<File>,
    sum: Checksum,
    size: u64,
    seal: Option<TeamChain>,
    chunk: Vec<u8>,
}

impl Sink {
    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sum.update(bytes);
        self.size += bytes.len() as u64;
        self.file.write_all(bytes)
    }

    fn frame_head(&mut self, kind: u8, len: usize) -> std::io::Result<()> {
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&(len as u32).to_le_bytes());
        self.raw(&head)
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        self.frame_head(kind, payload.len())?;
        self.raw(payload)
    }

    fn content(&mut self, kind: u8, payload: &[u8]) -> Result<(), BundleError> {
        if self.seal.is_some() {
            format::encode_frame(&mut self.chunk, kind, payload);
            self.maybe_seal(false)
        } else {
            self.frame(kind, payload).map_err(|e| self.io_err(e))
        }
    }

    fn object(&mut self, id: &NodeId, bytes: &[u8]) -> Result<(), BundleError> {
        if self.seal.is_some() {
            self.chunk.push(kind::OBJECT);
            self.chunk
                .extend_from_slice(&((32 + bytes.len()) as u32).to_le_bytes());
            self.chunk.extend_from_slice(id.as_bytes());
            self.chunk.extend_from_slice(bytes);
            self.maybe_seal(false)
        } else {
            self.frame_head(kind::OBJECT, 32 + bytes.len())
                .and_then(|_| self.raw(id.as_bytes()))
                .and_then(|_| self.raw(bytes))
                .map_err(|e| self.io_err(e))
        }
    }

    fn maybe_seal(&mut self, last: bool) -> Result<(), BundleError> {
        let Some(chain) = &self.seal else {
            return Ok(());
        };
        if self.chunk.is_empty() || (!last && self.chunk.len() < CHUNK_BYTES) {
            return Ok(());
        }
        let sealed = keyring::seal(chain, &self.chunk).map_err(|source| BundleError::Key {
            team: chain.head().manifest.name.clone(),
            source,
        })?;
        self.chunk.clear();
        let bytes = sealed.encode();
        self.frame(kind::SEALED, &bytes).map_err(|e| self.io_err(e))
    }

    fn io_err(&self, source: std::io::Error) -> BundleError {
        BundleError::Io {
            path: "the bundle being written".into(),
            source,
        }
    }
}

/// Writes a bundle of `options.sessions` to `out` (through a temporary file renamed into
/// place, so a crash never leaves half a bundle under that name). `progress` gets the number
/// of sessions done.
pub fn create(
    store: &Store,
    identity: &Identity,
    out: &Path,
    options: CreateOptions<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Created, BundleError> {
    let me = me(identity);
    if options.sessions.is_empty() {
        return Err(BundleError::NoSessions);
    }
    let mut team = options.team;
    if let Some(chain) = &mut team {
        if chain.head().manifest.member(&me).is_none() {
            return Err(BundleError::NotInTeam(chain.head().manifest.name.clone()));
        }
        if !chain.rotation_owed().is_empty() {
            // Someone left while this key was current: start a new epoch first (SPEC.md §9.2).
            team::rotate(store, identity, chain, options.now_ms)?;
        }
    }
    // What travels carries no local paths (SPEC.md §11.3): records are blanked here, before
    // they are signed, and node metadata as it is written.
    let paths = PathPolicy::load(store)?;
    // Every record must be one this creator may vouch for, before anything is written.
    let mut records = Vec::with_capacity(options.sessions.len());
    for (id, record) in options.sessions {
        let mut record = record;
        let owner = *record.owner.get_or_insert(me);
        match &team {
            None if owner != me => {
                return Err(BundleError::NotYours {
                    session: id.short(),
                    owner: owner.short(),
                })
            }
            Some(chain) if chain.head().manifest.member(&owner).is_none() => {
                return Err(BundleError::OwnerNotInTeam {
                    session: id.short(),
                    owner: owner.short(),
                    team: chain.head().manifest.name.clone(),
                })
            }
            _ => {}
        }
        records.push((id, outgoing::record(&record, paths)));
    }
    let basis = match options.basis {
        Some(path) => Some(read_basis(store, identity, path)?),
        None => None,
    };
    let header = Header {
        creator: me,
        creator_name: identity.profile.name.clone(),
        created_ms: options.now_ms,
        filter: options.filter,
        team: team.as_ref().map(|c| c.team_id()),
        basis: basis.as_ref().map(|b| b.checksum),
        basis_name: basis.as_ref().map(|b| b.name.clone()),
    };
    let header_bytes = header.encode();

    let partial = partial_path(out);
    let file = File::create(&partial).map_err(io(&partial))?;
    let mut sink = Sink {
        file: BufWriter::with_capacity(1 << 20, file),
        sum: Checksum::default(),
        size: 0,
        seal: team.clone(),
        chunk: Vec::with_capacity(CHUNK_BYTES + (64 << 10)),
    };
    let result = write_bundle(
        store,
        identity,
        &mut sink,
        &header_bytes,
        &records,
        basis.as_ref(),
        paths,
        progress,
    );
    let (checksum, counts) = match result {
        Ok(done) => done,
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let file = sink.file.into_inner().map_err(|e| BundleError::Io {
        path: partial.display().to_string(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&partial))?;
    drop(file);
    std::fs::rename(&partial, out).map_err(io(out))?;
    Ok(Created {
        path: out.to_path_buf(),
        size: sink.size + 32,
        checksum,
        team: team.map(|c| (c.team_id(), c.head().manifest.name.clone())),
        ..counts
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "bundle".into());
    name.push(".partial");
    out.with_file_name(name)
}

#[allow(clippy::too_many_arguments)]
fn write_bundle(
    store: &Store,
    identity: &Identity,
    sink: &mut Sink,
    header_bytes: &[u8],
    records: &[(SessionId, SessionRecord)],
    basis: Option<&Basis>,
    paths: PathPolicy,
    progress: &mut dyn FnMut(u64),
) -> Result<([u8; 32], Created), BundleError> {
    let err = |e: std::io::Error| BundleError::Io {
        path: "the bundle being written".into(),
        source: e,
    };
    sink.raw(&format::encode_prelude(header_bytes))
        .map_err(err)?;
    if let Some(chain) = sink.seal.clone() {
        for version in chain.versions() {
            sink.frame(kind::TEAM, &version.encode()).map_err(err)?;
        }
    }
    let mut counts = Created {
        path: PathBuf::new(),
        size: 0,
        checksum: [0; 32],
        sessions: 0,
        objects: 0,
        object_bytes: 0,
        shares: 0,
        basis_objects: 0,
        basis_sessions: 0,
        team: None,
    };
    let storage = store.storage();
    let mut written: HashSet<NodeId> = HashSet::new();
    let mut list = ObjectList::default();
    let in_basis = |id: &NodeId| basis.is_some_and(|b| b.objects.contains(id));
    for (done, (_, record)) in records.iter().enumerate() {
        // Walk back to the first node already written or in the basis (its ancestors are
        // too), then write root first so every parent precedes its child.
        let mut ids = Vec::new();
        let mut next = Some(record.head);
        while let Some(id) = next {
            if written.contains(&id) {
                break;
            }
            if in_basis(&id) {
                counts.basis_objects += 1;
                break;
            }
            let bytes = storage
                .get_object(&id)
                .map_err(StoreError::from)?
                .ok_or(StoreError::MissingNode(id))?;
            next = StoredObject::parent_of(&bytes)
                .map_err(|source| StoreError::BadNode { id, source })?;
            if ids.len() > 50_000_000 {
                return Err(StoreError::Cycle(record.head).into());
            }
            ids.push(id);
        }
        for id in ids.iter().rev() {
            let bytes = storage
                .get_object(id)
                .map_err(StoreError::from)?
                .ok_or(StoreError::MissingNode(*id))?;
            let bytes = outgoing::object(bytes, paths);
            sink.object(id, &bytes)?;
            list.add(id);
            written.insert(*id);
            counts.objects += 1;
            counts.object_bytes += bytes.len() as u64;
        }
        progress(done as u64 + 1);
    }
    let mut refs = Refs::default();
    let mut included = Vec::new();
    for (id, record) in records {
        let signature = RefSignature::sign(identity.signing_key(), id, None, record);
        let entry = SessionEntry {
            id: *id,
            record: record.encode(),
            signer: signature.signer,
            signature: signature.signature.to_vec(),
        };
        let payload = entry.encode();
        let digest = format::entry_digest(&payload);
        if basis.is_some_and(|b| b.entries.contains(&digest)) {
            counts.basis_sessions += 1;
            continue;
        }
        sink.content(kind::SESSION, &payload)?;
        refs.sessions.push(RefEntry {
            session: *id,
            head: record.head,
            digest,
        });
        included.push(*id);
    }
    // A share to another team names that team and carries its note: it goes only where whoever
    // opens the bundle could see it anyway (public shares, shares to the sealed team, and
    // anything in a plain bundle or one only its creator opens).
    let only_me = |chain: &TeamChain| {
        let members = &chain.head().manifest.members;
        members.len() == 1 && members[0].id == me(identity)
    };
    let share_goes = |audience: &Audience| match (&sink.seal, audience) {
        (None, _) | (_, Audience::Public) => true,
        (Some(chain), Audience::Team(t)) => *t == chain.team_id() || only_me(chain),
    };
    let mut shares = Vec::new();
    for id in &included {
        let prefix = crate::store::keys::shares_of(id);
        for entry in storage.refs(&prefix) {
            let (key, value) = entry.map_err(StoreError::from)?;
            match SignedShare::decode(&value) {
                Ok(share) if share_goes(&share.record.audience) => shares.push(value),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping a share record that does not verify");
                }
            }
        }
    }
    for value in shares {
        let digest = format::entry_digest(&value);
        if basis.is_some_and(|b| b.entries.contains(&digest)) {
            continue;
        }
        sink.content(kind::SHARE, &value)?;
        refs.shares.push(digest);
    }
    counts.sessions = refs.sessions.len();
    counts.shares = refs.shares.len();
    refs.objects = counts.objects;
    refs.object_list = list.finish();
    let signed = SignedRefs::sign(identity.signing_key(), header_bytes, refs);
    sink.content(kind::REFS, &signed.encode())?;
    sink.maybe_seal(true)?;
    sink.raw(&[kind::END]).map_err(err)?;
    let checksum = sink.sum.finish();
    sink.file.write_all(&checksum).map_err(err)?;
    sink.file.flush().map_err(err)?;
    Ok((checksum, counts))
}

// ------------------------------------------------------------------------------------------
// Reading
// ------------------------------------------------------------------------------------------

enum WalkError {
    Eof { len: u64, what: &'static str },
    Format(FormatError),
    Io(std::io::Error),
    Stop(BundleError),
    Checksum,
    Trailing(u64),
}

struct Walker<'f> {
    r: BufReader<&'f File>,
    pos: u64,
    len: u64,
    sum: Checksum,
}

impl Walker<'_> {
    fn read(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), WalkError> {
        self.read_unhashed(buf, what)?;
        self.sum.update(buf);
        Ok(())
    }

    fn read_unhashed(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), WalkError> {
        if self.pos + buf.len() as u64 > self.len {
            return Err(WalkError::Eof {
                len: self.len,
                what,
            });
        }
        self.r.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => WalkError::Eof {
                len: self.len,
                what,
            },
            _ => WalkError::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }
}

/// One thing a bundle holds, as the walker hands it over.
enum Event<'a> {
    Header {
        bytes: &'a [u8],
        header: Header,
    },
    Frame {
        kind: u8,
        payload: &'a [u8],
        end: u64,
    },
}

/// Reads the file from its start, frame by frame, checking the checksum and that nothing
/// follows the trailer. Returns the checksum.
fn walk(
    file: &File,
    on: &mut dyn FnMut(Event<'_>) -> Result<(), BundleError>,
) -> Result<[u8; 32], WalkError> {
    let len = file.metadata().map_err(WalkError::Io)?.len();
    let mut handle = file;
    handle.seek(SeekFrom::Start(0)).map_err(WalkError::Io)?;
    let mut w = Walker {
        r: BufReader::with_capacity(1 << 20, file),
        pos: 0,
        len,
        sum: Checksum::default(),
    };
    let mut fixed = [0u8; PRELUDE_LEN];
    w.read(&mut fixed, "the bundle's prelude")?;
    let header_len = format::decode_prelude(&fixed).map_err(WalkError::Format)?;
    let mut header_bytes = vec![0u8; 0];
    if w.pos + header_len as u64 > len {
        return Err(WalkError::Eof {
            len,
            what: "the bundle's header",
        });
    }
    header_bytes.resize(header_len, 0);
    w.read(&mut header_bytes, "the bundle's header")?;
    let header = Header::decode(&header_bytes).map_err(WalkError::Format)?;
    on(Event::Header {
        bytes: &header_bytes,
        header,
    })
    .map_err(WalkError::Stop)?;
    let mut payload = Vec::new();
    loop {
        let offset = w.pos;
        let mut k = [0u8; 1];
        w.read(&mut k, "a frame head (the trailer is missing)")?;
        if k[0] == kind::END {
            let expected = w.sum.finish();
            let mut sum = [0u8; 32];
            w.read_unhashed(&mut sum, "the trailer")?;
            if sum != expected {
                return Err(WalkError::Checksum);
            }
            if w.pos < len {
                return Err(WalkError::Trailing(len - w.pos));
            }
            return Ok(expected);
        }
        let mut l = [0u8; 4];
        w.read(&mut l, "a frame head")?;
        match format::decode_frame_head(k[0], l, offset).map_err(WalkError::Format)? {
            // END is handled above; decode_frame_head answers End for nothing else.
            FrameHead::End => {
                return Err(WalkError::Format(FormatError::Kind {
                    kind: kind::END,
                    offset,
                }))
            }
            FrameHead::Frame { kind, len: n } => {
                if w.pos + n as u64 > len {
                    return Err(WalkError::Eof {
                        len,
                        what: "a frame",
                    });
                }
                payload.resize(n, 0);
                w.read(&mut payload, "a frame")?;
                on(Event::Frame {
                    kind,
                    payload: &payload,
                    end: w.pos,
                })
                .map_err(WalkError::Stop)?;
            }
        }
    }
}

/// True when the file's last 33 bytes are a trailer whose checksum matches everything before
/// it: the file is as its creator wrote it, so a problem found inside is the creator's.
fn intact(file: &File) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let len = meta.len();
    if len < (PRELUDE_LEN + TRAILER_LEN) as u64 {
        return false;
    }
    let mut handle = file;
    if handle.seek(SeekFrom::Start(0)).is_err() {
        return false;
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut sum = Checksum::default();
    let mut left = len - 32;
    let mut buf = vec![0u8; 1 << 20];
    let mut last = 0u8;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        if r.read_exact(&mut buf[..n]).is_err() {
            return false;
        }
        sum.update(&buf[..n]);
        last = buf[n - 1];
        left -= n as u64;
    }
    let mut stored = [0u8; 32];
    if r.read_exact(&mut stored).is_err() {
        return false;
    }
    last == kind::END && stored == sum.finish()
}

/// Walks `file` through `check`, turning what went wrong into the error that says which.
fn run(
    file: &File,
    path: &Path,
    check: &mut Check<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 32], BundleError> {
    let shown = path.display().to_string();
    let walked = walk(file, &mut |event| {
        if let Event::Frame { end, .. } = &event {
            progress(*end);
        }
        check.on(event)
    });
    let specific = match walked {
        Ok(sum) => match check.finish() {
            Ok(()) => return Ok(sum),
            Err(e) => e,
        },
        Err(WalkError::Eof { len, what }) => {
            return Err(BundleError::Truncated {
                path: shown,
                len,
                what,
            })
        }
        Err(WalkError::Checksum) => {
            return Err(BundleError::Damaged {
                path: shown,
                detail: "the checksum in its trailer".into(),
            })
        }
        Err(WalkError::Trailing(extra)) => {
            return Err(BundleError::Trailing { path: shown, extra })
        }
        Err(WalkError::Io(source)) => {
            return Err(BundleError::Io {
                path: shown,
                source,
            })
        }
        Err(WalkError::Format(why @ FormatError::Magic)) => {
            return Err(BundleError::NotABundle { path: shown, why })
        }
        Err(WalkError::Format(why @ FormatError::Version(_))) => BundleError::NotABundle {
            path: shown.clone(),
            why,
        },
        Err(WalkError::Format(why)) => BundleError::Invalid {
            path: shown.clone(),
            why: why.to_string(),
        },
        Err(WalkError::Stop(e)) => e,
    };
    // A problem inside a file whose checksum still matches was put there by its creator;
    // otherwise the bytes were changed on the way, and that is what to say.
    if intact(file) {
        Err(specific)
    } else {
        Err(BundleError::Damaged {
            path: shown,
            detail: specific.to_string(),
        })
    }
}

/// One session as the bundle carries it.
#[derive(Debug, Clone)]
pub struct BundledSession {
    pub id: SessionId,
    pub record: SessionRecord,
    entry: RefEntry,
}

/// The state of a walk through a bundle: everything checked so far.
struct Check<'a> {
    store: &'a Store,
    identity: Option<&'a Identity>,
    path: String,
    header: Option<Header>,
    header_bytes: Vec<u8>,
    versions: Vec<SignedManifest>,
    chain: Option<TeamChain>,
    ring: Option<KeyRing>,
    content_started: bool,
    refs_seen: bool,
    parents: HashMap<NodeId, Option<NodeId>>,
    list: ObjectList,
    objects: u64,
    object_bytes: u64,
    new_objects: u64,
    new_bytes: u64,
    sealed_chunks: u64,
    sessions: Vec<BundledSession>,
    session_ids: HashSet<SessionId>,
    shares: Vec<(SignedShare, [u8; 32], Vec<u8>)>,
    /// On import: where new nodes go as they are verified.
    staging: Option<Box<dyn Staging + 'a>>,
}

impl<'a> Check<'a> {
    fn new(
        store: &'a Store,
        identity: Option<&'a Identity>,
        path: &Path,
        staging: Option<Box<dyn Staging + 'a>>,
    ) -> Self {
        Check {
            store,
            identity,
            path: path.display().to_string(),
            header: None,
            header_bytes: Vec::new(),
            versions: Vec::new(),
            chain: None,
            ring: None,
            content_started: false,
            refs_seen: false,
            parents: HashMap::new(),
            list: ObjectList::default(),
            objects: 0,
            object_bytes: 0,
            new_objects: 0,
            new_bytes: 0,
            sealed_chunks: 0,
            sessions: Vec::new(),
            session_ids: HashSet::new(),
            shares: Vec::new(),
            staging,
        }
    }

    fn invalid(&self, why: impl Into<String>) -> BundleError {
        BundleError::Invalid {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    fn refused(&self, why: impl Into<String>) -> BundleError {
        BundleError::Signer {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    fn header(&self) -> Result<&Header, BundleError> {
        self.header
            .as_ref()
            .ok_or_else(|| self.invalid("a frame before the header"))
    }

    /// `name (abcdef123456)` for someone who was a member of `chain` at any version.
    fn who_in(&self, chain: &TeamChain, id: &MemberId) -> String {
        match chain
            .versions()
            .iter()
            .rev()
            .find_map(|v| v.manifest.member(id))
        {
            Some(m) => format!("{} ({})", m.name, id.short()),
            None => self.who(id),
        }
    }

    /// `name (abcdef123456)` for a member, using the team's names when there is a team.
    fn who(&self, id: &MemberId) -> String {
        let name = self
            .chain
            .as_ref()
            .and_then(|c| c.head().manifest.member(id).map(|m| m.name.clone()))
            .or_else(|| {
                self.header
                    .as_ref()
                    .filter(|h| &h.creator == id)
                    .map(|h| h.creator_name.clone())
            });
        match name {
            Some(n) if !n.is_empty() => format!("{n} ({})", id.short()),
            _ => id.short(),
        }
    }

    fn team_name(&self) -> String {
        self.chain
            .as_ref()
            .map(|c| c.head().manifest.name.clone())
            .unwrap_or_default()
    }

    fn store_err(&self, e: StorageError) -> BundleError {
        BundleError::Store(e.into())
    }

    fn on(&mut self, event: Event<'_>) -> Result<(), BundleError> {
        match event {
            Event::Header { bytes, header } => {
                self.header_bytes = bytes.to_vec();
                self.header = Some(header);
                Ok(())
            }
            Event::Frame { kind, payload, .. } => self.frame(kind, payload),
        }
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), BundleError> {
        let sealed_to = self.header()?.team;
        match kind {
            kind::TEAM => {
                if sealed_to.is_none() {
                    return Err(self.invalid("a plain bundle carries a team manifest"));
                }
                if self.content_started {
                    return Err(self.invalid("a team manifest follows the content"));
                }
                let m = SignedManifest::decode(payload)
                    .map_err(|e| self.invalid(format!("a team manifest: {e}")))?;
                self.versions.push(m);
                Ok(())
            }
            kind::SEALED => {
                let Some(team) = sealed_to else {
                    return Err(self.invalid("a plain bundle carries sealed content"));
                };
                self.start_content()?;
                let sealed = Sealed::decode(payload)
                    .map_err(|e| self.invalid(format!("a sealed chunk: {e}")))?;
                if sealed.team != team {
                    return Err(self.invalid(format!(
                        "a chunk is sealed to team {}, not to the header's team {}",
                        sealed.team.short(),
                        team.short()
                    )));
                }
                let ring = self
                    .ring
                    .as_ref()
                    .ok_or_else(|| self.invalid("sealed content without a key ring"))?;
                let plain = keyring::open(ring, &team, &sealed).map_err(|source| match source {
                    KeyError::NoEpochKey { .. } => BundleError::Key {
                        team: self.team_name(),
                        source,
                    },
                    other => self.invalid(format!("a sealed chunk does not open: {other}")),
                })?;
                self.sealed_chunks += 1;
                let frames = format::split_frames(&plain)
                    .map_err(|e| self.invalid(format!("inside a sealed chunk: {e}")))?;
                for (kind, payload) in frames {
                    self.content(kind, payload)?;
                }
                Ok(())
            }
            _ => {
                if sealed_to.is_some() {
                    return Err(self.invalid("a sealed bundle carries unsealed content"));
                }
                self.start_content()?;
                self.content(kind, payload)
            }
        }
    }

    /// Before the first content: for a sealed bundle, verify the team chain, that the creator
    /// is a member, and open the key ring.
    fn start_content(&mut self) -> Result<(), BundleError> {
        if self.content_started {
            return Ok(());
        }
        self.content_started = true;
        let header = self.header()?.clone();
        let Some(team) = header.team else {
            return Ok(());
        };
        let versions = std::mem::take(&mut self.versions);
        let chain = TeamChain::from_versions(versions, None)
            .map_err(|e| self.refused(format!("its team chain does not verify: {e}")))?;
        if chain.team_id() != team {
            return Err(self.invalid("its team chain is not the header's team"));
        }
        // The chain must agree with the one this store holds (no forked or forged versions).
        let mine = match team::load(self.store, &team) {
            Ok(c) => Some(c),
            Err(TeamError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(mine) = &mine {
            for (a, b) in mine.versions().iter().zip(chain.versions()) {
                if a.id() != b.id() {
                    return Err(self.refused(format!(
                        "its version {} of team {} differs from yours (a fork or a forgery)",
                        a.manifest.version, a.manifest.name
                    )));
                }
            }
        }
        let name = chain.head().manifest.name.clone();
        // Membership is decided by the newest version known: the bundle's or this store's,
        // whichever is longer (they agree on every version both have, checked above). A
        // member removed from the team whose own store has not seen the removal still signs
        // with the old chain; the owner who removed them holds the newer one (SPEC §12.4).
        let newest = match &mine {
            Some(mine) if mine.versions().len() > chain.versions().len() => mine.clone(),
            _ => chain,
        };
        self.chain = Some(newest.clone());
        if newest.head().manifest.member(&header.creator).is_none() {
            let removal = removed_by(&newest, &header.creator);
            let who = self.who_in(&newest, &header.creator);
            return Err(self.refused(match removal {
                Some((version, by)) => format!(
                    "it is signed by {who}, who is not a member of team {name}: version {version} of the team removed them (signed by {})",
                    self.who_in(&newest, &by)
                ),
                None => format!("it is signed by {who}, who is not a member of team {name}"),
            }));
        }
        let Some(identity) = self.identity else {
            return Err(BundleError::NoIdentity {
                path: self.path.clone(),
                team: team.short(),
                name,
            });
        };
        let not_member = || BundleError::NotMember {
            path: self.path.clone(),
            team: team.short(),
            name: name.clone(),
        };
        let me = me(identity);
        let mut ring = Err(not_member());
        for chain in self.chain.iter().chain(mine.iter()) {
            match KeyRing::for_member(chain, &me, identity.age_identity()) {
                Ok(r) => {
                    ring = Ok(r);
                    break;
                }
                Err(KeyError::NotMember(_)) => {}
                Err(source) => {
                    ring = Err(BundleError::Key {
                        team: name.clone(),
                        source,
                    })
                }
            }
        }
        self.ring = Some(ring?);
        Ok(())
    }

    fn missing(&self, id: &NodeId, what: String) -> BundleError {
        match self.header.as_ref().and_then(|h| h.basis) {
            Some(basis) => BundleError::NeedsBasis {
                path: self.path.clone(),
                basis_name: self
                    .header
                    .as_ref()
                    .and_then(|h| h.basis_name.clone())
                    .unwrap_or_else(|| "its basis bundle".into()),
                basis: short(&basis),
            },
            None => BundleError::MissingNode {
                path: self.path.clone(),
                id: id.short(),
                what,
            },
        }
    }

    fn known(&self, id: &NodeId) -> Result<bool, BundleError> {
        Ok(self.parents.contains_key(id)
            || self
                .store
                .storage()
                .contains_object(id)
                .map_err(|e| self.store_err(e))?)
    }

    fn content(&mut self, kind: u8, payload: &[u8]) -> Result<(), BundleError> {
        if self.refs_seen {
            return Err(self.invalid("content follows the manifest of refs"));
        }
        match kind {
            kind::OBJECT => self.object(payload),
            kind::SESSION => self.session(payload),
            kind::SHARE => self.share(payload),
            kind::REFS => self.refs(payload),
            other => Err(self.invalid(format!("unexpected frame kind {other:#04x}"))),
        }
    }

    fn object(&mut self, payload: &[u8]) -> Result<(), BundleError> {
        let (id, bytes) =
            format::decode_object(payload).map_err(|e| self.invalid(e.to_string()))?;
        let node = StoredObject::verify(&id, bytes)
            .map_err(|e| self.invalid(format!("node {} does not verify: {e}", id.short())))?;
        if self.parents.contains_key(&id) {
            return Err(self.invalid(format!("node {} appears twice", id.short())));
        }
        if let Some(parent) = node.body.parent {
            if !self.known(&parent)? {
                return Err(self.missing(&parent, format!("the parent of node {}", id.short())));
            }
        }
        let present = self
            .store
            .storage()
            .contains_object(&id)
            .map_err(|e| self.store_err(e))?;
        self.parents.insert(id, node.body.parent);
        self.list.add(&id);
        self.objects += 1;
        self.object_bytes += bytes.len() as u64;
        if !present {
            self.new_objects += 1;
            self.new_bytes += bytes.len() as u64;
            if let Some(staging) = self.staging.as_mut() {
                staging
                    .add(&id, bytes)
                    .map_err(|e| BundleError::Store(e.into()))?;
            }
        }
        Ok(())
    }

    fn session(&mut self, payload: &[u8]) -> Result<(), BundleError> {
        let header = self.header()?.clone();
        let entry = SessionEntry::decode(payload).map_err(|e| self.invalid(e.to_string()))?;
        let id = entry.id;
        let record = SessionRecord::decode(&entry.record)
            .map_err(|e| self.invalid(format!("session {}: {e}", id.short())))?;
        if entry.signer != header.creator {
            return Err(self.refused(format!(
                "session {} is signed by {}, not by the bundle's creator {}",
                id.short(),
                self.who(&entry.signer),
                self.who(&header.creator)
            )));
        }
        if tapes_protocol::signed::verify_entry_signature(&entry, &record).is_err() {
            return Err(self.refused(format!(
                "the signature on session {} does not verify (forged or altered)",
                id.short()
            )));
        }
        let Some(owner) = record.owner else {
            return Err(self.invalid(format!("session {} names no owner", id.short())));
        };
        match &self.chain {
            None if owner != entry.signer => {
                return Err(self.refused(format!(
                    "session {} belongs to {} but is signed by {}; a plain bundle carries only its signer's own sessions",
                    id.short(),
                    self.who(&owner),
                    self.who(&entry.signer)
                )))
            }
            Some(chain) if chain.head().manifest.member(&owner).is_none() => {
                return Err(self.refused(format!(
                    "session {} belongs to {}, who is not a member of team {}",
                    id.short(),
                    self.who(&owner),
                    chain.head().manifest.name
                )))
            }
            _ => {}
        }
        if !self.known(&record.head)? {
            return Err(self.missing(&record.head, format!("the head of session {}", id.short())));
        }
        if !self.session_ids.insert(id) {
            return Err(self.invalid(format!("session {} appears twice", id.short())));
        }
        self.sessions.push(BundledSession {
            id,
            entry: RefEntry {
                session: id,
                head: record.head,
                digest: format::entry_digest(payload),
            },
            record,
        });
        Ok(())
    }

    fn share(&mut self, payload: &[u8]) -> Result<(), BundleError> {
        let share = SignedShare::decode(payload)
            .map_err(|e| self.refused(format!("a share record: {e}")))?;
        if !self.session_ids.contains(&share.record.session) {
            return Err(self.invalid(format!(
                "a share of session {}, which the bundle does not carry",
                share.record.session.short()
            )));
        }
        let digest = format::entry_digest(payload);
        self.shares.push((share, digest, payload.to_vec()));
        Ok(())
    }

    fn refs(&mut self, payload: &[u8]) -> Result<(), BundleError> {
        let header = self.header()?.clone();
        let signed = SignedRefs::decode(payload).map_err(|e| self.invalid(e.to_string()))?;
        if !signed.verify(&header.creator, &self.header_bytes) {
            return Err(self.refused(format!(
                "its manifest of refs is not signed by its creator {} (forged or altered)",
                self.who(&header.creator)
            )));
        }
        let refs = &signed.refs;
        let sessions: Vec<RefEntry> = self.sessions.iter().map(|s| s.entry.clone()).collect();
        let shares: Vec<[u8; 32]> = self.shares.iter().map(|s| s.1).collect();
        if refs.sessions != sessions
            || refs.shares != shares
            || refs.objects != self.objects
            || refs.object_list != self.list.finish()
        {
            return Err(self.refused(
                "its signed manifest of refs does not match what it carries (content added, removed or replaced)",
            ));
        }
        self.refs_seen = true;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        if !self.refs_seen {
            return Err(self.refused("it has no signed manifest of refs"));
        }
        Ok(())
    }

    fn info(&self, path: &Path, size: u64, checksum: [u8; 32]) -> BundleInfo {
        let header = self.header.clone().unwrap_or_else(|| Header {
            creator: MemberId([0; 32]),
            creator_name: String::new(),
            created_ms: 0,
            filter: BTreeMap::new(),
            team: None,
            basis: None,
            basis_name: None,
        });
        BundleInfo {
            path: path.to_path_buf(),
            size,
            checksum,
            team_name: self.chain.as_ref().map(|c| c.head().manifest.name.clone()),
            header,
            sessions: self.sessions.clone(),
            shares: self.shares.len(),
            objects: self.objects,
            object_bytes: self.object_bytes,
            new_objects: self.new_objects,
            new_bytes: self.new_bytes,
            sealed_chunks: self.sealed_chunks,
        }
    }
}

/// What a verified bundle holds.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    pub path: PathBuf,
    pub size: u64,
    pub checksum: [u8; 32],
    pub header: Header,
    pub team_name: Option<String>,
    pub sessions: Vec<BundledSession>,
    pub shares: usize,
    pub objects: u64,
    pub object_bytes: u64,
    /// Nodes this store does not have yet.
    pub new_objects: u64,
    pub new_bytes: u64,
    pub sealed_chunks: u64,
}

/// Checks everything in a bundle against this store without writing anything: the checksum,
/// every frame, every node, that chains link up (to the bundle or the store), every signature,
/// the team chain and that `identity` can open it. `progress` gets bytes read.
pub fn verify(
    store: &Store,
    identity: Option<&Identity>,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<BundleInfo, BundleError> {
    let file = File::open(path).map_err(io(path))?;
    let size = file.metadata().map_err(io(path))?.len();
    let mut check = Check::new(store, identity, path, None);
    let checksum = run(&file, path, &mut check, progress)?;
    Ok(check.info(path, size, checksum))
}

impl BundleError {
    /// True when the bundle was refused while reading or checking it, before anything was
    /// written: an import that failed this way left the store exactly as it was.
    pub fn rejected_before_writing(&self) -> bool {
        matches!(
            self,
            BundleError::NotABundle { .. }
                | BundleError::Truncated { .. }
                | BundleError::Damaged { .. }
                | BundleError::Trailing { .. }
                | BundleError::Invalid { .. }
                | BundleError::NotMember { .. }
                | BundleError::NoIdentity { .. }
                | BundleError::Signer { .. }
                | BundleError::NeedsBasis { .. }
                | BundleError::MissingNode { .. }
                | BundleError::Diverged { .. }
                | BundleError::OtherOwner { .. }
                | BundleError::Raced
        )
    }
}

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
fn removed_by(chain: &TeamChain, member: &MemberId) -> Option<(u64, MemberId)> {
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
