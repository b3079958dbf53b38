//! The relay with real iroh endpoints on 127.0.0.1 (relays and discovery off): members sync
//! through it while the author is away, it never holds plaintext of team content, it refuses
//! non-members, join requests wait there, public shares have a web page that 404s after
//! unshare, quotas, compare-and-swap between two machines of one owner, 50 concurrent
//! depositors, and a relay killed with SIGKILL mid-deposit that restarts and converges.
//! A refused item refuses that item only (SPEC.md §16.3, §16.4): the rest of the sync goes on,
//! unshares and expiries reach the public page even past a quota, and only what is still
//! pending is sent again.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use iroh::Endpoint;
use tapes::identity::Identity;
use tapes::import::ingest::{ingest, Incoming};
use tapes::peer::addr::PeerAddr;
use tapes::peer::client::{connect, PeerConn};
use tapes::peer::relay_client::SyncItem;
use tapes::peer::PeerError;
use tapes::protocol::sync::Scope;
use tapes::protocol::{SessionId, TeamId};
use tapes::relay::run::{start, RelayOptions, RunningRelay};
use tapes::session::sample::{self, Shape};
use tapes::share::{self, Audience, SecretPolicy, ShareOptions};
use tapes::team::{self, InviteOptions};
use tapes::testing::{self, Node};

/// A member's machine for the relay tests: the shared harness node ([`Node`]: a store, an
/// identity, a loopback endpoint) with the relay steps these tests repeat, unwrapped.
pub(crate) struct Member(Node);

impl std::ops::Deref for Member {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

impl Member {
    pub(crate) async fn new(name: &str) -> Member {
        Member(Node::new(name).await.unwrap())
    }

    pub(crate) async fn with_identity(identity: Identity) -> Member {
        Member(
            Node::with_identity(identity, Arc::new(|_| {}))
                .await
                .unwrap(),
        )
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.0.router.endpoint()
    }

    pub(crate) async fn relay(&self, ticket: &PeerAddr) -> Result<PeerConn, PeerError> {
        Ok(connect(self.endpoint(), ticket, "relay")
            .await?
            .into_relay())
    }

    /// A session whose messages carry `texts`.
    pub(crate) fn session_with(&self, seed: u64, texts: &[&str]) -> SessionId {
        self.0.session_with(seed, texts).unwrap()
    }

    pub(crate) fn share(&self, id: &SessionId, audience: Audience) {
        self.0.share(id, audience, SecretPolicy::Allow).unwrap()
    }

    pub(crate) fn has(&self, id: &SessionId) -> bool {
        self.0.has(id).unwrap()
    }

    pub(crate) fn fsck_clean(&self) {
        self.0.fsck_clean().unwrap()
    }

    pub(crate) async fn sync(
        &self,
        ticket: &PeerAddr,
    ) -> tapes::peer::relay_client::RelaySyncReport {
        self.0.relay_sync(ticket).await.unwrap()
    }
}

pub(crate) fn options() -> RelayOptions {
    RelayOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        http: Some("127.0.0.1:0".parse().unwrap()),
        network: tapes::peer::network::NetworkMode::Local,
        public_url: None,
    }
}

async fn start_relay(data: &Path) -> RunningRelay {
    start(data, &options(), Arc::new(|_| {})).await.unwrap()
}

/// A relay in `data` with `config` as its relay.toml.
async fn relay_with(data: &Path, config: &str) -> RunningRelay {
    std::fs::write(data.join("relay.toml"), config).unwrap();
    start_relay(data).await
}

/// `owner` creates team `name` and registers it on the relay.
pub(crate) async fn team_on_relay(owner: &Member, ticket: &PeerAddr, name: &str) -> TeamId {
    let team = team::create(&owner.store, &owner.identity, name, tapes::now_ms())
        .unwrap()
        .team_id();
    owner
        .relay(ticket)
        .await
        .unwrap()
        .register(&owner.store, &team)
        .await
        .unwrap();
    team
}

