//! Teams through the library, with several identities, each in its own temp `TAPES_HOME` and
//! store: create → invite → join, sealing and opening content per key epoch, removal and
//! leaving, every refusal of a manifest chain a peer must make (SPEC.md §9.2–9.3), invite rules
//! (§9.4) and where secrets may and may not end up (§9.6, issue point 6).
//!
//! Tests named `regression_…` pin defects found in review (a leaver picking the next key, a
//! fork resolved toward the other side, secrets in error messages and files) so they stay fixed.

use std::path::Path;

use tapes::home::Home;
use tapes::identity::{Identity, Profile};
use tapes::protocol::join::{self, JoinRefusal, JoinResponse};
use tapes::protocol::manifest::{Manifest, ManifestError, Member, SignedManifest, TeamRole};
use tapes::protocol::team_chain::{Applied, TeamChain};
use tapes::protocol::{ManifestId, MemberId, TeamId};
use tapes::store::backend::RefUpdate;
use tapes::store::Store;
use tapes::team::keyring::{self, KeyError, KeyRing, Sealed};
use tapes::team::{self, InviteOptions, TeamError};

/// 2026-01-01T00:00:00Z: every test runs on this fixed clock.
const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;

struct User {
    _dir: tempfile::TempDir,
    home: Home,
    store: Store,
    me: Identity,
}

fn user(name: &str, email: Option<&str>) -> User {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    home.ensure().unwrap();
    let me = Identity::generate(Profile {
        name: name.into(),
        email: email.map(str::to_string),
    })
    .unwrap();
    me.save(&home).unwrap();
    let store = Store::open(&home.store_dir()).unwrap();
    User {
        _dir: dir,
        home,
        store,
        me,
    }
}

impl User {
    fn id(&self) -> MemberId {
        MemberId(self.me.verifying_key().to_bytes())
    }

    fn chain(&self, team: &TeamId) -> TeamChain {
        team::load(&self.store, team).unwrap()
    }

    fn ring(&self, chain: &TeamChain) -> Result<KeyRing, KeyError> {
        KeyRing::for_member(chain, &self.id(), self.me.age_identity())
    }

    /// Opens `sealed` with the ring this user holds for `team` in their own store.
    fn open(&self, team: &TeamId, sealed: &Sealed) -> Result<Vec<u8>, KeyError> {
        let chain = self.chain(team);
        keyring::open(&self.ring(&chain)?, team, sealed)
    }

    /// Seals to the current epoch of the team as this user's store has it.
    fn seal(&self, team: &TeamId, text: &[u8]) -> Sealed {
        keyring::seal(&self.chain(team), text).unwrap()
    }

    /// The identity secrets as they sit in the 0600 files: the node key seed (hex) and the
    /// `AGE-SECRET-KEY-1…` line.
    fn secrets(&self) -> Vec<String> {
        let dir = self.home.identity_dir();
        let node = std::fs::read_to_string(dir.join("node.key")).unwrap();
        let seed = node
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(seed.len(), 64, "node.key holds a 32-byte hex seed");
        let age = std::fs::read_to_string(dir.join("age.key")).unwrap();
        let age = age
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .to_string();
        vec![
            seed.to_ascii_lowercase(),
            seed.to_ascii_uppercase(),
            age.clone(),
            age.to_ascii_lowercase(),
        ]
    }
}

fn options(max_uses: u32) -> InviteOptions {
    InviteOptions {
        expires_ms: Some(T0 + HOUR),
        max_uses,
        email: None,
        role: TeamRole::Member,
        addrs: vec![],
    }
}

fn invite(inviter: &User, team: &TeamId, options: InviteOptions) -> String {
    team::invite(
        &inviter.store,
        &inviter.me,
        &inviter.chain(team),
        options,
        T0,
    )
    .unwrap()
    .0
}

/// The joiner asks with `code`, the inviter answers (at `now`).
fn ask(inviter: &User, joiner: &User, code: &str, now: i64) -> JoinResponse {
    let (_, request) = team::join_request(&joiner.me, code, now).unwrap();
    team::accept_join(&inviter.store, &inviter.me, &request, now).unwrap()
}

fn refusal(response: JoinResponse) -> JoinRefusal {
    match response {
        JoinResponse::Refused(reason) => reason,
        JoinResponse::Accepted { .. } => panic!("the join was accepted but must be refused"),
    }
}

/// The whole exchange: request, accept, complete. Returns the joiner's chain.
fn join(inviter: &User, joiner: &User, code: &str) -> TeamChain {
    let (invite, request) = team::join_request(&joiner.me, code, T0).unwrap();
    let response = team::accept_join(&inviter.store, &inviter.me, &request, T0).unwrap();
    assert!(
        matches!(response, JoinResponse::Accepted { .. }),
        "join refused: {response:?}"
    );
    team::complete_join(&joiner.store, &joiner.me, &invite.team, response).unwrap()
}

/// Sends every version `from` holds to `to`, which must accept all of them.
fn sync(from: &User, to: &User, team: &TeamId) {
    let versions = from.chain(team).versions().to_vec();
    for result in team::receive(&to.store, team, versions).unwrap() {
        result.unwrap();
    }
    assert_eq!(to.chain(team).head(), from.chain(team).head());
}

/// `owner` creates "Paper Compute" and lets each of `others` in with the given role; every
/// member's store ends up with the final chain.
fn team_with(owner: &User, others: &[(&User, TeamRole)]) -> TeamId {
    let team = team::create(&owner.store, &owner.me, "Paper Compute", T0)
        .unwrap()
        .team_id();
    for (other, role) in others {
        let code = invite(
            owner,
            &team,
            InviteOptions {
                role: *role,
                ..options(1)
            },
        );
        join(owner, other, &code);
    }
    for (other, _) in others {
        sync(owner, other, &team);
    }
    team
}

fn member_of(identity: &Identity, role: TeamRole) -> Member {
    team::member_for(identity, role)
}

/// The successor of `prev` with `members` (sorted here), signed by every one of `signers`.
/// `keys`: who re-wraps the key ring (must hold `prev`'s ring) and whether to rotate; `None`
/// copies `prev`'s key fields as they are (what a forger without the ring would do).
fn successor(
    prev: &SignedManifest,
    mut members: Vec<Member>,
    keys: Option<(&User, bool)>,
    signers: &[&Identity],
) -> SignedManifest {
    members.sort_by_key(|m| m.id);
    let p = &prev.manifest;
    let (epoch, epoch_recipient, keyring) = match keys {
        None => (p.epoch, p.epoch_recipient.clone(), p.keyring.clone()),
        Some((holder, rotate)) => {
            let mut ring = KeyRing::unwrap_from(p, holder.me.age_identity()).unwrap();
            let (epoch, recipient) = if rotate {
                (p.epoch + 1, ring.add_epoch(p.epoch + 1))
            } else {
                (p.epoch, p.epoch_recipient.clone())
            };
            (epoch, recipient, ring.wrap_for(&members).unwrap())
        }
    };
    let manifest = Manifest {
        team: Some(p.team_id()),
        version: p.version + 1,
        prev: Some(prev.id()),
        name: p.name.clone(),
        members,
        created_ms: p.created_ms + 1,
        epoch,
        epoch_recipient,
        keyring,
    };
    let signatures = signers
        .iter()
        .map(|s| manifest.sign(s.signing_key()))
        .collect();
    SignedManifest {
        manifest,
        signatures,
    }
}

