//! Bundles (SPEC.md §12): round trips plain and sealed reproduce the sender's sessions byte for
//! byte; incremental chains; all-or-nothing import (every truncation offset, flipped bytes,
//! trailing garbage, a team the importer is not in, records signed by the wrong people) leaves
//! the store exactly as it was; idempotent re-import; and the CLI's create / verify / import.
//!
//! Library tests give each person a home with a saved identity and a store owned by it; the
//! CLI tests run the real binary with one `TAPES_HOME` per person.

use std::path::{Path, PathBuf};

use tapes::home::Home;
use tapes::identity::{Identity, Profile};
use tapes::import::ingest::{ingest, Incoming};
use tapes::import::ParsedSession;
use tapes::protocol::bundle::{
    self as format, kind, Header, RefEntry, Refs, SessionEntry, SignedRefs,
};
use tapes::protocol::manifest::TeamRole;
use tapes::protocol::team_chain::TeamChain;
use tapes::protocol::{ContentBlock, MemberId, NodeId, SessionId, TeamId};
use tapes::session::sample::{self, Shape};
use tapes::session::SessionRecord;
use tapes::share::outgoing::{self, PathPolicy};
use tapes::share::{self, Audience, SecretPolicy, ShareOptions};
use tapes::store::Store;
use tapes::sync::bundle::{self, BundleError, CreateOptions, Outcome, Sealing};
use tapes::sync::remote::RefSignature;
use tapes::team::keyring::{self, KeyRing, Sealed};
use tapes::team::{self, InviteOptions};

const T0: i64 = 1_771_059_600_000;

struct User {
    dir: tempfile::TempDir,
    store: Store,
    me: Identity,
}

fn user(name: &str) -> User {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    home.ensure().unwrap();
    let me = Identity::generate(Profile {
        name: name.into(),
        email: None,
    })
    .unwrap();
    me.save(&home).unwrap();
    let store = Store::open(&home.store_dir()).unwrap();
    store
        .set_local_owner(&MemberId(me.verifying_key().to_bytes()))
        .unwrap();
    User { dir, store, me }
}

impl User {
    fn id(&self) -> MemberId {
        MemberId(self.me.verifying_key().to_bytes())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ingest(&self, sessions: Vec<ParsedSession>) {
        let incoming: Vec<Incoming> = sessions
            .into_iter()
            .map(|session| Incoming {
                session,
                path: "sample".into(),
            })
            .collect();
        ingest(&self.store, &incoming, T0).unwrap();
    }

    fn bundle(&self, name: &str, team: Option<TeamChain>, basis: Option<&Path>) -> bundle::Created {
        let sessions = self.store.sessions().unwrap();
        bundle::create(
            &self.store,
            &self.me,
            &self.file(name),
            CreateOptions {
                sessions,
                filter: Default::default(),
                team,
                basis,
                now_ms: T0,
            },
            &mut |_| {},
        )
        .unwrap()
    }

    fn import(&self, path: &Path) -> Result<bundle::ImportReport, BundleError> {
        bundle::import(&self.store, Some(&self.me), path, &mut |_| {})
    }
}

/// Everything a store holds that a user could see: every object, every ref, the settings.
type Dump = (
    Vec<(NodeId, Vec<u8>)>,
    Vec<(Vec<u8>, Vec<u8>)>,
    Vec<Option<Vec<u8>>>,
);

fn dump(store: &Store) -> Dump {
    let s = store.storage();
    (
        s.objects().map(|e| e.unwrap()).collect(),
        s.refs(b"").map(|e| e.unwrap()).collect(),
        ["format", "owner"]
            .iter()
            .map(|k| s.get_setting(k).unwrap())
            .collect(),
    )
}

/// Every session of `from`, with the raw bytes of every node of its chain.
fn sessions_with_bytes(store: &Store) -> Vec<(SessionId, SessionRecord, Vec<Vec<u8>>)> {
    store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|(id, record)| {
            let chain = store
                .chain(&record.head)
                .unwrap()
                .iter()
                .map(|(node, _)| store.storage().get_object(node).unwrap().unwrap())
                .collect();
            (id, record, chain)
        })
        .collect()
}

/// Every session of `store` as a bundle carries it out: the record without its local source
/// path and node metadata with the project's name for a working directory (SPEC.md §11.3).
fn as_sent(store: &Store) -> Vec<(SessionId, SessionRecord, Vec<Vec<u8>>)> {
    sessions_with_bytes(store)
        .into_iter()
        .map(|(id, record, chain)| {
            (
                id,
                outgoing::record(&record, PathPolicy::Name),
                chain
                    .into_iter()
                    .map(|bytes| outgoing::object(bytes, PathPolicy::Name))
                    .collect(),
            )
        })
        .collect()
}

fn samples(range: std::ops::Range<usize>) -> Vec<ParsedSession> {
    range
        .map(|i| sample::session(11, i, Shape::default()))
        .collect()
}