/// Another machine of `member`'s: the same keys, an empty store.
pub(crate) async fn second_machine(member: &Member) -> Member {
    Member::with_identity(Identity::from_parts(
        member.identity.signing_key().clone(),
        member.identity.age_identity().clone(),
        member.identity.profile.clone(),
    ))
    .await
}

/// Adds `joiner` to `owner`'s team without the network (invite, request, accept, complete).
pub(crate) fn add_member(owner: &Member, joiner: &Member, team: &TeamId) {
    testing::add_member(
        &owner.store,
        &owner.identity,
        &joiner.store,
        &joiner.identity,
        team,
    )
    .unwrap();
}

fn invite_options() -> InviteOptions {
    InviteOptions {
        expires_ms: None,
        max_uses: 1,
        email: None,
        role: tapes::protocol::manifest::TeamRole::Member,
        addrs: Vec::new(),
    }
}

/// Every file under `dir` that contains `needle`.
pub(crate) fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    files_with_bytes(dir, needle.as_bytes())
}

fn files_with_bytes(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(entry.path().display().to_string());
        }
    }
    hits
}

/// A plain HTTP GET; returns the status code and body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

const SECRET_TEAM_TEXT: &str = "zebra-marmalade-protocol-7781";
const SECOND_TEAM_TEXT: &str = "quokka-lighthouse-ledger-0042";
const PUBLIC_TEXT: &str = "public-heron-notes-5150";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_sync_through_a_relay_that_holds_no_plaintext() {
    let data = tempfile::tempdir().unwrap();
    let relay = start_relay(data.path()).await;
    let ticket = relay.ticket.clone();
    let http = relay.http.unwrap();

    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    add_member(&alice, &bob, &team);

    // Bob is a member but not an admin: he cannot register the team.
    let conn = bob.relay(&ticket).await.unwrap();
    let refused = conn.register(&bob.store, &team).await.unwrap_err();
    assert!(refused.to_string().contains("only an admin"), "{refused}");
    let conn = alice.relay(&ticket).await.unwrap();
    conn.register(&alice.store, &team).await.unwrap();

    let team_session = alice.session_with(1, &[SECRET_TEAM_TEXT, SECOND_TEAM_TEXT]);
    let public_session = alice.session_with(2, &[PUBLIC_TEXT]);
    let private_session = alice.session_with(3, &["never leaves alice"]);
    alice.share(&team_session, Audience::Team(team));
    alice.share(&public_session, Audience::Public);
    let report = alice.sync(&ticket).await;
    assert_eq!(report.deposited.len(), 2, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(report
        .deposited
        .iter()
        .any(|(id, scope, _)| *id == team_session && *scope == Scope::Team(team)));

    // Alice goes away; bob gets both from the relay, byte-equal, and never the private one.
    alice.endpoint().close().await;
    let report = bob.sync(&ticket).await;
    assert_eq!(report.fetched.new_sessions, 2, "{report:?}");
    assert!(bob.has(&team_session) && bob.has(&public_session));
    assert!(!bob.has(&private_session));
    assert_eq!(
        bob.store.session_raw(&team_session).unwrap(),
        alice.store.session_raw(&team_session).unwrap()
    );
    let chain = bob
        .store
        .chain(&bob.store.session(&team_session).unwrap().unwrap().head)
        .unwrap();
    assert!(format!("{chain:?}").contains(SECRET_TEAM_TEXT));
    bob.fsck_clean();

    // A second sync is empty.
    let again = bob.sync(&ticket).await;
    assert!(again.fetched.is_empty(), "{:?}", again.fetched);
    assert!(again.deposited.is_empty());

    // The public page shows the public share; a team share is never served there.
    let (status, body) = http_get(http, &format!("/s/{}", public_session.to_hex()));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(PUBLIC_TEXT));
    let (status, _) = http_get(http, &format!("/s/{}", team_session.to_hex()));
    assert_eq!(status, 404);
    let (status, _) = http_get(http, "/s/not-a-session");
    assert_eq!(status, 404);

    // No plaintext of team content anywhere under the relay's data directory, while running
    // and after it stops (sled flushes on close).
    relay.shutdown().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for needle in [SECRET_TEAM_TEXT, SECOND_TEAM_TEXT] {
        assert_eq!(files_containing(data.path(), needle), Vec::<String>::new());
    }
    // (The public share is public: the relay keeps it readable for its page.)
    assert!(!files_containing(data.path(), PUBLIC_TEXT).is_empty());

    // Restarted on the same directory, the relay has everything.
    let relay = start_relay(data.path()).await;
    let carol = Member::new("carol").await;
    add_member_via_bob_is_impossible(&bob);
    let conn = carol.relay(&relay.ticket).await.unwrap();
    let report = conn.fetch(&carol.store, &carol.identity).await.unwrap();
    // Carol is in no team: only the public share.
    assert_eq!(report.new_sessions, 1, "{report:?}");
    assert!(carol.has(&public_session) && !carol.has(&team_session));
    // And the relay takes nothing from her for the team: she is not in its verified manifest.
    let deposit = tapes::protocol::sync::Deposit {
        scope: Scope::Team(team),
        session: SessionId([7; 16]),
        expected: None,
        head: tapes::protocol::NodeId([1; 32]),
        ids: vec![tapes::protocol::NodeId([1; 32])],
        entry: Vec::new(),
        session_item: tapes::protocol::NodeId([2; 32]),
        share: Vec::new(),
        share_item: tapes::protocol::NodeId([3; 32]),
        expires_ms: None,
        revoked: false,
    };
    let refused = relay
        .state
        .begin_deposit(&carol.id(), deposit)
        .err()
        .expect("a non-member's deposit is refused");
    assert!(
        refused.to_string().contains("not a current member"),
        "{refused}"
    );
    relay.shutdown().await;
}