fn receive_one(
    to: &User,
    team: &TeamId,
    manifest: SignedManifest,
) -> Result<Applied, ManifestError> {
    let mut results = team::receive(&to.store, team, vec![manifest]).unwrap();
    assert_eq!(results.len(), 1);
    results.remove(0)
}

fn assert_names(error: &dyn std::fmt::Display, parts: &[&str]) {
    let text = error.to_string();
    for part in parts {
        assert!(text.contains(part), "error `{text}` does not name `{part}`");
    }
}

fn assert_no_secret(text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into: {text}"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` (recursively) as bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                // (The store's `tapes.sock`, while a store is open, holds nothing to read.)
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. create → invite → join → both open what the other sealed
// ---------------------------------------------------------------------------------------------

#[test]
fn create_invite_join_and_both_members_open_what_the_other_sealed() {
    let alice = user("alice", Some("alice@example.com"));
    let bob = user("bob", None);
    let carol = user("carol", None);

    let created = team::create(&alice.store, &alice.me, "Paper Compute", T0).unwrap();
    let team = created.team_id();
    assert_eq!(
        team.0,
        created.head().id().0,
        "the team id is the id of the genesis manifest"
    );
    assert_eq!(created.head().manifest.version, 0);
    assert_eq!(
        created.head().manifest.member(&alice.id()).unwrap().role,
        TeamRole::Owner
    );

    let code = invite(&alice, &team, options(1));
    assert!(code.starts_with("tapes-invite1-"), "{code}");
    let bob_chain = join(&alice, &bob, &code);

    // Both stores hold the same version 1, listing both with their roles.
    let alice_chain = alice.chain(&team);
    assert_eq!(alice_chain.head(), bob_chain.head());
    assert_eq!(
        bob.chain(&team).head(),
        bob_chain.head(),
        "the joiner stored the chain"
    );
    let head = &alice_chain.head().manifest;
    assert_eq!(head.version, 1);
    assert_eq!(head.prev, Some(alice_chain.versions()[0].id()));
    assert_eq!(head.member(&alice.id()).unwrap().role, TeamRole::Owner);
    let bob_entry = head.member(&bob.id()).unwrap();
    assert_eq!(
        (bob_entry.role, bob_entry.name.as_str()),
        (TeamRole::Member, "bob")
    );
    assert_eq!(bob_entry.age_recipient, bob.me.age_recipient().to_string());
    assert_eq!(team::list(&bob.store).unwrap().len(), 1);
    assert_eq!(
        team::resolve(&bob.store, Some("Paper Compute"))
            .unwrap()
            .team_id(),
        team
    );

    // Alice seals, Bob opens; Bob seals, Alice opens. Sealed bytes round-trip and hide the text.
    let from_alice = alice.seal(&team, b"the deploy key is in vault");
    let wire = from_alice.encode();
    assert!(!contains(&wire, b"the deploy key is in vault"));
    let from_alice = Sealed::decode(&wire).unwrap();
    assert_eq!(
        bob.open(&team, &from_alice).unwrap(),
        b"the deploy key is in vault"
    );
    let from_bob = bob.seal(&team, b"thanks, alice");
    assert_eq!(alice.open(&team, &from_bob).unwrap(), b"thanks, alice");
    assert_eq!(
        alice.open(&team, &from_alice).unwrap(),
        b"the deploy key is in vault"
    );

    // Someone outside the team cannot open either.
    assert!(matches!(carol.ring(&alice_chain), Err(KeyError::NotMember(t)) if t == team));
    let unwrap = KeyRing::unwrap_from(head, carol.me.age_identity())
        .err()
        .unwrap();
    assert!(
        matches!(unwrap, KeyError::Unwrap { version: 1, .. }),
        "{unwrap}"
    );
    assert_names(&unwrap, &["cannot be opened with your age identity"]);

    // Sealed content of one team is not opened as another's.
    let other = team::create(&alice.store, &alice.me, "Other", T0).unwrap();
    let err = keyring::open(&alice.ring(&other).unwrap(), &other.team_id(), &from_alice)
        .err()
        .unwrap();
    assert!(matches!(err, KeyError::WrongTeam { .. }), "{err}");
    assert_names(&err, &["sealed to team", &team.to_hex()]);
}

#[test]
fn a_late_joiner_opens_what_the_team_shared_before_them() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let carol = user("carol", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    let early = bob.seal(&team, b"sealed before carol joined");
    let code = invite(&alice, &team, options(1));
    join(&alice, &carol, &code);
    assert_eq!(
        carol.open(&team, &early).unwrap(),
        b"sealed before carol joined"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. remove and leave rotate the key
// ---------------------------------------------------------------------------------------------

#[test]
fn a_removed_member_keeps_what_they_had_but_cannot_open_what_follows() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let carol = user("carol", None);
    let team = team_with(
        &alice,
        &[(&bob, TeamRole::Member), (&carol, TeamRole::Member)],
    );
    let before = carol.seal(&team, b"before bob left");
    assert_eq!(before.epoch, 0);

    let mut chain = alice.chain(&team);
    team::remove(&alice.store, &alice.me, &mut chain, &bob.id(), T0 + 10).unwrap();
    let removal = chain.head().clone();
    assert_eq!(
        removal.manifest.epoch, 1,
        "removing a member starts a new key epoch"
    );
    assert_ne!(
        removal.manifest.epoch_recipient,
        chain.versions()[2].manifest.epoch_recipient
    );
    assert!(removal.manifest.member(&bob.id()).is_none());
    assert_eq!(alice.chain(&team).head(), &removal, "the removal is stored");

    // Everyone, Bob included, receives the removal (a removed member still hears about it).
    assert_eq!(
        receive_one(&bob, &team, removal.clone()).unwrap(),
        Applied::Appended
    );
    assert_eq!(
        receive_one(&carol, &team, removal.clone()).unwrap(),
        Applied::Appended
    );

    let after = alice.seal(&team, b"after bob left");
    assert_eq!(after.epoch, 1);

    // Bob still holds the ring of the last version that listed him: epoch 0 only.
    let bob_chain = bob.chain(&team);
    assert_eq!(bob_chain.head(), &removal);
    let bob_ring = bob.ring(&bob_chain).unwrap();
    assert_eq!(bob_ring.epochs().collect::<Vec<_>>(), vec![0]);
    assert_eq!(bob.open(&team, &before).unwrap(), b"before bob left");
    let err = bob.open(&team, &after).err().unwrap();
    assert!(
        matches!(err, KeyError::NoEpochKey { epoch: 1, team: t } if t == team),
        "{err}"
    );
    assert_names(&err, &["key epoch 1", "sealed after you left"]);
    // The new ring is not wrapped to him either.
    let unwrap = KeyRing::unwrap_from(&removal.manifest, bob.me.age_identity())
        .err()
        .unwrap();
    assert!(matches!(unwrap, KeyError::Unwrap { .. }), "{unwrap}");

    // Those who remain open both.
    for member in [&alice, &carol] {
        assert_eq!(
            member
                .ring(&member.chain(&team))
                .unwrap()
                .epochs()
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(member.open(&team, &before).unwrap(), b"before bob left");
        assert_eq!(member.open(&team, &after).unwrap(), b"after bob left");
    }

    // And Bob can no longer change the team.
    let mut bob_chain = bob.chain(&team);
    let err = team::remove(&bob.store, &bob.me, &mut bob_chain, &carol.id(), T0 + 20)
        .err()
        .unwrap();
    assert!(matches!(err, TeamError::NotMember(t) if t == team), "{err}");
    assert_names(&err, &["not a member"]);
}

#[test]
fn leaving_rotates_the_key_and_the_last_owner_must_hand_over_first() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let carol = user("carol", None);
    let team = team_with(
        &alice,
        &[(&bob, TeamRole::Member), (&carol, TeamRole::Member)],
    );
    let before = alice.seal(&team, b"before bob left");

    // A plain member leaves on their own: a self-removal that changes nothing else, not even
    // the key (a leaver choosing the next key could wrap it to themselves).
    let mut bob_chain = bob.chain(&team);
    team::leave(&bob.store, &bob.me, &mut bob_chain, T0 + 10).unwrap();
    let left = bob_chain.head().clone();
    assert!(left.manifest.member(&bob.id()).is_none());
    assert_eq!(
        left.manifest.epoch, 0,
        "the leaver does not pick the next key"
    );
    assert_eq!(left.signatures.len(), 1);
    assert_eq!(
        left.signatures[0].signer,
        bob.id(),
        "a member leaving signs their own removal"
    );
    assert_eq!(
        receive_one(&alice, &team, left.clone()).unwrap(),
        Applied::Appended
    );
    assert_eq!(
        receive_one(&carol, &team, left.clone()).unwrap(),
        Applied::Appended
    );

    // Bob still knows epoch 0, so nothing new may be sealed to it...
    let err = keyring::seal(&carol.chain(&team), b"too early").unwrap_err();
    assert!(matches!(err, KeyError::RotationOwed { .. }), "{err}");
    assert_names(&err, &["bob", "rotate"]);
    // ...until a remaining member (any member) rotates, which sealing through `seal_for` does.
    let mut carol_chain = carol.chain(&team);
    let after = team::seal_for(
        &carol.store,
        &carol.me,
        &mut carol_chain,
        b"after bob left",
        T0 + 15,
    )
    .unwrap();
    assert_eq!(after.epoch, 1);
    let rotation = carol_chain.head().clone();
    assert_eq!(
        rotation.signatures[0].signer,
        carol.id(),
        "a plain member rotated"
    );
    assert_eq!(
        receive_one(&alice, &team, rotation.clone()).unwrap(),
        Applied::Appended
    );
    assert_eq!(bob.open(&team, &before).unwrap(), b"before bob left");
    assert!(matches!(
        bob.open(&team, &after),
        Err(KeyError::NoEpochKey { epoch: 1, .. })
    ));
    assert_eq!(alice.open(&team, &after).unwrap(), b"after bob left");
    let left = rotation;

    // Alice is the only owner: leaving would leave the team without one.
    let mut chain = alice.chain(&team);
    let err = team::leave(&alice.store, &alice.me, &mut chain, T0 + 20)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            TeamError::Manifest(ManifestError::NoOwner { version: 5 })
        ),
        "{err}"
    );
    assert_names(&err, &["without an owner", "the last owner must hand over"]);
    assert_eq!(alice.chain(&team).head(), &left, "nothing was stored");
    assert_eq!(
        chain.head(),
        &left,
        "the in-memory chain did not move either"
    );
    // Demoting herself is the same thing.
    let err = team::set_role(
        &alice.store,
        &alice.me,
        &mut chain,
        &alice.id(),
        TeamRole::Admin,
        T0 + 20,
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, TeamError::Manifest(ManifestError::NoOwner { .. })),
        "{err}"
    );

    // After handing over to Carol she may go; the key rotates when Carol next seals.
    team::set_role(
        &alice.store,
        &alice.me,
        &mut chain,
        &carol.id(),
        TeamRole::Owner,
        T0 + 30,
    )
    .unwrap();
    team::leave(&alice.store, &alice.me, &mut chain, T0 + 40).unwrap();
    let head = &chain.head().manifest;
    assert_eq!(head.members.len(), 1);
    assert_eq!(head.member(&carol.id()).unwrap().role, TeamRole::Owner);
    assert_eq!(head.epoch, 1, "leaving does not rotate");
    assert_eq!(chain.rotation_owed().len(), 1, "alice still knows epoch 1");
}