fn team_with(owner: &User, others: &[&User]) -> TeamId {
    let team = team::create(&owner.store, &owner.me, "Paper Compute", T0)
        .unwrap()
        .team_id();
    for other in others {
        let chain = team::load(&owner.store, &team).unwrap();
        let (code, _) = team::invite(
            &owner.store,
            &owner.me,
            &chain,
            InviteOptions {
                expires_ms: Some(T0 + 3_600_000),
                max_uses: 1,
                email: None,
                role: TeamRole::Member,
                addrs: vec![],
            },
            T0,
        )
        .unwrap();
        let (invite, request) = team::join_request(&other.me, &code, T0).unwrap();
        let response = team::accept_join(&owner.store, &owner.me, &request, T0).unwrap();
        team::complete_join(&other.store, &other.me, &invite.team, response).unwrap();
    }
    for other in others {
        let versions = team::load(&owner.store, &team).unwrap().versions().to_vec();
        for r in team::receive(&other.store, &team, versions).unwrap() {
            r.unwrap();
        }
    }
    team
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------------------------------------
// Round trips
// ------------------------------------------------------------------------------------------

#[test]
fn a_plain_bundle_reproduces_the_senders_sessions_exactly_and_reimport_adds_nothing() {
    let alice = user("alice");
    let bob = user("bob");
    alice.ingest(samples(0..6));
    let created = alice.bundle("all.tape", None, None);
    assert_eq!(created.sessions, 6);
    assert_eq!(
        created.objects as usize,
        alice.store.storage().object_count()
    );

    let report = bob.import(&alice.file("all.tape")).unwrap();
    assert_eq!(report.count(Outcome::Created), 6);
    assert_eq!(report.objects_written as u64, created.objects);
    assert_eq!(sessions_with_bytes(&bob.store), as_sent(&alice.store));
    for (_, record) in bob.store.sessions().unwrap() {
        assert_eq!(record.owner, Some(alice.id()), "the sender owns them");
    }
    assert!(tapes::store::fsck::fsck(&bob.store, |_| {})
        .unwrap()
        .is_clean());

    let before = dump(&bob.store);
    let again = bob.import(&alice.file("all.tape")).unwrap();
    assert!(again.nothing_new());
    assert_eq!(again.count(Outcome::Unchanged), 6);
    assert_eq!(dump(&bob.store), before, "a second import changes nothing");
}

#[test]
fn a_sealed_bundle_round_trips_to_a_team_member_with_its_shares_and_hides_content() {
    let alice = user("alice");
    let bob = user("bob");
    let team = team_with(&alice, &[&bob]);
    alice.ingest(samples(0..4));
    let shared = alice.store.sessions().unwrap()[0].0;
    share::share(
        &alice.store,
        &alice.me,
        &shared,
        &ShareOptions {
            audience: Audience::Team(team),
            title: None,
            note: Some("look at this".into()),
            expires_ms: None,
            secrets: SecretPolicy::Allow,
        },
        T0,
    )
    .unwrap();
    let chain = team::load(&alice.store, &team).unwrap();
    let created = alice.bundle("team.tape", Some(chain), None);
    assert_eq!(created.shares, 1);
    assert_eq!(created.team.as_ref().map(|t| t.0), Some(team));

    // Nothing a node says is readable in the file.
    let bytes = std::fs::read(alice.file("team.tape")).unwrap();
    let prompt = &alice.store.sessions().unwrap()[0].1.summary.first_prompt;
    assert!(!contains(&bytes, &prompt.as_bytes()[..20]));
    assert!(!contains(&bytes, b"let value_"));

    let info = bundle::verify(
        &bob.store,
        Some(&bob.me),
        &alice.file("team.tape"),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(info.team_name.as_deref(), Some("Paper Compute"));
    assert_eq!(info.sessions.len(), 4);
    assert!(info.sealed_chunks >= 1);
    let report = bob.import(&alice.file("team.tape")).unwrap();
    assert_eq!(report.count(Outcome::Created), 4);
    assert_eq!(report.shares_written, 1);
    assert_eq!(sessions_with_bytes(&bob.store), as_sent(&alice.store));
    let share_refs: Vec<_> = bob
        .store
        .storage()
        .refs(b"share/")
        .map(|e| e.unwrap())
        .collect();
    let alice_share_refs: Vec<_> = alice
        .store
        .storage()
        .refs(b"share/")
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(share_refs, alice_share_refs);
    assert!(bob.import(&alice.file("team.tape")).unwrap().nothing_new());
}

#[test]
fn a_sealed_bundle_is_refused_to_a_non_member_naming_the_team() {
    let alice = user("alice");
    let mallory = user("mallory");
    let team = team_with(&alice, &[]);
    alice.ingest(samples(0..2));
    let chain = team::load(&alice.store, &team).unwrap();
    alice.bundle("team.tape", Some(chain), None);
    mallory.ingest(samples(5..6));
    let before = dump(&mallory.store);
    let err = mallory.import(&alice.file("team.tape")).unwrap_err();
    assert!(matches!(err, BundleError::NotMember { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Paper Compute") && text.contains("not a member"),
        "{text}"
    );
    assert_eq!(dump(&mallory.store), before);
    // Without any identity the message says what to do.
    let err =
        bundle::verify(&mallory.store, None, &alice.file("team.tape"), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("tapes init"), "{err}");
}

// ------------------------------------------------------------------------------------------
// Incremental bundles
// ------------------------------------------------------------------------------------------

#[test]
fn incremental_bundles_carry_only_what_is_new_and_must_be_imported_in_order() {
    let alice = user("alice");
    let bob = user("bob");
    let carol = user("carol");
    // Version 1: six sessions, two of them cut short (they will grow).
    let full = samples(0..6);
    let mut first = full.clone();
    first[0].messages.truncate(3);
    first[1].messages.truncate(5);
    alice.ingest(first);
    let one = alice.bundle("one.tape", None, None);
    assert_eq!(one.sessions, 6);

    // Then: the two sessions grow and a seventh appears.
    alice.ingest(vec![full[0].clone(), full[1].clone()]);
    alice.ingest(samples(6..7));
    let new_nodes = (full[0].messages.len() - 3)
        + (full[1].messages.len() - 5)
        + samples(6..7)[0].messages.len();
    let two = alice.bundle("two.tape", None, Some(&alice.file("one.tape")));
    assert_eq!(two.objects as usize, new_nodes, "only the new nodes");
    assert_eq!(two.sessions, 3, "only the sessions that changed");
    assert_eq!(two.basis_sessions, 4);

    // Alone, the second bundle is refused before anything is written.
    carol.ingest(samples(20..21));
    let before = dump(&carol.store);
    let err = carol.import(&alice.file("two.tape")).unwrap_err();
    assert!(matches!(err, BundleError::NeedsBasis { .. }), "{err}");
    assert!(err.to_string().contains("one.tape"), "{err}");
    assert_eq!(dump(&carol.store), before);

    // In order, they reproduce the sender exactly.
    bob.import(&alice.file("one.tape")).unwrap();
    let report = bob.import(&alice.file("two.tape")).unwrap();
    assert_eq!(report.count(Outcome::Created), 1);
    assert_eq!(report.count(Outcome::Updated), 2);
    assert_eq!(report.objects_written, new_nodes);
    assert_eq!(sessions_with_bytes(&bob.store), as_sent(&alice.store));

    // A third bundle on the second leaves out what the whole chain carries (the first sits
    // next to the second under the name its header gives).
    let mut longer = samples(2..3);
    let extra = longer[0].messages[1].clone();
    longer[0].messages.push(extra);
    longer[0].messages.last_mut().unwrap().blocks = vec![ContentBlock::text("one more")];
    alice.ingest(longer);
    let three = alice.bundle("three.tape", None, Some(&alice.file("two.tape")));
    assert_eq!(
        (three.sessions, three.objects),
        (1, 1),
        "only the grown session's new node"
    );
    bob.import(&alice.file("three.tape")).unwrap();
    assert_eq!(sessions_with_bytes(&bob.store), as_sent(&alice.store));

    // An older bundle after a newer one changes nothing (the store is ahead).
    let before = dump(&bob.store);
    let old = bob.import(&alice.file("one.tape")).unwrap();
    assert!(old.nothing_new());
    assert_eq!(old.count(Outcome::Newer), 3);
    assert_eq!(dump(&bob.store), before);
}

// ------------------------------------------------------------------------------------------
// All or nothing
// ------------------------------------------------------------------------------------------

/// A small bundle (a few KB): one short session.
fn small_bundle(alice: &User) -> Vec<u8> {
    let mut s = samples(0..1);
    s[0].messages.truncate(4);
    alice.ingest(s);
    alice.bundle("small.tape", None, None);
    std::fs::read(alice.file("small.tape")).unwrap()
}

#[test]
fn a_bundle_truncated_at_any_offset_is_refused_and_the_store_is_unchanged() {
    let alice = user("alice");
    let bob = user("bob");
    let bytes = small_bundle(&alice);
    assert!(
        bytes.len() > 1000 && bytes.len() < 20_000,
        "{}",
        bytes.len()
    );
    bob.ingest(samples(3..5));
    let before = dump(&bob.store);
    let path = bob.file("cut.tape");
    for cut in 0..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match bob.import(&path) {
            Err(BundleError::Truncated { len, .. }) => assert_eq!(len, cut as u64),
            other => panic!("truncated at {cut}: {other:?}"),
        }
        assert_eq!(
            dump(&bob.store),
            before,
            "store changed after a cut at {cut}"
        );
    }
    std::fs::write(&path, &bytes).unwrap();
    bob.import(&path).unwrap();
    assert_ne!(dump(&bob.store), before);
}

#[test]
fn flipped_bytes_and_trailing_garbage_are_refused_and_say_so() {
    let alice = user("alice");
    let bob = user("bob");
    let bytes = small_bundle(&alice);
    bob.ingest(samples(3..4));
    let before = dump(&bob.store);
    let path = bob.file("bad.tape");
    let offsets: Vec<usize> = (0..bytes.len())
        .step_by(7)
        .chain([bytes.len() - 1])
        .collect();
    for &i in &offsets {
        let mut bad = bytes.clone();
        bad[i] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let err = bob.import(&path).unwrap_err();
        match &err {
            BundleError::Damaged { .. } => {}
            // A flip in the magic, or in a length that now runs past the end of the file.
            BundleError::NotABundle { .. } if i < 8 => {}
            BundleError::Truncated { .. } => {}
            other => panic!("flip at {i}: {other}"),
        }
        assert!(err.rejected_before_writing(), "{err}");
        assert_eq!(
            dump(&bob.store),
            before,
            "store changed after a flip at {i}"
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"garbage");
    std::fs::write(&path, &longer).unwrap();
    let err = bob.import(&path).unwrap_err();
    assert!(
        matches!(err, BundleError::Trailing { extra: 7, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("trailing garbage"));
    assert_eq!(dump(&bob.store), before);
}

/// Files in the store's pack directory (staged nodes of a large import live there).
fn pack_files(user: &User) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(user.store.path().join("packs"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_large_bundle_lands_whole_and_a_damaged_copy_leaves_no_trace() {
    let alice = user("alice");
    let bob = user("bob");
    // Enough nodes that an import stages them in a pack file rather than in memory.
    alice.ingest(samples(0..500));
    let created = alice.bundle("big.tape", None, None);
    assert!(created.objects > 4096, "{}", created.objects);
    bob.ingest(samples(600..602));
    let before = dump(&bob.store);

    // Damage in the last frame: every node has been verified and staged when it is found.
    let bytes = std::fs::read(alice.file("big.tape")).unwrap();
    let mut bad = bytes.clone();
    let at = bytes.len() - 40;
    bad[at] ^= 0x01;
    std::fs::write(bob.file("bad.tape"), &bad).unwrap();
    let err = bob.import(&bob.file("bad.tape")).unwrap_err();
    assert!(matches!(err, BundleError::Damaged { .. }), "{err}");
    assert_eq!(
        dump(&bob.store),
        before,
        "a damaged bundle changed the store"
    );
    assert_eq!(
        pack_files(&bob),
        Vec::<String>::new(),
        "staged nodes were left behind"
    );

    let report = bob.import(&alice.file("big.tape")).unwrap();
    assert_eq!(report.objects_written as u64, created.objects);
    assert_eq!(report.count(Outcome::Created), 500);
    let pack_names = pack_files(&bob);
    assert_eq!(pack_names.len(), 2, "{pack_names:?}");
    let bobs = sessions_with_bytes(&bob.store);
    for session in as_sent(&alice.store) {
        assert!(bobs.contains(&session), "session {} differs", session.0);
    }
    assert!(tapes::store::fsck::fsck(&bob.store, |_| {})
        .unwrap()
        .is_clean());
    let after = dump(&bob.store);
    assert!(bob.import(&alice.file("big.tape")).unwrap().nothing_new());
    assert_eq!(dump(&bob.store), after);
    assert_eq!(pack_files(&bob), pack_names);
}

// ------------------------------------------------------------------------------------------
// Forged bundles: well-formed files whose signatures or signers are wrong
// ------------------------------------------------------------------------------------------

/// The logical frames of a bundle, unsealed with `ring` when it is sealed.
struct Opened {
    header: Header,
    teams: Vec<Vec<u8>>,
    content: Vec<(u8, Vec<u8>)>,
}

fn open_bundle(bytes: &[u8], ring: Option<&KeyRing>) -> Opened {
    let (header, frames) = format::parse(bytes).unwrap();
    let mut teams = Vec::new();
    let mut content = Vec::new();
    for (k, payload) in frames {
        match k {
            kind::TEAM => teams.push(payload.to_vec()),
            kind::SEALED => {
                let sealed = Sealed::decode(payload).unwrap();
                let plain = keyring::open(ring.unwrap(), &sealed.team, &sealed).unwrap();
                for (k, p) in format::split_frames(&plain).unwrap() {
                    content.push((k, p.to_vec()));
                }
            }
            k => content.push((k, payload.to_vec())),
        }
    }
    content.retain(|(k, _)| *k != kind::REFS);
    Opened {
        header,
        teams,
        content,
    }
}

/// Writes `opened` back as a bundle whose refs manifest is signed by `signer` and whose
/// checksum is right: what a forger with their own key can make.
fn forge(opened: &Opened, signer: &Identity, seal: Option<&TeamChain>) -> Vec<u8> {
    let header_bytes = opened.header.encode();
    let mut refs = Refs::default();
    let mut list = format::ObjectList::default();
    for (k, p) in &opened.content {
        match *k {
            kind::OBJECT => {
                let (id, _) = format::decode_object(p).unwrap();
                list.add(&id);
                refs.objects += 1;
            }
            kind::SESSION => {
                let entry = SessionEntry::decode(p).unwrap();
                let record = SessionRecord::decode(&entry.record).unwrap();
                refs.sessions.push(RefEntry {
                    session: entry.id,
                    head: record.head,
                    digest: format::entry_digest(p),
                });
            }
            kind::SHARE => refs.shares.push(format::entry_digest(p)),
            _ => {}
        }
    }
    refs.object_list = list.finish();
    let signed = SignedRefs::sign(signer.signing_key(), &header_bytes, refs);
    let mut run = Vec::new();
    for (k, p) in &opened.content {
        format::encode_frame(&mut run, *k, p);
    }
    format::encode_frame(&mut run, kind::REFS, &signed.encode());
    let mut out = format::encode_prelude(&header_bytes);
    for t in &opened.teams {
        format::encode_frame(&mut out, kind::TEAM, t);
    }
    match seal {
        Some(chain) => {
            let sealed = keyring::seal(chain, &run).unwrap();
            format::encode_frame(&mut out, kind::SEALED, &sealed.encode());
        }
        None => out.extend_from_slice(&run),
    }
    out.push(kind::END);
    let sum = format::checksum_of(&out);
    out.extend_from_slice(&sum);
    out
}

/// Re-signs every session entry with `key`, optionally changing the record first.
fn resign(opened: &mut Opened, key: &Identity, edit: impl Fn(&mut SessionRecord)) {
    for (k, p) in &mut opened.content {
        if *k == kind::SESSION {
            let entry = SessionEntry::decode(p).unwrap();
            let mut record = SessionRecord::decode(&entry.record).unwrap();
            edit(&mut record);
            let sig = RefSignature::sign(key.signing_key(), &entry.id, None, &record);
            *p = SessionEntry {
                id: entry.id,
                record: record.encode(),
                signer: sig.signer,
                signature: sig.signature.to_vec(),
            }
            .encode();
        }
    }
}

fn refused_with(user: &User, bytes: &[u8], parts: &[&str]) -> BundleError {
    let path = user.file("forged.tape");
    std::fs::write(&path, bytes).unwrap();
    let before = dump(&user.store);
    let err = user.import(&path).unwrap_err();
    let text = err.to_string();
    for part in parts {
        assert!(text.contains(part), "`{part}` not in: {text}");
    }
    assert_eq!(dump(&user.store), before);
    err
}

#[test]
fn the_unchanged_forgery_tool_round_trips() {
    let alice = user("alice");
    let bob = user("bob");
    let bytes = small_bundle(&alice);
    let opened = open_bundle(&bytes, None);
    assert_eq!(forge(&opened, &alice.me, None), bytes);
    std::fs::write(bob.file("same.tape"), &bytes).unwrap();
    bob.import(&bob.file("same.tape")).unwrap();
}

#[test]
fn a_plain_bundle_carrying_someone_elses_session_is_refused() {
    let alice = user("alice");
    let mallory = user("mallory");
    let bob = user("bob");
    let bytes = small_bundle(&alice);
    // Mallory re-signs Alice's session (still owned by Alice) under her own name.
    let mut opened = open_bundle(&bytes, None);
    opened.header.creator = mallory.id();
    opened.header.creator_name = "mallory".into();
    resign(&mut opened, &mallory.me, |_| {});
    let forged = forge(&opened, &mallory.me, None);
    let err = refused_with(
        &bob,
        &forged,
        &["belongs to", "signed by mallory", "signer's own"],
    );
    assert!(matches!(err, BundleError::Signer { .. }));

    // An entry signed by someone other than the bundle's creator.
    let mut opened = open_bundle(&bytes, None);
    resign(&mut opened, &mallory.me, |r| r.owner = Some(mallory.id()));
    let forged = forge(&opened, &alice.me, None);
    refused_with(&bob, &forged, &["not by the bundle's creator"]);

    // A record altered after signing (the checksum and refs recomputed to match).
    let mut opened = open_bundle(&bytes, None);
    for (k, p) in &mut opened.content {
        if *k == kind::SESSION {
            let mut entry = SessionEntry::decode(p).unwrap();
            let mut record = SessionRecord::decode(&entry.record).unwrap();
            record.title = Some("renamed".into());
            entry.record = record.encode();
            *p = entry.encode();
        }
    }
    let forged = forge(&opened, &alice.me, None);
    refused_with(&bob, &forged, &["does not verify"]);

    // The refs manifest signed by someone other than the creator the header names.
    let opened = open_bundle(&bytes, None);
    let forged = forge(&opened, &mallory.me, None);
    refused_with(
        &bob,
        &forged,
        &["manifest of refs is not signed by its creator"],
    );

    // A node left out of the manifest (content removed, refs still Alice's).
    let (header, frames) = format::parse(&bytes).unwrap();
    let mut out = format::encode_prelude(&header.encode());
    for (k, p) in frames.iter().skip(1) {
        format::encode_frame(&mut out, *k, p);
    }
    out.push(kind::END);
    let sum = format::checksum_of(&out);
    out.extend_from_slice(&sum);
    refused_with(&bob, &out, &["needs node"]);
}

#[test]
fn a_bundle_from_a_removed_member_is_refused_by_whoever_knows_of_the_removal() {
    let alice = user("alice");
    let bob = user("bob");
    let carol = user("carol");
    let team = team_with(&alice, &[&bob, &carol]);
    bob.ingest(samples(20..22));
    // Alice removes Bob; Bob's store has not seen it, so his chain still lists him.
    let mut chain = team::load(&alice.store, &team).unwrap();
    team::remove(&alice.store, &alice.me, &mut chain, &bob.id(), T0 + 1).unwrap();
    let removal = chain.head().manifest.version;
    let stale = team::load(&bob.store, &team).unwrap();
    assert!(stale.head().manifest.member(&bob.id()).is_some());
    let created = bob.bundle("stale.tape", Some(stale), None);
    assert!(created.sessions > 0);
    let bytes = std::fs::read(bob.file("stale.tape")).unwrap();

    // Alice holds the newer version: refused, naming the version and who removed him.
    let err = refused_with(
        &alice,
        &bytes,
        &["signed by bob", "not a member of team Paper Compute"],
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("version {removal}")) && text.contains("signed by alice"),
        "{text}"
    );

    // Carol, once she has the newer version too.
    let versions = chain.versions().to_vec();
    for r in team::receive(&carol.store, &team, versions).unwrap() {
        r.unwrap();
    }
    refused_with(
        &carol,
        &bytes,
        &["signed by bob", &format!("version {removal}")],
    );
}

#[test]
fn a_sealed_bundle_signed_by_a_non_member_is_refused() {
    let alice = user("alice");
    let bob = user("bob");
    let mallory = user("mallory");
    let team = team_with(&alice, &[&bob]);
    alice.ingest(samples(0..2));
    let chain = team::load(&alice.store, &team).unwrap();
    alice.bundle("team.tape", Some(chain.clone()), None);
    let bytes = std::fs::read(alice.file("team.tape")).unwrap();
    let ring = KeyRing::for_member(&chain, &alice.id(), alice.me.age_identity()).unwrap();

    // Mallory (not in the team, but the manifests are public) signs a bundle of her own.
    let mut opened = open_bundle(&bytes, Some(&ring));
    opened.header.creator = mallory.id();
    opened.header.creator_name = "mallory".into();
    resign(&mut opened, &mallory.me, |_| {});
    let forged = forge(&opened, &mallory.me, Some(&chain));
    refused_with(
        &bob,
        &forged,
        &["signed by mallory", "not a member of team Paper Compute"],
    );

    // A member (Bob) relaying a session owned by a non-member.
    let mut opened = open_bundle(&bytes, Some(&ring));
    opened.header.creator = bob.id();
    opened.header.creator_name = "bob".into();
    resign(&mut opened, &bob.me, |r| r.owner = Some(mallory.id()));
    let forged = forge(&opened, &bob.me, Some(&chain));
    refused_with(
        &alice,
        &forged,
        &["belongs to", "not a member of team Paper Compute"],
    );

    // The same bundle with Alice's own sessions, relayed by Bob: allowed (he is a member).
    let mut opened = open_bundle(&bytes, Some(&ring));
    opened.header.creator = bob.id();
    opened.header.creator_name = "bob".into();
    resign(&mut opened, &bob.me, |_| {});
    let relayed = forge(&opened, &bob.me, Some(&chain));
    let carol_path = bob.file("relayed.tape");
    std::fs::write(&carol_path, relayed).unwrap();
    let report = alice.import(&carol_path).unwrap();
    // Alice already has her own sessions (the bundle's records differ from hers only by the
    // source path that never leaves a machine).
    assert_eq!(report.objects_written, 0);
    assert_eq!(report.count(Outcome::Created), 0);
}

// ------------------------------------------------------------------------------------------
// CLI
// ------------------------------------------------------------------------------------------

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-home"))
    }

    fn run(&self, who: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut cmd = super::util::tapes(&self.home(who));
        cmd.current_dir(self.dir.path()).args(args);
        if let Some(input) = stdin {
            cmd.write_stdin(input);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn ok(&self, who: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(who, args, None);
        assert_eq!(code, 0, "{who} $ tapes {}\n{out}\n{err}", args.join(" "));
        out
    }

    fn fails(&self, who: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(who, args, None);
        assert_eq!(
            code,
            1,
            "{who} $ tapes {} should fail\n{out}\n{err}",
            args.join(" ")
        );
        err
    }
}

#[test]
fn cli_create_verify_import_plain_sealed_and_from_stdin() {
    let cli = Cli {
        dir: tempfile::tempdir().unwrap(),
    };
    cli.ok("alice", &["init", "--name", "alice"]);
    cli.ok("bob", &["init", "--name", "bob"]);
    let src = cli.dir.path().join("transcripts");
    std::fs::create_dir_all(&src).unwrap();
    let sessions = samples(0..5);
    for (i, s) in sessions.iter().enumerate() {
        std::fs::write(src.join(format!("s{i}.jsonl")), sample::claude_jsonl(s)).unwrap();
    }
    cli.ok("alice", &["import", src.to_str().unwrap()]);
    let nodes: usize = sessions.iter().map(|s| s.messages.len()).sum();

    // Plain, every session (stdin is empty, no filter).
    let out = cli.ok(
        "alice",
        &["bundle", "create", "-o", "all.tape", "--plain", "--all"],
    );
    assert!(out.contains("5 sessions") && out.contains("plain"), "{out}");
    let verified = cli.ok("bob", &["bundle", "verify", "all.tape"]);
    for part in [
        "valid tapes bundle",
        "5 sessions",
        &format!("{nodes} nodes"),
        "signer    alice",
        "signature verified",
        "plain bundle",
        "size",
        "FIRST PROMPT",
    ] {
        assert!(verified.contains(part), "`{part}` not in:\n{verified}");
    }
    let out = cli.ok("bob", &["bundle", "import", "all.tape"]);
    assert!(out.contains("5 new sessions"), "{out}");
    let out = cli.ok("bob", &["bundle", "import", "all.tape"]);
    assert!(out.contains("nothing new"), "{out}");
    let listed = cli.ok("bob", &["sessions", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 5);

    // Ids on stdin select exactly those sessions.
    let ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|s| s["id"].as_str().unwrap()[..12].to_string())
        .collect();
    let (code, out, err) = cli.run(
        "alice",
        &["bundle", "create", "-o", "two.tape", "--plain"],
        Some(&format!("ID\n{}\n{}\n", ids[0], ids[1])),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 sessions"), "{out}");
    // An empty search piped in selects nothing rather than everything.
    let (code, _, err) = cli.run("alice", &["bundle", "create", "-o", "none.tape"], Some(""));
    assert_eq!(code, 1);
    assert!(err.contains("no session ids on stdin"), "{err}");
    assert!(!cli.dir.path().join("none.tape").exists());

    // Sealed to Alice's own key by default (even when she is in a team); Bob cannot open it.
    cli.ok("alice", &["team", "create", "Paper Compute"]);
    let out = cli.ok(
        "alice",
        &["bundle", "create", "-o", "mine.tape", "--project", "infra"],
    );
    assert!(out.contains("sealed to your own key"), "{out}");
    let verified = cli.ok("alice", &["bundle", "verify", "mine.tape"]);
    assert!(
        verified.contains("team      personal backup of alice"),
        "{verified}"
    );
    assert!(verified.contains("filter    project=infra"), "{verified}");
    let err = cli.fails("bob", &["bundle", "import", "mine.tape"]);
    assert!(
        err.contains("sealed to team personal backup of alice") && err.contains("not a member"),
        "{err}"
    );
    // Alice herself imports it.
    let out = cli.ok("alice", &["bundle", "import", "mine.tape"]);
    assert!(
        out.starts_with("imported mine.tape") || out.starts_with("nothing new"),
        "{out}"
    );
    // A team bundle carries only what the team may see: nothing is shared with it yet.
    let (code, _, err) = cli.run(
        "alice",
        &[
            "bundle",
            "create",
            "-o",
            "team.tape",
            "--team",
            "Paper Compute",
            "--project",
            "infra",
        ],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not shared with team Paper Compute"),
        "{err}"
    );
    assert!(err.contains("no session is left to bundle"), "{err}");
    assert!(!cli.dir.path().join("team.tape").exists());

    // Damage is named.
    let mut bytes = std::fs::read(cli.dir.path().join("all.tape")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(cli.dir.path().join("bad.tape"), &bytes).unwrap();
    let err = cli.fails("bob", &["bundle", "verify", "bad.tape"]);
    assert!(err.contains("damaged"), "{err}");
    std::fs::write(cli.dir.path().join("short.tape"), &bytes[..n / 3]).unwrap();
    let err = cli.fails("bob", &["bundle", "import", "short.tape"]);
    assert!(err.contains("truncated"), "{err}");
}

// ------------------------------------------------------------------------------------------
// What a bundle may carry: the sealing decides, the secret gate checks, no local paths
// ------------------------------------------------------------------------------------------

#[test]
fn a_team_bundle_carries_only_what_the_team_may_see_and_a_personal_backup_only_its_owner_opens() {
    let alice = user("alice");
    let bob = user("bob");
    let team = team_with(&alice, &[&bob]);
    alice.ingest(samples(0..3));
    let sessions = alice.store.sessions().unwrap();
    let (shared, private, named) = (sessions[0].0, sessions[1].0, sessions[2].0);
    share::share(
        &alice.store,
        &alice.me,
        &shared,
        &ShareOptions {
            audience: Audience::Team(team),
            title: None,
            note: None,
            expires_ms: None,
            secrets: SecretPolicy::Block,
        },
        T0,
    )
    .unwrap();

    // --team (with `--all`, and one private session named by id): the shared one and the
    // named one; the other private one is left out.
    let chain = team::load(&alice.store, &team).unwrap();
    let prepared = bundle::prepare(
        &alice.store,
        &alice.me,
        alice.store.sessions().unwrap(),
        &[named],
        &Sealing::Team(Box::new(chain.clone())),
        SecretPolicy::Block,
        false,
        T0,
    )
    .unwrap();
    assert!(prepared.refused.is_empty(), "{:?}", prepared.refused);
    let mut carried: Vec<SessionId> = prepared.sessions.iter().map(|s| s.0).collect();
    carried.sort();
    let mut expected = vec![shared, named];
    expected.sort();
    assert_eq!(carried, expected);
    assert_eq!(prepared.left_out.len(), 1);
    assert_eq!(prepared.left_out[0].session, private);
    assert!(!prepared.left_out[0].named);
    assert!(
        prepared.left_out[0]
            .why
            .contains("not shared with team Paper Compute"),
        "{}",
        prepared.left_out[0].why
    );
    bundle::create(
        &alice.store,
        &alice.me,
        &alice.file("team.tape"),
        CreateOptions {
            sessions: prepared.sessions,
            filter: Default::default(),
            team: Some(chain),
            basis: None,
            now_ms: T0,
        },
        &mut |_| {},
    )
    .unwrap();
    bob.import(&alice.file("team.tape")).unwrap();
    assert!(bob.store.session(&shared).unwrap().is_some());
    assert!(bob.store.session(&named).unwrap().is_some());
    assert!(
        bob.store.session(&private).unwrap().is_none(),
        "a team bundle carries no private session"
    );

    // The default: every session of Alice's, private ones too, sealed to her own key.
    let prepared = bundle::prepare(
        &alice.store,
        &alice.me,
        alice.store.sessions().unwrap(),
        &[],
        &Sealing::Personal,
        SecretPolicy::Block,
        false,
        T0,
    )
    .unwrap();
    assert_eq!(prepared.sessions.len(), 3);
    let created = bundle::create(
        &alice.store,
        &alice.me,
        &alice.file("backup.tape"),
        CreateOptions {
            sessions: prepared.sessions,
            filter: Default::default(),
            team: Some(bundle::personal_chain(&alice.me, T0).unwrap()),
            basis: None,
            now_ms: T0,
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(created.sessions, 3);
    let bytes = std::fs::read(alice.file("backup.tape")).unwrap();
    let prompt = &alice
        .store
        .session(&private)
        .unwrap()
        .unwrap()
        .summary
        .first_prompt;
    assert!(!contains(&bytes, &prompt.as_bytes()[..20]), "sealed");

    // Bob, Alice's teammate, cannot open it.
    let before = dump(&bob.store);
    let err = bob.import(&alice.file("backup.tape")).unwrap_err();
    assert!(matches!(err, BundleError::NotMember { .. }), "{err}");
    assert_eq!(dump(&bob.store), before);

    // Alice restores it on a new machine (a fresh store, the same identity).
    let dir = tempfile::tempdir().unwrap();
    let restored = Store::open(&dir.path().join("store")).unwrap();
    restored.set_local_owner(&alice.id()).unwrap();
    let report = bundle::import(
        &restored,
        Some(&alice.me),
        &alice.file("backup.tape"),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(report.count(Outcome::Created), 3);
    let (got, want) = (sessions_with_bytes(&restored), as_sent(&alice.store));
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1, "record of {}", a.0);
        assert_eq!(a.2, b.2, "nodes of {}", a.0);
    }
    assert_eq!(got.len(), want.len());
    assert!(tapes::store::fsck::fsck(&restored, |_| {})
        .unwrap()
        .is_clean());
}

#[test]
fn cli_a_plain_bundle_with_a_key_is_refused_redacted_or_allowed_and_carries_no_local_paths() {
    let cli = Cli {
        dir: tempfile::tempdir().unwrap(),
    };
    cli.ok("alice", &["init", "--name", "alice"]);
    let src = cli.dir.path().join("transcripts");
    std::fs::create_dir_all(&src).unwrap();
    let key = concat!("AK", "IA", "Z7QX4M2N8P5R", "3T6V");
    let clean = sample::session(31, 0, Shape::default());
    let mut leaky = sample::session(31, 1, Shape::default());
    match &mut leaky.messages[0].blocks[0] {
        ContentBlock::Text { text } => text.push_str(&format!("\naws_access_key_id = {key}")),
        other => panic!("{other:?}"),
    }
    for s in [&clean, &leaky] {
        std::fs::write(
            src.join(format!("{}.jsonl", s.source_id)),
            sample::claude_jsonl(s),
        )
        .unwrap();
    }
    cli.ok("alice", &["import", src.to_str().unwrap()]);
    let leaky_id = SessionId::derive("claude", &leaky.source_id);
    let file = |name: &str| cli.dir.path().join(name);
    let bytes = |name: &str| std::fs::read(file(name)).unwrap();

    // No choice: the session with the key is refused and left out; the other is bundled.
    let (code, out, err) = cli.run(
        "alice",
        &["bundle", "create", "--plain", "--all", "-o", "plain.tape"],
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "1 possible secret in session {}; it was left out of the bundle.",
            leaky_id.short()
        )),
        "{err}"
    );
    assert!(err.contains("block 0 (text): AWS access key ID"), "{err}");
    assert!(
        err.contains("--redact") && err.contains("--dry-run") && err.contains("--allow-secrets"),
        "{err}"
    );
    assert!(
        !err.contains(&key[4..]) && !out.contains(&key[4..]),
        "{err}"
    );
    assert!(out.contains(": 1 session, "), "{out}");
    let plain = bytes("plain.tape");
    assert!(!contains(&plain, key.as_bytes()));
    // Nothing says where the sessions lived here: no transcript path, no home directory.
    assert!(!contains(&plain, src.to_str().unwrap().as_bytes()));
    assert!(!contains(&plain, b"transcripts/"));
    assert!(!contains(&plain, b"/home/dev/"));

    // --dry-run: the findings per session, no file.
    let out = cli.ok(
        "alice",
        &[
            "bundle",
            "create",
            "--plain",
            "--all",
            "-o",
            "dry.tape",
            "--dry-run",
        ],
    );
    assert!(
        out.contains(&format!("{}: 1 possible secret;", leaky_id.short())),
        "{out}"
    );
    assert!(out.contains("no secrets found"), "{out}");
    assert!(!out.contains(&key[4..]), "{out}");
    assert!(!file("dry.tape").exists());

    // --redact: a redacted copy is bundled in its place.
    let out = cli.ok(
        "alice",
        &[
            "bundle", "create", "--plain", "--all", "-o", "red.tape", "--redact",
        ],
    );
    assert!(out.contains("bundling a redacted copy"), "{out}");
    assert!(out.contains("2 sessions"), "{out}");
    let red = bytes("red.tape");
    assert!(!contains(&red, key.as_bytes()));
    assert!(contains(&red, b"[REDACTED:AWS access key ID]"));

    // --allow-secrets: as is.
    let out = cli.ok(
        "alice",
        &[
            "bundle",
            "create",
            "--plain",
            "--all",
            "-o",
            "as-is.tape",
            "--allow-secrets",
        ],
    );
    // (Three now: the redacted copy made above is a session of Alice's too.)
    assert!(out.contains("3 sessions"), "{out}");
    assert!(contains(&bytes("as-is.tape"), key.as_bytes()));
}

#[test]
fn ones_own_bundle_imports_as_nothing_new_and_keeps_the_local_paths() {
    let alice = user("alice");
    alice.ingest(samples(30..33));
    let before = alice.store.sessions().unwrap();
    assert!(before.iter().all(|(_, r)| r.source.path == "sample"));
    alice.bundle("own.tape", None, None);
    let report = alice.import(&alice.file("own.tape")).unwrap();
    assert!(report.nothing_new(), "{:?}", report.sessions);
    assert_eq!(alice.store.sessions().unwrap(), before);
}
