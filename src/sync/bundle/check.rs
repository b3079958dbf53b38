//! Reading and checking a bundle (SPEC.md §12.4): one streaming pass over the file that
//! checks every frame, every node's id and parent link, every signature and the team chain,
//! holding one frame (or sealed chunk) at a time. [`verify`] runs it without touching the
//! store; `import` runs the same pass while staging what it will commit.

use super::*;

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
pub(super) fn run(
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
    pub(super) entry: RefEntry,
}

/// The state of a walk through a bundle: everything checked so far.
pub(super) struct Check<'a> {
    pub(super) store: &'a Store,
    pub(super) identity: Option<&'a Identity>,
    pub(super) path: String,
    pub(super) header: Option<Header>,
    pub(super) header_bytes: Vec<u8>,
    pub(super) versions: Vec<SignedManifest>,
    pub(super) chain: Option<TeamChain>,
    pub(super) ring: Option<KeyRing>,
    pub(super) content_started: bool,
    pub(super) refs_seen: bool,
    pub(super) parents: HashMap<NodeId, Option<NodeId>>,
    pub(super) list: ObjectList,
    pub(super) objects: u64,
    pub(super) object_bytes: u64,
    pub(super) new_objects: u64,
    pub(super) new_bytes: u64,
    pub(super) sealed_chunks: u64,
    pub(super) sessions: Vec<BundledSession>,
    pub(super) session_ids: HashSet<SessionId>,
    pub(super) shares: Vec<(SignedShare, [u8; 32], Vec<u8>)>,
    /// On import: where new nodes go as they are verified.
    pub(super) staging: Option<Box<dyn Staging + 'a>>,
}

impl<'a> Check<'a> {
    pub(super) fn new(
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

    pub(super) fn info(&self, path: &Path, size: u64, checksum: [u8; 32]) -> BundleInfo {
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