#[test]
fn regression_the_only_member_leaving_is_told_about_owners_not_about_age() {
    let alice = user("alice", None);
    let team = team_with(&alice, &[]);
    let mut chain = alice.chain(&team);
    let err = team::leave(&alice.store, &alice.me, &mut chain, T0 + 1)
        .err()
        .unwrap();
    assert!(
        matches!(err, TeamError::Manifest(ManifestError::NoOwner { .. })),
        "{err}"
    );
}

#[test]
fn regression_a_member_who_leaves_cannot_choose_the_next_epoch_key() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    // Bob leaves with a manifest of his own making: new epoch, ring wrapped to the remaining
    // members *and* to himself (nobody can see whom an age ciphertext is wrapped to).
    let head = bob.chain(&team).head().clone();
    let mut ring = KeyRing::unwrap_from(&head.manifest, bob.me.age_identity()).unwrap();
    let epoch = head.manifest.epoch + 1;
    let recipient = ring.add_epoch(epoch);
    let remaining: Vec<Member> = head
        .manifest
        .members
        .iter()
        .filter(|m| m.id != bob.id())
        .cloned()
        .collect();
    let mut wrapped_to = remaining.clone();
    wrapped_to.push(member_of(&bob.me, TeamRole::Member));
    let manifest = Manifest {
        team: Some(team),
        version: head.manifest.version + 1,
        prev: Some(head.id()),
        members: remaining,
        epoch,
        epoch_recipient: recipient,
        keyring: ring.wrap_for(&wrapped_to).unwrap(),
        ..head.manifest.clone()
    };
    let leave = SignedManifest {
        signatures: vec![manifest.sign(bob.me.signing_key())],
        manifest,
    };
    let accepted = receive_one(&alice, &team, leave.clone());
    let after = alice.seal(&team, b"sealed after bob left");
    let bob_reads = KeyRing::unwrap_from(&leave.manifest, bob.me.age_identity())
        .and_then(|ring| keyring::open(&ring, &team, &after));
    assert!(
        accepted.is_err() || bob_reads.is_err(),
        "bob left and still reads what the team seals afterwards"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. What verification refuses (issue point 2)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_manifest_signed_by_a_non_member_is_refused() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let mallory = user("mallory", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    let head = alice.chain(&team).head().clone();

    // Mallory adds herself as an owner and signs it herself.
    let mut members = head.manifest.members.clone();
    members.push(member_of(&mallory.me, TeamRole::Owner));
    let forged = successor(&head, members, None, &[&mallory.me]);
    let err = receive_one(&alice, &team, forged.clone()).unwrap_err();
    assert!(
        matches!(err, ManifestError::SignerNotMember { signer, version: 2, prev_version: 1 } if signer == mallory.id()),
        "{err}"
    );
    assert_names(&err, &[&mallory.id().to_hex(), "not a member of version 1"]);
    // Co-signed by a real owner it is still refused: every signer must be a member.
    let cosigned = successor(
        &head,
        forged.manifest.members.clone(),
        None,
        &[&alice.me, &mallory.me],
    );
    assert!(matches!(
        receive_one(&alice, &team, cosigned),
        Err(ManifestError::SignerNotMember { .. })
    ));
    // A genesis claiming to be signed by an owner it lists, signed by someone else.
    let mut genesis = alice.chain(&team).versions()[0].clone();
    genesis.signatures = vec![genesis.manifest.sign(mallory.me.signing_key())];
    let err = TeamChain::new(genesis).err().unwrap();
    assert!(
        matches!(err, ManifestError::SignerNotMember { version: 0, .. }),
        "{err}"
    );

    assert_eq!(alice.chain(&team).head(), &head, "nothing changed");
    assert!(alice
        .chain(&team)
        .head()
        .manifest
        .member(&mallory.id())
        .is_none());
}

#[test]
fn a_manifest_signed_by_a_plain_member_is_refused() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let mallory = user("mallory", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    let head = alice.chain(&team).head().clone();

    let mut members = head.manifest.members.clone();
    members.push(member_of(&mallory.me, TeamRole::Member));
    let by_member = successor(&head, members, Some((&bob, false)), &[&bob.me]);
    let err = receive_one(&alice, &team, by_member).unwrap_err();
    assert!(
        matches!(err, ManifestError::SignerNotAdmin { signer, version: 2, prev_version: 1 } if signer == bob.id()),
        "{err}"
    );
    assert_names(
        &err,
        &[
            "a plain member of version 1",
            "only an owner or admin may change the team",
        ],
    );

    // A plain member may not promote themselves either.
    let members = head
        .manifest
        .members
        .iter()
        .map(|m| {
            if m.id == bob.id() {
                Member {
                    role: TeamRole::Admin,
                    ..m.clone()
                }
            } else {
                m.clone()
            }
        })
        .collect();
    let promoted = successor(&head, members, None, &[&bob.me]);
    assert!(matches!(
        receive_one(&alice, &team, promoted),
        Err(ManifestError::SignerNotAdmin { .. })
    ));

    // Nor remove someone else (even rotating the key).
    let alone = head
        .manifest
        .members
        .iter()
        .filter(|m| m.id != alice.id())
        .cloned()
        .collect();
    let coup = successor(&head, alone, Some((&bob, true)), &[&bob.me]);
    assert!(receive_one(&alice, &team, coup).is_err());

    // The library refuses the same up front, with its own words.
    let mut chain = bob.chain(&team);
    let err = team::remove(&bob.store, &bob.me, &mut chain, &alice.id(), T0 + 1)
        .err()
        .unwrap();
    assert!(matches!(err, TeamError::NotAllowed { .. }), "{err}");
    assert_names(&err, &["only an owner or admin can remove members"]);
    let err = team::set_role(
        &bob.store,
        &bob.me,
        &mut chain,
        &bob.id(),
        TeamRole::Admin,
        T0 + 1,
    )
    .err()
    .unwrap();
    assert!(matches!(err, TeamError::NotAllowed { .. }), "{err}");
    assert_eq!(alice.chain(&team).head(), &head, "nothing changed");
}

#[test]
fn only_an_owner_removes_or_demotes_admins_and_makes_owners() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let carol = user("carol", None);
    let team = team_with(
        &alice,
        &[(&bob, TeamRole::Admin), (&carol, TeamRole::Admin)],
    );
    let mut bob_chain = bob.chain(&team);
    let err = team::remove(&bob.store, &bob.me, &mut bob_chain, &carol.id(), T0 + 1)
        .err()
        .unwrap();
    assert!(
        matches!(err, TeamError::Manifest(ManifestError::NeedsOwner { .. })),
        "{err}"
    );
    assert_names(
        &err,
        &["removes admin", "only an owner of version 2 may do that"],
    );
    let err = team::set_role(
        &bob.store,
        &bob.me,
        &mut bob_chain,
        &carol.id(),
        TeamRole::Member,
        T0 + 1,
    )
    .err()
    .unwrap();
    assert_names(&err, &["demotes admin", "only an owner"]);
    let err = team::set_role(
        &bob.store,
        &bob.me,
        &mut bob_chain,
        &bob.id(),
        TeamRole::Owner,
        T0 + 1,
    )
    .err()
    .unwrap();
    assert_names(&err, &["an owner", "only an owner"]);
    // The owner may.
    let mut chain = alice.chain(&team);
    team::remove(&alice.store, &alice.me, &mut chain, &carol.id(), T0 + 2).unwrap();
    assert_eq!(chain.head().manifest.epoch, 1);
}

