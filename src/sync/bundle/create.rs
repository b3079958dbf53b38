//! Creating a bundle (SPEC.md §12.1–12.3): choosing what goes in ([`prepare`]: the sessions,
//! their share records, what is left out and why), then streaming nodes, signed records and
//! shares into a file, sealed to a team in ~1 MiB chunks or plain, with a signed manifest of
//! everything included and a BLAKE3 checksum. Written to a partial file and renamed.

use super::*;

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
        // A project whose content never leaves this machine (SPEC.md §11.4).
        if owner == me {
            crate::share::summary::check_may_leave(store, &id, &record)??;
        }
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
        let mut reader = storage.chain_reader();
        while let Some(id) = next {
            if written.contains(&id) {
                break;
            }
            if in_basis(&id) {
                counts.basis_objects += 1;
                break;
            }
            let bytes = reader
                .get(&id)
                .map_err(StoreError::from)?
                .ok_or(StoreError::MissingNode(id))?;
            next = StoredObject::parent_of(&bytes)
                .map_err(|source| StoreError::BadNode { id, source })?;
            if ids.len() > 50_000_000 {
                return Err(StoreError::Cycle(record.head).into());
            }
            ids.push(id);
        }
        let mut leaving = outgoing::Outgoing::new(paths);
        for id in ids.iter().rev() {
            let bytes = storage
                .get_object(id)
                .map_err(StoreError::from)?
                .ok_or(StoreError::MissingNode(*id))?;
            let bytes = leaving.object(bytes);
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