/// Bob is a plain member: he cannot admit anyone (the relay path goes through an admin).
fn add_member_via_bob_is_impossible(bob: &Member) {
    let chain = team::list(&bob.store).unwrap().remove(0);
    assert!(team::invite(
        &bob.store,
        &bob.identity,
        &chain,
        invite_options(),
        tapes::now_ms()
    )
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshare_and_non_members_and_join_requests_that_wait_at_the_relay() {
    let data = tempfile::tempdir().unwrap();
    let relay = start_relay(data.path()).await;
    let ticket = relay.ticket.clone();
    let http = relay.http.unwrap();
    let alice = Member::new("alice").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    let public_session = alice.session_with(4, &[PUBLIC_TEXT]);
    let team_session = alice.session_with(5, &[SECRET_TEAM_TEXT]);
    alice.share(&public_session, Audience::Public);
    alice.share(&team_session, Audience::Team(team));
    alice.sync(&ticket).await;
    assert_eq!(
        http_get(http, &format!("/s/{}", public_session.to_hex())).0,
        200
    );

    // Unshare: the page 404s from the next sync on.
    share::unshare(
        &alice.store,
        &alice.identity,
        &public_session,
        Some(Audience::Public),
        tapes::now_ms(),
    )
    .unwrap();
    let report = alice.sync(&ticket).await;
    assert_eq!(report.deposited.len(), 1, "{report:?}");
    assert_eq!(
        http_get(http, &format!("/s/{}", public_session.to_hex())).0,
        404
    );

    // Expiry: a share that expires 404s from then on, without another sync.
    let brief = alice.session_with(14, &["here for a moment"]);
    share::share(
        &alice.store,
        &alice.identity,
        &brief,
        &ShareOptions {
            audience: Audience::Public,
            title: None,
            note: None,
            expires_ms: Some(tapes::now_ms() + 1500),
            secrets: SecretPolicy::Allow,
        },
        tapes::now_ms(),
    )
    .unwrap();
    alice.sync(&ticket).await;
    assert_eq!(http_get(http, &format!("/s/{}", brief.to_hex())).0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(http_get(http, &format!("/s/{}", brief.to_hex())).0, 404);

    // Dave asks to join while alice is offline: the request waits at the relay.
    let chain = team::load(&alice.store, &team).unwrap();
    let mut options = invite_options();
    options.addrs = team::relay_hints(&alice.identity, &ticket.ticket());
    let (code, _) = team::invite(
        &alice.store,
        &alice.identity,
        &chain,
        options,
        tapes::now_ms(),
    )
    .unwrap();
    let dave = Member::new("dave").await;
    let (invite, request) = team::join_request(&dave.identity, &code, tapes::now_ms()).unwrap();
    let conn = dave.relay(&ticket).await.unwrap();
    let inviter = team::inviter_recipient(&invite).unwrap();
    assert!(conn
        .join_at_relay(&request, &inviter)
        .await
        .unwrap()
        .is_none());
    // The request waits sealed: the relay never holds the invite secret it carries.
    assert!(files_with_bytes(data.path(), &invite.secret).is_empty());
    // Before alice syncs, dave is nobody to the relay.
    let report = conn.fetch(&dave.store, &dave.identity).await.unwrap();
    assert!(!dave.has(&team_session), "{report:?}");

    // Alice's next sync accepts it and tells the relay about the new member.
    let report = alice.sync(&ticket).await;
    assert_eq!(report.joins_answered.len(), 1, "{report:?}");
    assert!(report.joins_answered[0].2);
    let answer = conn
        .join_at_relay(&request, &inviter)
        .await
        .unwrap()
        .unwrap();
    team::complete_join(&dave.store, &dave.identity, &invite.team, answer).unwrap();
    let report = dave.sync(&ticket).await;
    assert!(dave.has(&team_session), "{report:?}");
    dave.fsck_clean();

    // After alice removes dave (and syncs), a new team share does not reach him.
    let mut chain = team::load(&alice.store, &team).unwrap();
    team::remove(
        &alice.store,
        &alice.identity,
        &mut chain,
        &dave.id(),
        tapes::now_ms(),
    )
    .unwrap();
    let later = alice.session_with(6, &["after dave left"]);
    alice.share(&later, Audience::Team(team));
    alice.sync(&ticket).await;
    dave.sync(&ticket).await;
    assert!(!dave.has(&later));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_on_two_machines_conflicts_and_quotas_refuse_clearly() {
    let data = tempfile::tempdir().unwrap();
    let relay = relay_with(data.path(), "[default]\nsessions_per_month = 2\n").await;
    let ticket = relay.ticket.clone();
    let laptop = Member::new("alice").await;
    let team = team_on_relay(&laptop, &ticket, "core").await;
    let id = laptop.session_with(7, &["base"]);
    laptop.share(&id, Audience::Team(team));
    laptop.sync(&ticket).await;

    // The same identity on a desktop, with the same base; both go on from it.
    let desktop = second_machine(&laptop).await;
    // (A fetch never replaces one's own sessions, so the desktop has the base from the same
    // import: the sample and its continuation are deterministic.)
    team::store_chain(&desktop.store, &team::load(&laptop.store, &team).unwrap()).unwrap();
    assert_eq!(desktop.session_with(7, &["base"]), id);
    desktop.share(&id, Audience::Team(team));
    sample::continue_session(&laptop.store, &id, &["laptop's turn".into()]).unwrap();
    sample::continue_session(&desktop.store, &id, &["desktop's turn".into()]).unwrap();
    laptop.share(&id, Audience::Team(team));
    desktop.share(&id, Audience::Team(team));
    let first = laptop.sync(&ticket).await;
    assert_eq!(first.deposited.len(), 1, "{first:?}");
    let second = desktop.sync(&ticket).await;
    assert_eq!(second.failed.len(), 1, "{second:?}");
    let message = second.failed[0].2.to_string();
    assert!(
        message.contains("conflict") && message.contains("tapes branch"),
        "{message}"
    );

    // A third machine of alice's with an empty store restores her shared session from the
    // relay (the relay is where "cloud" keeps things); the other two keep their own.
    let fresh = second_machine(&laptop).await;
    team::store_chain(&fresh.store, &team::load(&laptop.store, &team).unwrap()).unwrap();
    let restored = fresh.sync(&ticket).await;
    assert_eq!(restored.fetched.new_sessions, 1, "{restored:?}");
    assert_eq!(
        fresh.store.session_raw(&id).unwrap(),
        laptop.store.session_raw(&id).unwrap()
    );
    fresh.fsck_clean();

    // Quota: two sessions this month; the third is refused with the reason.
    let two = laptop.session_with(8, &["two"]);
    let three = laptop.session_with(9, &["three"]);
    laptop.share(&two, Audience::Team(team));
    laptop.sync(&ticket).await;
    laptop.share(&three, Audience::Team(team));
    let report = laptop.sync(&ticket).await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let message = report.failed[0].2.to_string();
    assert!(
        message.contains("quota exceeded") && message.contains("sessions_per_month"),
        "{message}"
    );
    relay.shutdown().await;
}

/// The page of `session` on the relay's HTTP address: its status.
fn page(http: SocketAddr, session: &SessionId) -> u16 {
    http_get(http, &format!("/s/{}", session.to_hex())).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_team_chain_does_not_stop_deposits_or_unshares() {
    let data = tempfile::tempdir().unwrap();
    let relay = relay_with(data.path(), "[default]\nmembers = 1\n").await;
    let ticket = relay.ticket.clone();
    let http = relay.http.unwrap();
    let alice = Member::new("alice").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    let public = alice.session_with(20, &[PUBLIC_TEXT]);
    let old_team = alice.session_with(21, &["shared with the team, then not"]);
    alice.share(&public, Audience::Public);
    alice.share(&old_team, Audience::Team(team));
    let first = alice.sync(&ticket).await;
    assert_eq!(first.deposited.len(), 2, "{first:?}");
    assert_eq!(page(http, &public), 200);

    // The team grows past the relay's members quota, so the relay refuses its new manifest;
    // meanwhile alice shares a new session with the team and unshares the other two.
    let bob = Member::new("bob").await;
    add_member(&alice, &bob, &team);
    let new_team = alice.session_with(22, &["for the team, after bob joined"]);
    alice.share(&new_team, Audience::Team(team));
    for (id, audience) in [(public, Audience::Public), (old_team, Audience::Team(team))] {
        share::unshare(
            &alice.store,
            &alice.identity,
            &id,
            Some(audience),
            tapes::now_ms(),
        )
        .unwrap();
    }
    let second = alice.sync(&ticket).await;
    // The refusal is reported once, with the team and the relay's reason...
    let failures = second.failures();
    assert_eq!(failures.len(), 1, "{second:?}");
    assert_eq!(failures[0].0, SyncItem::Manifests(team));
    let message = failures[0].1.to_string();
    assert!(
        message.contains("quota exceeded") && message.contains("`members`"),
        "{message}"
    );
    // ...and everything else went on: the new deposit and both unshares.
    let mut deposited: Vec<(SessionId, Scope)> = second
        .deposited
        .iter()
        .map(|(s, sc, _)| (*s, *sc))
        .collect();
    deposited.sort();
    let mut expected = vec![
        (public, Scope::Public),
        (old_team, Scope::Team(team)),
        (new_team, Scope::Team(team)),
    ];
    expected.sort();
    assert_eq!(deposited, expected, "{second:?}");
    assert_eq!(page(http, &public), 404);
    let (held, _) = relay
        .state
        .deposited(&Scope::Team(team), &old_team)
        .unwrap()
        .unwrap();
    assert!(held.revoked);

    // The next sync sends only what is still pending: the refused chain, again refused once.
    let third = alice.sync(&ticket).await;
    assert!(third.deposited.is_empty(), "{third:?}");
    assert_eq!(third.manifests_sent, 0, "{third:?}");
    let failures = third.failures();
    assert_eq!(failures.len(), 1, "{third:?}");
    assert_eq!(failures[0].0, SyncItem::Manifests(team));
    assert_eq!(page(http, &public), 404);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_deposit_is_reported_once_and_retried_alone() {
    let data = tempfile::tempdir().unwrap();
    let relay = relay_with(data.path(), "[default]\nsessions_per_month = 1\n").await;
    let ticket = relay.ticket.clone();
    let http = relay.http.unwrap();
    let alice = Member::new("alice").await;
    let a = alice.session_with(30, &["first of two"]);
    let b = alice.session_with(31, &["second of two"]);
    alice.share(&a, Audience::Public);
    alice.share(&b, Audience::Public);
    let first = alice.sync(&ticket).await;
    assert_eq!(first.deposited.len(), 1, "{first:?}");
    assert_eq!(first.failed.len(), 1, "{first:?}");
    assert_eq!(first.failures().len(), 1, "{first:?}");
    let landed = first.deposited[0].0;
    let (refused, _, e) = &first.failed[0];
    let refused = *refused;
    assert!(
        e.to_string().contains("quota exceeded") && e.to_string().contains("sessions_per_month"),
        "{e}"
    );
    assert_eq!(page(http, &landed), 200);
    assert_eq!(page(http, &refused), 404);

    // Unsharing the one that landed reaches the page although the other is refused again.
    share::unshare(
        &alice.store,
        &alice.identity,
        &landed,
        Some(Audience::Public),
        tapes::now_ms(),
    )
    .unwrap();
    let second = alice.sync(&ticket).await;
    assert_eq!(
        second.deposited,
        vec![(landed, Scope::Public, 0)],
        "{second:?}"
    );
    assert_eq!(second.failures().len(), 1, "{second:?}");
    assert_eq!(second.failed[0].0, refused);
    assert_eq!(page(http, &landed), 404);

    // Only the refused one is still pending, and only it is tried again.
    let counts =
        tapes::peer::relay_client::counts(&alice.store, &alice.identity, &ticket.id, &[]).unwrap();
    assert_eq!((counts.synced, counts.pending_push), (1, 1), "{counts:?}");
    let third = alice.sync(&ticket).await;
    assert!(third.deposited.is_empty(), "{third:?}");
    assert_eq!(third.failures().len(), 1, "{third:?}");
    assert_eq!(third.failed[0].0, refused);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshare_and_expiry_reach_the_page_past_a_full_quota() {
    let data = tempfile::tempdir().unwrap();
    let relay = start_relay(data.path()).await;
    let alice = Member::new("alice").await;
    let unshared = alice.session_with(40, &[PUBLIC_TEXT]);
    let expiring = alice.session_with(41, &["public for a while"]);
    alice.share(&unshared, Audience::Public);
    alice.share(&expiring, Audience::Public);
    assert_eq!(alice.sync(&relay.ticket).await.deposited.len(), 2);
    let used = relay.state.usage(&Scope::Public).unwrap().bytes;
    relay.shutdown().await;

    // The operator caps public shares at what they hold now (plus a little): no session of
    // any size fits any more.
    let relay = relay_with(data.path(), &format!("[default]\nbytes = {}\n", used + 64)).await;
    let ticket = relay.ticket.clone();
    let http = relay.http.unwrap();
    assert_eq!(page(http, &unshared), 200);
    assert_eq!(page(http, &expiring), 200);
    // Both sessions grew since they were deposited; one is unshared, the other shared again
    // with an expiry that has passed; a new public share does not fit.
    let long = "a longer answer ".repeat(256);
    for id in [&unshared, &expiring] {
        sample::continue_session(&alice.store, id, std::slice::from_ref(&long)).unwrap();
    }
    share::unshare(
        &alice.store,
        &alice.identity,
        &unshared,
        Some(Audience::Public),
        tapes::now_ms(),
    )
    .unwrap();
    share::share(
        &alice.store,
        &alice.identity,
        &expiring,
        &ShareOptions {
            audience: Audience::Public,
            title: None,
            note: None,
            expires_ms: Some(tapes::now_ms() - 1000),
            secrets: SecretPolicy::Allow,
        },
        tapes::now_ms(),
    )
    .unwrap();
    let new = alice.session_with(42, &["does not fit"]);
    alice.share(&new, Audience::Public);

    let report = alice.sync(&ticket).await;
    // The revocation and the expiry travel as share records alone (no node, nothing to
    // charge); the new share is refused once, with the quota's reason.
    let mut deposited = report.deposited.clone();
    deposited.sort();
    let mut expected = vec![(unshared, Scope::Public, 0), (expiring, Scope::Public, 0)];
    expected.sort();
    assert_eq!(deposited, expected, "{report:?}");
    assert_eq!(report.failures().len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, new);
    let message = report.failed[0].2.to_string();
    assert!(
        message.contains("quota exceeded") && message.contains("`bytes`"),
        "{message}"
    );
    assert_eq!(page(http, &unshared), 404);
    assert_eq!(page(http, &expiring), 404);
    assert_eq!(page(http, &new), 404);
    // The relay kept its copy of each (head and nodes as deposited); only the share changed.
    let (held, ids) = relay
        .state
        .deposited(&Scope::Public, &unshared)
        .unwrap()
        .unwrap();
    assert!(held.revoked);
    assert_ne!(
        Some(&held.head),
        alice
            .store
            .session(&unshared)
            .unwrap()
            .map(|r| r.head)
            .as_ref()
    );
    assert_eq!(ids.last(), Some(&held.head));

    // Nothing of the two is pending any more; the refused share is, and only it is retried.
    let counts =
        tapes::peer::relay_client::counts(&alice.store, &alice.identity, &ticket.id, &[]).unwrap();
    assert_eq!((counts.synced, counts.pending_push), (2, 1), "{counts:?}");
    let again = alice.sync(&ticket).await;
    assert!(again.deposited.is_empty(), "{again:?}");
    assert_eq!(again.failures().len(), 1, "{again:?}");
    assert_eq!(again.failed[0].0, new);

    // A reader who fetches from the relay learns of the revocation too.
    let reader = Member::new("reader").await;
    let conn = reader.relay(&ticket).await.unwrap();
    conn.fetch(&reader.store, &reader.identity).await.unwrap();
    assert!(!reader.has(&unshared) && !reader.has(&expiring));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_depositors_all_land() {
    let data = tempfile::tempdir().unwrap();
    let relay = relay_with(
        data.path(),
        "[default]\nmembers = 0\nsessions_per_month = 0\n",
    )
    .await;
    let ticket = relay.ticket.clone();
    let owner = Member::new("owner").await;
    let team = team::create(&owner.store, &owner.identity, "big", tapes::now_ms())
        .unwrap()
        .team_id();
    let mut members = Vec::new();
    for i in 0..50 {
        let m = Member::new(&format!("m{i}")).await;
        add_member(&owner, &m, &team);
        members.push(m);
    }
    owner
        .relay(&ticket)
        .await
        .unwrap()
        .register(&owner.store, &team)
        .await
        .unwrap();
    // Everyone's chain must be the final one (each joined at a different version).
    let final_chain = team::load(&owner.store, &team).unwrap();
    for m in &members {
        team::store_chain(&m.store, &final_chain).unwrap();
    }
    let mut sessions = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let id = m.session_with(100 + i as u64, &[&format!("member {i}")]);
        m.share(&id, Audience::Team(team));
        sessions.push(id);
    }
    let members = Arc::new(members);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..members.len() {
        let members = members.clone();
        let ticket = ticket.clone();
        tasks.spawn(async move {
            let m = &members[i];
            m.sync(&ticket).await
        });
    }
    let mut landed = 0;
    while let Some(report) = tasks.join_next().await {
        let report = report.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        landed += report.deposited.len();
    }
    assert_eq!(landed, 50);
    let report = owner.sync(&ticket).await;
    assert_eq!(report.fetched.new_sessions, 50, "{:?}", report.fetched);
    for id in &sessions {
        assert!(owner.has(id));
    }
    owner.fsck_clean();
    relay.shutdown().await;
}

/// A `tapes relay` process, killed when dropped.
struct RelayProcess {
    child: std::process::Child,
}

impl RelayProcess {
    fn spawn(data: &Path) -> (RelayProcess, PeerAddr) {
        let ticket_file = data.join("relay-ticket");
        let _ = std::fs::remove_file(&ticket_file);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tapes"))
            .args(["relay", "--data"])
            .arg(data)
            .args(["--bind", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let process = RelayProcess { child };
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&ticket_file) {
                if let Ok(addr) = PeerAddr::parse(text.trim()) {
                    return (process, addr);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the relay did not start");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_deposit_restarts_and_the_client_converges() {
    let data = tempfile::tempdir().unwrap();
    let (mut process, ticket) = RelayProcess::spawn(data.path());
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    add_member(&alice, &bob, &team);
    alice
        .relay(&ticket)
        .await
        .unwrap()
        .register(&alice.store, &team)
        .await
        .unwrap();
    // A session of ~30 MB, so the deposit takes long enough to be cut.
    let report = ingest(
        &alice.store,
        &[Incoming {
            session: sample::session(
                11,
                0,
                Shape {
                    tool_rounds: 6000,
                    ..Shape::default()
                },
            ),
            path: String::new(),
        }],
        0,
    )
    .unwrap();
    let id = report.sessions[0].id;
    alice.share(&id, Audience::Team(team));

    let conn = alice.relay(&ticket).await.unwrap();
    let counters = conn.counters.clone();
    let store = alice.store.clone();
    let identity = alice.identity.clone();
    let deposit = tokio::spawn(async move { conn.relay_sync(&store, &identity).await });
    while counters.sent() < 2 << 20 && !deposit.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(!deposit.is_finished(), "the deposit ended before the kill");
    process.kill();
    let cut = deposit.await.unwrap();
    assert!(
        cut.is_err() || !cut.as_ref().unwrap().failed.is_empty(),
        "{cut:?}"
    );

    // Restarted: the relay's store is whole and has no trace of the cut deposit's session.
    let (process2, ticket) = RelayProcess::spawn(data.path());
    let report = bob.sync(&ticket).await;
    assert!(!bob.has(&id), "{report:?}");
    // The client retries and converges; bob then gets the whole session.
    let report = alice.sync(&ticket).await;
    assert_eq!(report.deposited.len(), 1, "{report:?}");
    let report = bob.sync(&ticket).await;
    assert_eq!(report.fetched.new_sessions, 1, "{report:?}");
    assert_eq!(
        bob.store.session_raw(&id).unwrap(),
        alice.store.session_raw(&id).unwrap()
    );
    bob.fsck_clean();
    drop(process2);
}

/// A member's sync of a few hundred team sessions in one go: the relay writes an audit entry
/// for each session it serves, and a client opens its next stream as soon as it reads an
/// answer; the relay must not count the two as one peer holding too many streams (the long
/// relay-deposit kill loop found a final sync cut off as "too many streams").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_of_three_hundred_team_sessions_through_a_relay_completes() {
    const SESSIONS: u64 = 300;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("relay.toml"),
        "[default]\nsessions_per_month = 100000\n",
    )
    .unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let lines = log.clone();
    let relay = start(
        data.path(),
        &options(),
        Arc::new(move |line| lines.lock().unwrap().push(line)),
    )
    .await
    .unwrap();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team_on_relay(&alice, &relay.ticket, "core").await;
    add_member(&alice, &bob, &team);
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|i| {
            let id = alice.session_with(1000 + i, &["a question", "an answer"]);
            alice.share(&id, Audience::Team(team));
            id
        })
        .collect();
    let report = alice.sync(&relay.ticket).await;
    assert_eq!(
        report.deposited.len(),
        SESSIONS as usize,
        "{:?}",
        report.failed
    );

    let report = bob.sync(&relay.ticket).await;
    assert_eq!(
        report.fetched.new_sessions, SESSIONS as usize,
        "{:?}",
        report.fetched
    );
    assert!(ids.iter().all(|id| bob.has(id)));
    bob.fsck_clean();
    let cut: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("disconnected"))
        .cloned()
        .collect();
    assert!(cut.is_empty(), "{cut:?}");
    relay.shutdown().await;
}