#[test]
fn a_manifest_whose_previous_id_is_unknown_is_refused() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    let head = alice.chain(&team).head().clone();
    let mut stray = successor(&head, head.manifest.members.clone(), None, &[&alice.me]);
    let unknown = ManifestId([0x5a; 32]);
    stray.manifest.prev = Some(unknown);
    stray.signatures = vec![stray.manifest.sign(alice.me.signing_key())];
    let err = receive_one(&alice, &team, stray).unwrap_err();
    assert!(
        matches!(err, ManifestError::UnknownPrev { version: 2, prev, prev_version: 1 } if prev == unknown),
        "{err}"
    );
    assert_names(
        &err,
        &[
            "unknown previous manifest",
            &unknown.to_hex(),
            "not version 1",
        ],
    );

    // A version further ahead than the next one is refused as a gap, not applied.
    let v2 = successor(&head, head.manifest.members.clone(), None, &[&alice.me]);
    let v3 = successor(&v2, v2.manifest.members.clone(), None, &[&alice.me]);
    let err = receive_one(&alice, &team, v3).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::Gap {
                offered: 3,
                current: 1
            }
        ),
        "{err}"
    );
    assert_names(&err, &["skips from version 1 to 3"]);
    assert_eq!(alice.chain(&team).head(), &head);
}

#[test]
fn a_replayed_older_version_is_refused_as_a_rollback() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let carol = user("carol", None);
    let team = team_with(
        &alice,
        &[(&bob, TeamRole::Member), (&carol, TeamRole::Member)],
    );
    let with_bob = alice.chain(&team).head().clone();
    let mut chain = alice.chain(&team);
    team::remove(&alice.store, &alice.me, &mut chain, &bob.id(), T0 + 1).unwrap();
    sync(&alice, &carol, &team);

    // Bob replays the version that still lists him.
    let mut state = carol.chain(&team);
    let err = state.apply(with_bob.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::Rollback {
                offered: 2,
                current: 3
            }
        ),
        "{err}"
    );
    assert_names(
        &err,
        &["version 2 is older than the current version 3", "rollback"],
    );
    let genesis = state.versions()[0].clone();
    assert!(matches!(
        state.apply(genesis),
        Err(ManifestError::Rollback {
            offered: 0,
            current: 3
        })
    ));
    assert_eq!(state.head().manifest.version, 3);

    // Through `receive` the replay changes nothing either: Bob stays out, new content stays
    // sealed to the new epoch.
    let result = receive_one(&carol, &team, with_bob);
    assert_ne!(result, Ok(Applied::Appended));
    let chain = carol.chain(&team);
    assert_eq!(chain.head().manifest.version, 3);
    assert!(chain.head().manifest.member(&bob.id()).is_none());
    let sealed = carol.seal(&team, b"after the replay");
    assert_eq!(sealed.epoch, 1);
    assert!(bob.open(&team, &sealed).is_err());
}

#[test]
fn a_fork_is_refused_on_both_sides_until_an_owner_of_the_base_resolves_it() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let dave = user("dave", None);
    let erin = user("erin", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Admin)]);

    // At the same moment, the owner lets Dave in and the admin lets Erin in: two version 2s.
    let code = invite(&alice, &team, options(1));
    join(&alice, &dave, &code);
    let code = invite(&bob, &team, options(1));
    join(&bob, &erin, &code);
    let ours = alice.chain(&team).head().clone();
    let theirs = bob.chain(&team).head().clone();
    assert_eq!((ours.manifest.version, theirs.manifest.version), (2, 2));
    assert_ne!(ours.id(), theirs.id());

    // Each side hears of the other: both see the fork, and say so.
    let err = receive_one(&alice, &team, theirs.clone()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::Forked { version: 2, base: 1, a, b } if *a == ours.id() && *b == theirs.id()),
        "{err}"
    );
    assert_names(
        &err,
        &[
            "forked",
            "claim version 2",
            &ours.id().to_hex(),
            &theirs.id().to_hex(),
            "owner of version 1",
        ],
    );
    let err = receive_one(&bob, &team, ours.clone()).unwrap_err();
    assert!(
        matches!(
            &err,
            ManifestError::Forked {
                version: 2,
                base: 1,
                ..
            }
        ),
        "{err}"
    );
    let alice_chain = alice.chain(&team);
    assert_eq!(
        alice_chain.fork().map(|f| f.base),
        Some(1),
        "the fork is recorded in the store"
    );
    assert_eq!(alice_chain.fork().unwrap().theirs, theirs);

    // While forked nothing moves on either side: not the admin continuing his side, not an
    // admin continuing the other side, not the library's own changes.
    let mut erin_admin = theirs.manifest.members.clone();
    for m in &mut erin_admin {
        if m.id == erin.id() {
            m.role = TeamRole::Admin;
        }
    }
    let on_theirs = successor(&theirs, erin_admin, None, &[&bob.me]);
    let err = receive_one(&alice, &team, on_theirs).unwrap_err();
    assert!(matches!(err, ManifestError::Forked { .. }), "{err}");
    assert_names(&err, &["forked", "both are refused"]);
    let on_ours = successor(&ours, ours.manifest.members.clone(), None, &[&bob.me]);
    assert!(matches!(
        receive_one(&alice, &team, on_ours),
        Err(ManifestError::Forked { .. })
    ));
    let mut bob_chain = bob.chain(&team);
    let err = team::remove(&bob.store, &bob.me, &mut bob_chain, &erin.id(), T0 + 1)
        .err()
        .unwrap();
    assert!(matches!(err, TeamError::Forked(t) if t == team), "{err}");
    assert_names(&err, &["forked", "an owner must resolve it"]);
    let code = invite(&alice, &team, options(1));
    let carol = user("carol", None);
    let (_, request) = team::join_request(&carol.me, &code, T0).unwrap();
    assert!(matches!(
        team::accept_join(&alice.store, &alice.me, &request, T0),
        Err(TeamError::Forked(_))
    ));
    assert_eq!(alice.chain(&team).head(), &ours);
    assert_eq!(bob.chain(&team).head(), &theirs);

    // Alice, an owner of version 1, continues Bob's side and takes Dave in as well.
    let mut union = theirs.manifest.members.clone();
    union.push(member_of(&dave.me, TeamRole::Member));
    let resolution = successor(&theirs, union, Some((&alice, false)), &[&alice.me]);
    assert_eq!(
        receive_one(&alice, &team, resolution.clone()).unwrap(),
        Applied::Resolved
    );
    assert_eq!(
        receive_one(&bob, &team, resolution.clone()).unwrap(),
        Applied::Resolved
    );
    let results =
        team::receive(&dave.store, &team, vec![theirs.clone(), resolution.clone()]).unwrap();
    assert!(
        matches!(results[0], Err(ManifestError::Forked { .. })),
        "{results:?}"
    );
    assert_eq!(results[1], Ok(Applied::Resolved));
    for member in [&alice, &bob, &dave] {
        let chain = member.chain(&team);
        assert!(chain.fork().is_none());
        assert_eq!(chain.versions()[2], theirs);
        assert_eq!(chain.head(), &resolution);
    }
    // The team works again: all four open what is sealed now, and changes go through.
    let sealed = dave.seal(&team, b"after the fork");
    sync(&bob, &erin, &team);
    for member in [&alice, &bob, &dave, &erin] {
        assert_eq!(member.open(&team, &sealed).unwrap(), b"after the fork");
    }
    let mut chain = alice.chain(&team);
    team::set_role(
        &alice.store,
        &alice.me,
        &mut chain,
        &erin.id(),
        TeamRole::Admin,
        T0 + 2,
    )
    .unwrap();
}

#[test]
fn regression_resolving_a_fork_toward_the_shorter_side_leaves_a_loadable_store() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let dave = user("dave", None);
    let erin = user("erin", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Admin)]);
    // Alice's side grows to version 4; Bob's side is one version 2.
    let code = invite(&alice, &team, options(1));
    join(&alice, &dave, &code);
    let mut chain = alice.chain(&team);
    team::set_role(
        &alice.store,
        &alice.me,
        &mut chain,
        &dave.id(),
        TeamRole::Admin,
        T0 + 1,
    )
    .unwrap();
    team::set_role(
        &alice.store,
        &alice.me,
        &mut chain,
        &dave.id(),
        TeamRole::Member,
        T0 + 2,
    )
    .unwrap();
    let code = invite(&bob, &team, options(1));
    join(&bob, &erin, &code);
    let theirs = bob.chain(&team).head().clone();
    assert!(matches!(
        receive_one(&alice, &team, theirs.clone()),
        Err(ManifestError::Forked { base: 1, .. })
    ));
    let mut union = theirs.manifest.members.clone();
    union.push(member_of(&dave.me, TeamRole::Member));
    let resolution = successor(&theirs, union, Some((&alice, false)), &[&alice.me]);
    assert_eq!(
        receive_one(&alice, &team, resolution.clone()).unwrap(),
        Applied::Resolved
    );
    let loaded = team::load(&alice.store, &team);
    assert!(loaded.is_ok(), "{:?}", loaded.err().map(|e| e.to_string()));
    assert_eq!(loaded.unwrap().head(), &resolution);
}

#[test]
fn tampered_bytes_are_refused_naming_a_bad_signature() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    let v1 = alice.chain(&team).versions()[1].clone();
    let bytes = v1.encode();
    assert_eq!(SignedManifest::decode(&bytes).unwrap(), v1);

    // Rename the team in transit.
    let at = bytes.windows(5).position(|w| w == b"Paper").unwrap();
    let mut renamed = bytes.clone();
    renamed[at] = b'p';
    let err = SignedManifest::decode(&renamed).unwrap_err();
    assert!(
        matches!(err, ManifestError::BadSignature { signer } if signer == alice.id()),
        "{err}"
    );
    assert_names(
        &err,
        &[
            "signature by",
            &alice.id().to_hex(),
            "does not verify",
            "tampered bytes",
        ],
    );
    // Change the signature itself.
    let mut resigned = bytes.clone();
    *resigned.last_mut().unwrap() ^= 0x01;
    assert!(matches!(
        SignedManifest::decode(&resigned),
        Err(ManifestError::BadSignature { .. })
    ));
    // Swap who the signature claims to be by.
    let mut signer = bytes.clone();
    let sig_at = bytes.len() - 96;
    signer[sig_at..sig_at + 32].copy_from_slice(bob.id().as_bytes());
    assert!(matches!(
        SignedManifest::decode(&signer),
        Err(ManifestError::BadSignature { .. })
    ));
    // Any single flipped bit anywhere is refused, and so is any truncation or extra byte.
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1 << bit;
            assert!(
                SignedManifest::decode(&flipped).is_err(),
                "bit {bit} of byte {i} flipped and still accepted"
            );
        }
    }
    for cut in 0..bytes.len() {
        assert!(
            SignedManifest::decode(&bytes[..cut]).is_err(),
            "truncated to {cut} and accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(SignedManifest::decode(&longer).is_err());
    // Stripping the signatures is not a way around them.
    let bare = SignedManifest {
        manifest: v1.manifest.clone(),
        signatures: vec![],
    }
    .encode();
    assert_names(
        &SignedManifest::decode(&bare).unwrap_err(),
        &["carries no signature"],
    );

    // Bytes damaged in the store are refused when the team is loaded.
    let key = format!("team/{}/v/{:020}", team.to_hex(), 1).into_bytes();
    let stored = alice.store.storage().get_ref(&key).unwrap().unwrap();
    assert_eq!(stored, bytes);
    alice
        .store
        .storage()
        .update_refs(&[RefUpdate {
            key,
            expected: Some(stored),
            new: Some(renamed),
        }])
        .unwrap();
    let err = team::load(&alice.store, &team).err().unwrap();
    assert!(
        matches!(err, TeamError::Manifest(ManifestError::BadSignature { .. })),
        "{err}"
    );
    assert_names(&err, &["does not verify"]);
}

#[test]
fn a_manifest_of_another_team_presented_as_this_one_is_refused() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    let other = team::create(&alice.store, &alice.me, "Paper Compute", T0)
        .unwrap()
        .team_id();
    assert_ne!(
        team, other,
        "two teams of the same name and owner are still two teams"
    );
    let code = invite(&alice, &other, options(1));
    join(&alice, &bob, &code);
    let foreign = alice.chain(&other).head().clone();
    let head = alice.chain(&team).head().clone();
    assert_eq!(
        foreign.manifest.version, head.manifest.version,
        "same version numbers"
    );

    for wrong in [foreign.clone(), alice.chain(&other).versions()[0].clone()] {
        let err = receive_one(&alice, &team, wrong).unwrap_err();
        assert!(
            matches!(err, ManifestError::WrongTeam { expected, found } if expected == team && found == other),
            "{err}"
        );
        assert_names(
            &err,
            &[
                &format!("belongs to team {other}"),
                &format!("not to team {team}"),
            ],
        );
    }
    let mut state = alice.chain(&team);
    assert!(matches!(
        state.apply(foreign.clone()),
        Err(ManifestError::WrongTeam { .. })
    ));
    assert_eq!(alice.chain(&team).head(), &head);

    // A join answer carrying another team than the invite's is refused by the joiner.
    let carol = user("carol", None);
    let answer = JoinResponse::Accepted {
        manifests: alice
            .chain(&other)
            .versions()
            .iter()
            .map(|v| v.encode())
            .collect(),
    };
    let err = team::complete_join(&carol.store, &carol.me, &team, answer)
        .err()
        .unwrap();
    assert!(
        matches!(err, TeamError::Manifest(ManifestError::WrongTeam { .. })),
        "{err}"
    );
    assert!(
        team::list(&carol.store).unwrap().is_empty(),
        "nothing was stored"
    );
}

#[test]
fn regression_a_second_version_zero_is_refused_without_a_panic() {
    let alice = user("alice", None);
    let team = team_with(&alice, &[]);
    let genesis = alice.chain(&team).versions()[0].clone();
    let manifest = Manifest {
        team: Some(team),
        name: "Renamed".into(),
        ..genesis.manifest.clone()
    };
    let fake = SignedManifest {
        signatures: vec![manifest.sign(alice.me.signing_key())],
        manifest,
    };
    let mut chain = alice.chain(&team);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| chain.apply(fake)));
    assert!(
        matches!(result, Ok(Err(_))),
        "apply panicked instead of refusing"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Invites (issue point 3)
// ---------------------------------------------------------------------------------------------

#[test]
fn invite_secrets_are_stored_only_as_hashes() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let team = team_with(&alice, &[]);
    let (code, record) =
        team::invite(&alice.store, &alice.me, &alice.chain(&team), options(2), T0).unwrap();
    let secret = team::code_to_invite(&code).unwrap().secret;
    assert_eq!(record.secret_hash, join::secret_hash(&secret));
    assert_ne!(record.secret_hash, secret);
    let body = code.strip_prefix("tapes-invite1-").unwrap();

    let check = |what: &str, owner: &User| {
        let needles: Vec<Vec<u8>> = vec![
            secret.to_vec(),
            hex::encode(secret).into_bytes(),
            code.clone().into_bytes(),
            body.as_bytes()[..40].to_vec(),
        ];
        let mut refs = 0;
        for entry in owner.store.storage().refs(b"") {
            let (key, value) = entry.unwrap();
            refs += 1;
            for needle in &needles {
                assert!(
                    !contains(&value, needle),
                    "{what}: ref {} holds the invite secret",
                    String::from_utf8_lossy(&key)
                );
                assert!(
                    !contains(&key, needle),
                    "{what}: a ref key holds the invite secret"
                );
            }
        }
        assert!(refs > 0);
        owner.store.storage().flush().unwrap();
        for (path, bytes) in files_under(owner.home.root()) {
            for needle in &needles {
                assert!(
                    !contains(&bytes, needle),
                    "{what}: {} holds the invite secret",
                    path.display()
                );
            }
        }
    };
    check("after inviting", &alice);
    assert_eq!(
        team::invites(&alice.store, &team).unwrap(),
        vec![record.clone()]
    );
    join(&alice, &bob, &code);
    check("after a join", &alice);
    check("the joiner's store", &bob);
    let records = team::invites(&alice.store, &team).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].uses, 1);
}

#[test]
fn an_expired_invite_is_refused_and_the_joiner_is_told() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let carol = user("carol", None);
    let team = team_with(&alice, &[]);
    let code = invite(
        &alice,
        &team,
        InviteOptions {
            expires_ms: Some(T0 + HOUR),
            ..options(5)
        },
    );
    // One millisecond before the end it works; at the end it no longer does.
    let (invite, request) = team::join_request(&bob.me, &code, T0 + HOUR - 1).unwrap();
    let answer = team::accept_join(&alice.store, &alice.me, &request, T0 + HOUR - 1).unwrap();
    team::complete_join(&bob.store, &bob.me, &invite.team, answer).unwrap();

    let answer = ask(&alice, &carol, &code, T0 + HOUR);
    assert_eq!(answer, JoinResponse::Refused(JoinRefusal::Expired));
    let err = team::complete_join(&carol.store, &carol.me, &team, answer)
        .err()
        .unwrap();
    assert!(
        matches!(err, TeamError::Refused(JoinRefusal::Expired)),
        "{err}"
    );
    assert_names(
        &err,
        &[
            "join refused",
            "invite code has expired",
            "ask for a new one",
        ],
    );
    assert!(team::list(&carol.store).unwrap().is_empty());
    assert!(alice
        .chain(&team)
        .head()
        .manifest
        .member(&carol.id())
        .is_none());
    assert_eq!(
        team::invites(&alice.store, &team).unwrap()[0].uses,
        1,
        "a refusal uses nothing up"
    );
}

#[test]
fn an_invite_admits_at_most_its_number_of_uses() {
    let alice = user("alice", None);
    let users: Vec<User> = ["bob", "carol", "dave"]
        .iter()
        .map(|n| user(n, None))
        .collect();
    let team = team_with(&alice, &[]);
    let code = invite(&alice, &team, options(2));
    join(&alice, &users[0], &code);
    join(&alice, &users[1], &code);
    let answer = ask(&alice, &users[2], &code, T0 + 1);
    assert_eq!(refusal(answer.clone()), JoinRefusal::Spent);
    let err = team::complete_join(&users[2].store, &users[2].me, &team, answer)
        .err()
        .unwrap();
    assert_names(
        &err,
        &[
            "join refused",
            "used as many times as it allows",
            "ask for a new one",
        ],
    );
    assert_eq!(alice.chain(&team).head().manifest.members.len(), 3);
    let record = &team::invites(&alice.store, &team).unwrap()[0];
    assert_eq!((record.uses, record.max_uses), (2, 2));
    // Zero uses is not "unlimited".
    let none = team::invite(&alice.store, &alice.me, &alice.chain(&team), options(0), T0)
        .unwrap()
        .1;
    assert_eq!(none.max_uses, 1);
}

#[test]
fn an_invite_for_an_email_admits_only_that_email() {
    let alice = user("alice", None);
    let bob = user("bob", Some("bob@example.com"));
    let nobody = user("nobody", None);
    let carol = user("carol", Some("Carol@Example.com"));
    let team = team_with(&alice, &[]);
    let code = invite(
        &alice,
        &team,
        InviteOptions {
            email: Some("carol@example.com".into()),
            role: TeamRole::Admin,
            ..options(1)
        },
    );
    for wrong in [&bob, &nobody] {
        let reason = refusal(ask(&alice, wrong, &code, T0 + 1));
        assert_eq!(
            reason,
            JoinRefusal::EmailMismatch {
                required: "carol@example.com".into()
            }
        );
        assert_names(
            &reason,
            &[
                "this invite code is for carol@example.com",
                "tapes init --email",
            ],
        );
    }
    // A different capitalisation of the right address is the right address.
    let chain = join(&alice, &carol, &code);
    let entry = chain.head().manifest.member(&carol.id()).unwrap();
    assert_eq!(entry.role, TeamRole::Admin, "the invite decides the role");
    assert_eq!(entry.email.as_deref(), Some("Carol@Example.com"));
    assert_eq!(
        team::invites(&alice.store, &team).unwrap()[0].uses,
        1,
        "the refusals used nothing up"
    );
}

#[test]
fn a_revoked_invite_is_refused() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let team = team_with(&alice, &[]);
    let code = invite(&alice, &team, options(3));
    let record = team::revoke(&alice.store, &code).unwrap();
    assert!(record.revoked);
    let answer = ask(&alice, &bob, &code, T0 + 1);
    assert_eq!(refusal(answer.clone()), JoinRefusal::Revoked);
    let err = team::complete_join(&bob.store, &bob.me, &team, answer)
        .err()
        .unwrap();
    assert_names(
        &err,
        &[
            "join refused",
            "invite code was revoked",
            "ask for a new one",
        ],
    );

    // By the short id `tapes team invites` shows, too.
    let (code, record) =
        team::invite(&alice.store, &alice.me, &alice.chain(&team), options(1), T0).unwrap();
    assert!(team::revoke(&alice.store, &record.id()).unwrap().revoked);
    assert_eq!(
        refusal(ask(&alice, &bob, &code, T0 + 1)),
        JoinRefusal::Revoked
    );
    let listed = team::invites(&alice.store, &team).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|r| r.revoked && r.uses == 0));
    // Something that matches no invite says so.
    let err = team::revoke(&alice.store, "00000000ffff").err().unwrap();
    assert!(matches!(err, TeamError::NoSuchInvite(_)), "{err}");
    assert!(alice
        .chain(&team)
        .head()
        .manifest
        .member(&bob.id())
        .is_none());
}

#[test]
fn regression_revoking_an_unknown_code_does_not_print_its_secret() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let team = team_with(&alice, &[]);
    let code = invite(&alice, &team, options(1));
    let err = team::revoke(&bob.store, &code).err().unwrap();
    assert!(matches!(err, TeamError::NoSuchInvite(_)), "{err}");
    let body = code.strip_prefix("tapes-invite1-").unwrap();
    assert!(
        !err.to_string().contains(body),
        "the error prints the invite secret: {err}"
    );
}

#[test]
fn only_owners_and_admins_invite_and_a_demoted_inviter_cannot_admit() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let carol = user("carol", None);
    let dave = user("dave", None);
    let team = team_with(
        &alice,
        &[(&bob, TeamRole::Member), (&carol, TeamRole::Admin)],
    );

    let err = team::invite(&bob.store, &bob.me, &bob.chain(&team), options(1), T0)
        .err()
        .unwrap();
    assert!(matches!(err, TeamError::NotAllowed { .. }), "{err}");
    assert_names(&err, &["only an owner or admin can invite"]);
    assert!(team::invites(&bob.store, &team).unwrap().is_empty());
    // Nobody invites owners; an admin may invite admins.
    let err = team::invite(
        &alice.store,
        &alice.me,
        &alice.chain(&team),
        InviteOptions {
            role: TeamRole::Owner,
            ..options(1)
        },
        T0,
    )
    .err()
    .unwrap();
    assert!(matches!(err, TeamError::NotAllowed { .. }), "{err}");
    let code = invite(&carol, &team, options(1));

    // Carol is demoted before Dave asks: her invite no longer admits anyone.
    let mut chain = alice.chain(&team);
    team::set_role(
        &alice.store,
        &alice.me,
        &mut chain,
        &carol.id(),
        TeamRole::Member,
        T0 + 1,
    )
    .unwrap();
    sync(&alice, &carol, &team);
    let reason = refusal(ask(&carol, &dave, &code, T0 + 2));
    assert!(matches!(reason, JoinRefusal::Unauthorized(_)), "{reason}");
    assert_names(&reason, &["can no longer add members"]);
}

#[test]
fn join_requests_are_bound_to_their_sender_and_team() {
    let alice = user("alice", None);
    let bob = user("bob", None);
    let mallory = user("mallory", None);
    let team = team_with(&alice, &[]);
    let code = invite(&alice, &team, options(2));

    // Mallory intercepts Bob's request and puts herself in it: the signature no longer holds.
    let (_, request) = team::join_request(&bob.me, &code, T0).unwrap();
    let mut stolen = request.clone();
    stolen.body.member = member_of(&mallory.me, TeamRole::Member);
    let reason = refusal(team::accept_join(&alice.store, &alice.me, &stolen, T0).unwrap());
    assert_eq!(reason, JoinRefusal::BadSignature);
    // Re-signing it as herself with a made-up secret: not an invite the inviter knows.
    let mut guessed = team::code_to_invite(&code).unwrap();
    guessed.secret[0] ^= 1;
    let reason = refusal(ask(&alice, &mallory, &team::invite_to_code(&guessed), T0));
    assert_eq!(reason, JoinRefusal::UnknownInvite);
    // The right secret presented for another team is not known either.
    let mut elsewhere = team::code_to_invite(&code).unwrap();
    elsewhere.team = TeamId([9; 32]);
    assert_eq!(
        refusal(ask(&alice, &mallory, &team::invite_to_code(&elsewhere), T0)),
        JoinRefusal::UnknownInvite
    );
    // The real request works once; asking again as a member is answered as such.
    let answer = team::accept_join(&alice.store, &alice.me, &request, T0).unwrap();
    team::complete_join(&bob.store, &bob.me, &team, answer).unwrap();
    let again = team::accept_join(&alice.store, &alice.me, &request, T0).unwrap();
    assert_eq!(refusal(again), JoinRefusal::AlreadyMember);
    assert_eq!(alice.chain(&team).head().manifest.members.len(), 2);
    assert_eq!(team::invites(&alice.store, &team).unwrap()[0].uses, 1);
    // Garbage is not a code.
    for bad in ["hello", "tapes-invite1-!!!", "tapes-invite1-AAAA"] {
        let err = team::join_request(&bob.me, bad, T0).err().unwrap();
        assert!(matches!(err, TeamError::BadCode(_)), "{err}");
        assert_names(&err, &["this is not an invite code"]);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Secrets (issue point 6)
// ---------------------------------------------------------------------------------------------

#[test]
fn secrets_live_only_in_private_files_and_never_in_stores_or_errors() {
    let alice = user("alice", Some("alice@example.com"));
    let bob = user("bob", None);
    let carol = user("carol", None);
    let team = team_with(&alice, &[(&bob, TeamRole::Member)]);
    let code = invite(&alice, &team, options(1));
    let invite_body = code.strip_prefix("tapes-invite1-").unwrap().to_string();
    let mut secrets: Vec<String> = [&alice, &bob, &carol]
        .iter()
        .flat_map(|u| u.secrets())
        .collect();
    secrets.push(invite_body);
    secrets.push(hex::encode(team::code_to_invite(&code).unwrap().secret));

    #[cfg(unix)]
    for u in [&alice, &bob, &carol] {
        use std::os::unix::fs::PermissionsExt;
        for file in ["node.key", "age.key"] {
            let mode = std::fs::metadata(u.home.identity_dir().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let mode = std::fs::metadata(u.home.root())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the home directory is private");
    }

    // Team keys exist in plain only in memory: no store holds an age secret key or an
    // identity secret, in any ref or any file.
    let mut chain = alice.chain(&team);
    team::remove(&alice.store, &alice.me, &mut chain, &bob.id(), T0 + 1).unwrap();
    for u in [&alice, &bob] {
        u.store.storage().flush().unwrap();
        for entry in u.store.storage().refs(b"") {
            let (_, value) = entry.unwrap();
            assert!(
                !contains(&value, b"AGE-SECRET-KEY"),
                "a ref holds an age secret key in plain"
            );
        }
        for (path, bytes) in files_under(&u.home.store_dir()) {
            assert!(
                !contains(&bytes, b"AGE-SECRET-KEY"),
                "{} holds an age secret key in plain",
                path.display()
            );
            for secret in &secrets {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{} holds a secret",
                    path.display()
                );
            }
        }
    }

    // Every error a user can meet along the way: none carries a secret.
    let mut texts = Vec::new();
    let mut push =
        |e: &dyn std::fmt::Debug, d: &dyn std::fmt::Display| texts.push(format!("{d} / {e:?}"));
    let e = team::join_request(&carol.me, "tapes-invite1-AAAA", T0)
        .err()
        .unwrap();
    push(&e, &e);
    let answer = ask(&alice, &carol, &code, T0 + 2 * HOUR);
    let e = team::complete_join(&carol.store, &carol.me, &team, answer)
        .err()
        .unwrap();
    push(&e, &e);
    let (_, request) = team::join_request(&carol.me, &code, T0).unwrap();
    let mut bad = request.clone();
    bad.signature[0] ^= 1;
    let reason = refusal(team::accept_join(&alice.store, &alice.me, &bad, T0).unwrap());
    push(&reason, &reason);
    let e = team::invite(&bob.store, &bob.me, &bob.chain(&team), options(1), T0)
        .err()
        .unwrap();
    push(&e, &e);
    let e = team::leave(&alice.store, &alice.me, &mut alice.chain(&team), T0 + 3)
        .err()
        .unwrap();
    push(&e, &e);
    let after = alice.seal(&team, b"later");
    let e = bob.open(&team, &after).err().unwrap();
    push(&e, &e);
    let e = KeyRing::unwrap_from(&alice.chain(&team).head().manifest, carol.me.age_identity())
        .err()
        .unwrap();
    push(&e, &e);
    let e = team::revoke(&carol.store, "abcdef").err().unwrap();
    push(&e, &e);
    let forged = successor(
        alice.chain(&team).head(),
        vec![member_of(&carol.me, TeamRole::Owner)],
        None,
        &[&carol.me],
    );
    let e = receive_one(&alice, &team, forged).unwrap_err();
    push(&e, &e);
    let mut tampered = alice.chain(&team).head().encode();
    tampered[30] ^= 1;
    let e = SignedManifest::decode(&tampered).unwrap_err();
    push(&e, &e);
    push(&alice.me, &alice.me.node_id_hex());
    assert!(texts.len() >= 11);
    for text in &texts {
        assert_no_secret(text, &secrets);
    }
}
