//! Metadata-only sharing (SPEC.md §11.4) end to end over real loopback iroh endpoints: the
//! share record and its signed summary reach a teammate (peer fetch) and nothing of the
//! session's messages does — not to the teammate's store, not to a relay's data directory —
//! proven by grepping every file for a marker put in every message (with a content share of
//! another marked session as the control that the grep finds what does travel). The teammate's
//! views count the session from its summary; `show`/`fork`/`checkout` name what to ask the
//! owner; a project set to `sync.content.<project> none` shares summaries only. The sharing
//! node's audit log records the share and the teammate's fetch (SPEC.md §18).
//!
//! Through a relay (SPEC.md §16.3, summary deposits): a teammate who only syncs with the relay
//! gets the summary and no message; sharing again `--metadata-only` withdraws the content the
//! relay held (its blobs and usage, the public page); a teammate who fetched it before keeps
//! it, one who fetches afterwards does not get it. The same through the binary (`tapes share
//! --metadata-only`, `tapes storage sync`, `tapes shared`, `tapes show`), with a `relay.toml`
//! that names the team by its name (§16.14).

use std::sync::Arc;

use tapes::import::ingest::{ingest, Incoming};
use tapes::protocol::SessionId;
use tapes::relay::run::start;
use tapes::session::pricing::PriceTable;
use tapes::session::sample::{self, Shape};
use tapes::share::{self, Audience, SecretPolicy, ShareError, ShareOptions};
use tapes::team;
use tapes::views::listing::{Facts, Snapshot};

use crate::relay::{files_containing, http_get, options, team_on_relay, Member};

const META_TEXT: &str = "pelican-metadata-only-marker-3141";
const META_PUBLIC_TEXT: &str = "walrus-metadata-only-public-2718";
const CONTENT_TEXT: &str = "otter-content-share-control-1618";
const PUBLIC_CONTENT_TEXT: &str = "heron-public-content-control-1414";
const LOCAL_PROJECT_TEXT: &str = "lynx-stays-on-this-machine-5772";
const RELAY_META_TEXT: &str = "ibis-summary-through-the-relay-2236";
const RELAY_META_PUBLIC_TEXT: &str = "tapir-public-summary-at-the-relay-1732";
const RELAY_CONTENT_TEXT: &str = "badger-content-through-the-relay-4142";
const WITHDRAWN_TEXT: &str = "marmot-withdrawn-from-the-relay-6931";
const WITHDRAWN_PUBLIC_TEXT: &str = "gecko-public-withdrawn-from-relay-8660";

/// A generated session with `marker` in every message; `project` overrides its project.
fn marked(member: &Member, seed: u64, marker: &str, project: Option<&str>) -> SessionId {
    let mut session = sample::session(seed, 0, Shape::default());
    for message in &mut session.messages {
        message
            .blocks
            .push(tapes::protocol::ContentBlock::text(format!(
                "{marker} in this message"
            )));
        if let Some(p) = project {
            message.meta.project = Some(p.into());
        }
    }
    session.title = None;
    let report = ingest(
        &member.store,
        &[Incoming {
            session,
            path: String::new(),
        }],
        0,
    )
    .unwrap();
    report.sessions[0].id
}

fn options_for(audience: Audience) -> ShareOptions {
    ShareOptions {
        audience,
        title: None,
        note: None,
        expires_ms: None,
        secrets: SecretPolicy::Allow,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_only_share_carries_its_summary_and_never_a_message() {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = start(relay_dir.path(), &options(), Arc::new(|_| {}))
        .await
        .unwrap();
    let ticket = relay.ticket.clone();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    tapes::testing::join(&alice, &bob, &team).await.unwrap();

    let prices = PriceTable::defaults();
    let meta = marked(&alice, 1, META_TEXT, None);
    let meta_public = marked(&alice, 2, META_PUBLIC_TEXT, None);
    let content = marked(&alice, 3, CONTENT_TEXT, None);
    let public_content = marked(&alice, 4, PUBLIC_CONTENT_TEXT, None);
    let now = tapes::now_ms();
    let done = share::share_metadata_only(
        &alice.store,
        &alice.identity,
        &meta,
        &options_for(Audience::Team(team)),
        false,
        &prices,
        now,
    )
    .unwrap();
    assert!(done.metadata_only && done.session == meta);
    share::share_metadata_only(
        &alice.store,
        &alice.identity,
        &meta_public,
        &options_for(Audience::Public),
        true,
        &prices,
        now,
    )
    .unwrap();
    alice.share(&content, Audience::Team(team));
    alice.share(&public_content, Audience::Public);

    // Bob fetches from alice, and both sync with the relay.
    bob.fetch_from(&alice).await.unwrap();
    alice.sync(&ticket).await;
    bob.sync(&ticket).await;

    // The content shares arrived (the control); the metadata-only sessions did not.
    assert!(bob.has(&content) && bob.has(&public_content));
    assert!(!bob.has(&meta) && !bob.has(&meta_public));
    assert!(!files_containing(&bob.dir().join("store"), CONTENT_TEXT).is_empty());
    assert!(!files_containing(relay_dir.path(), PUBLIC_CONTENT_TEXT).is_empty());
    for marker in [META_TEXT, META_PUBLIC_TEXT] {
        let in_bob = files_containing(&bob.dir().join("store"), marker);
        assert!(
            in_bob.is_empty(),
            "{marker} reached bob's store: {in_bob:?}"
        );
        let in_relay = files_containing(relay_dir.path(), marker);
        assert!(
            in_relay.is_empty(),
            "{marker} reached the relay: {in_relay:?}"
        );
    }

    // What bob has instead: the share and a summary signed by alice.
    let summaries = share::all_summaries(&bob.store).unwrap();
    let summary = summaries
        .iter()
        .find(|s| s.summary.session == meta)
        .expect("the team summary reached bob");
    let original = alice.store.session(&meta).unwrap().unwrap();
    assert_eq!(summary.summary.messages, original.summary.messages);
    assert_eq!(summary.summary.usage, original.summary.usage);
    assert_eq!(summary.summary.model, original.summary.model);
    assert_eq!(summary.summary.first_prompt, None);
    assert!(summary.summary.cost_micro_usd.is_some());
    assert_ne!(summary.summary.status, "");
    let public = summaries
        .iter()
        .find(|s| s.summary.session == meta_public)
        .expect("the public summary reached bob");
    let prompt = alice
        .store
        .session(&meta_public)
        .unwrap()
        .unwrap()
        .summary
        .first_prompt;
    assert!(!prompt.is_empty());
    assert_eq!(
        public.summary.first_prompt.as_deref(),
        Some(prompt.as_str())
    );

    // Bob's views count it from the summary: `tapes shared`, the dashboard's stats.
    let snapshot = Snapshot::load(&bob.store, Facts::Summaries, &prices, tapes::now_ms()).unwrap();
    let feed = snapshot.shared_with_me();
    let row = (0..feed.len())
        .filter_map(|i| feed.get(i))
        .find(|r| r.id == meta)
        .expect("the metadata-only share is in bob's feed");
    assert_eq!(row.messages, original.summary.messages);
    assert_eq!(row.tokens, original.summary.usage.total());
    assert!(row.cost.is_some() && row.status.is_some());
    let scope = tapes::views::stats::Scope::team(&bob.store, Some("core")).unwrap();
    let stats = tapes::views::stats::compute(
        &bob.store,
        &scope,
        &prices,
        tapes::now_ms() + 1,
        10 * 365 * 86_400_000,
    )
    .unwrap();
    let with_meta = stats.current.sessions;
    assert!(
        stats.current.tokens >= original.summary.usage.total(),
        "{stats:?}"
    );
    assert!(
        with_meta >= 2,
        "the content share and the summary: {stats:?}"
    );

    // show, fork and checkout name what to ask the owner.
    match share::resolve_content(&bob.store, &meta.short()) {
        Err(e @ ShareError::ContentNotShared { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("alice") && text.contains("metadata only"),
                "{text}"
            );
        }
        other => panic!("expected ContentNotShared, got {other:?}"),
    }

    // The sharing node's audit log: the shares, and bob fetching the content share.
    let rows = tapes::audit::list(&alice.store, &tapes::audit::Filter::default()).unwrap();
    assert!(rows
        .iter()
        .any(|r| r.action == "share" && r.session == Some(meta) && r.detail == "metadata only"));
    assert!(rows
        .iter()
        .any(|r| r.action == "fetch" && r.session == Some(content) && r.actor == bob.id()));
    assert!(!rows
        .iter()
        .any(|r| r.action == "fetch" && r.session == Some(meta)));
    assert_eq!(tapes::audit::view_count(&alice.store, &content).unwrap(), 1);
    assert!(tapes::audit::verify(&alice.store).unwrap().is_clean());

    // Sharing again without --metadata-only shares the content.
    alice.share(&meta, Audience::Team(team));
    bob.fetch_from(&alice).await.unwrap();
    assert!(bob.has(&meta));
    bob.fsck_clean();
    alice.fsck_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_whose_content_stays_here_is_shared_as_its_summary_only() {
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team::create(&alice.store, &alice.identity, "core", tapes::now_ms())
        .unwrap()
        .team_id();
    tapes::testing::join(&alice, &bob, &team).await.unwrap();
    let local = marked(&alice, 7, LOCAL_PROJECT_TEXT, Some("payroll"));
    tapes::settings::set(&alice.store, "sync.content.payroll", "none").unwrap();
    assert!(tapes::settings::set(&alice.store, "sync.content.payroll", "nobody").is_err());

    // A plain share of it goes metadata-only, and says why.
    let done = share::share(
        &alice.store,
        &alice.identity,
        &local,
        &options_for(Audience::Team(team)),
        tapes::now_ms(),
    )
    .unwrap();
    assert!(done.metadata_only);
    let why = done.content_policy.expect("the setting is named");
    assert_eq!(why.project, "payroll");
    assert!(why.to_string().contains("sync.content.payroll"));

    bob.fetch_from(&alice).await.unwrap();
    assert!(!bob.has(&local));
    assert!(files_containing(&bob.dir().join("store"), LOCAL_PROJECT_TEXT).is_empty());
    assert_eq!(share::all_summaries(&bob.store).unwrap().len(), 1);
    // Content the project shared before the setting was changed stops being served too.
    assert!(share::content_withheld(&alice.store, &local, &Audience::Public).unwrap());

    // A bundle of it is refused, naming the setting, and nothing is written.
    let out = alice.dir().join("payroll.tapes");
    let record = alice.store.session(&local).unwrap().unwrap();
    let err = tapes::sync::bundle::create(
        &alice.store,
        &alice.identity,
        &out,
        tapes::sync::bundle::CreateOptions {
            sessions: vec![(local, record)],
            filter: Default::default(),
            team: None,
            basis: None,
            now_ms: tapes::now_ms(),
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("sync.content.payroll = none"),
        "{err}"
    );
    assert!(!out.exists());
}

fn share_summary_only(member: &Member, id: &SessionId, audience: Audience) {
    let done = share::share_metadata_only(
        &member.store,
        &member.identity,
        id,
        &options_for(audience),
        false,
        &PriceTable::defaults(),
        tapes::now_ms(),
    )
    .unwrap();
    assert!(done.metadata_only);
}

/// Files under `dir` holding `marker`, except sled's own log (`store/db`), which reuses the
/// space of removed values as it compacts (SPEC.md §3.5, §6 rule 8): the relay's journal,
/// packs, identity and everything else.
fn outside_sled_log(dir: &std::path::Path, marker: &str) -> Vec<String> {
    let log = dir.join("store").join("db");
    files_containing(dir, marker)
        .into_iter()
        .filter(|f| std::path::Path::new(f) != log)
        .collect()
}

/// The relay is the only path (SPEC.md §11.4, §16.3 summary deposits): Bob never talks to
/// Alice's node, yet her metadata-only shares reach him through the relay as the share and its
/// signed summary, and no message of them is in his store or in the relay's data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_only_share_reaches_teammates_through_a_relay_as_its_summary_only() {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = start(relay_dir.path(), &options(), Arc::new(|_| {}))
        .await
        .unwrap();
    let ticket = relay.ticket.clone();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    tapes::testing::join(&alice, &bob, &team).await.unwrap();

    let meta = marked(&alice, 31, RELAY_META_TEXT, None);
    let meta_public = marked(&alice, 32, RELAY_META_PUBLIC_TEXT, None);
    let content = marked(&alice, 33, RELAY_CONTENT_TEXT, None);
    share_summary_only(&alice, &meta, Audience::Team(team));
    share_summary_only(&alice, &meta_public, Audience::Public);
    alice.share(&content, Audience::Team(team));

    // Alice's sync deposits the two summaries (no node) and the content share.
    let report = alice.sync(&ticket).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for (id, scope) in [
        (meta, tapes::protocol::sync::Scope::Team(team)),
        (meta_public, tapes::protocol::sync::Scope::Public),
    ] {
        assert!(report.deposited.contains(&(id, scope, 0)), "{report:?}");
        let (held, ids) = relay.state.deposited(&scope, &id).unwrap().expect("held");
        assert!(held.is_summary() && held.segments.is_empty() && ids.is_empty());
    }
    // Nothing is pending afterwards: the next sync deposits nothing again.
    assert!(alice.sync(&ticket).await.deposited.is_empty());

    // Bob syncs with the relay only.
    let report = bob.sync(&ticket).await;
    assert!(
        report.fetched.rejected.is_empty(),
        "{:?}",
        report.fetched.rejected
    );
    assert!(bob.has(&content), "the control came through the relay");
    assert!(!bob.has(&meta) && !bob.has(&meta_public));
    assert!(!files_containing(&bob.dir().join("store"), RELAY_CONTENT_TEXT).is_empty());
    for marker in [RELAY_META_TEXT, RELAY_META_PUBLIC_TEXT] {
        let in_bob = files_containing(&bob.dir().join("store"), marker);
        assert!(
            in_bob.is_empty(),
            "{marker} reached bob's store: {in_bob:?}"
        );
        let in_relay = files_containing(relay_dir.path(), marker);
        assert!(
            in_relay.is_empty(),
            "{marker} reached the relay: {in_relay:?}"
        );
    }
    // The public page has nothing to show of a summary.
    let (status, _) = http_get(relay.http.unwrap(), &format!("/s/{}", meta_public.to_hex()));
    assert_eq!(status, 404);

    // What Bob has instead: both summaries, signed by Alice.
    let prices = PriceTable::defaults();
    let summaries = share::all_summaries(&bob.store).unwrap();
    let original = alice.store.session(&meta).unwrap().unwrap();
    let summary = summaries
        .iter()
        .find(|s| s.summary.session == meta)
        .expect("the team summary reached bob through the relay");
    assert_eq!(summary.summary.messages, original.summary.messages);
    assert_eq!(summary.summary.usage, original.summary.usage);
    assert!(summaries.iter().any(|s| s.summary.session == meta_public));

    // His views count it (`tapes shared`, stats); show/fork/checkout name what to ask.
    let snapshot = Snapshot::load(&bob.store, Facts::Summaries, &prices, tapes::now_ms()).unwrap();
    let feed = snapshot.shared_with_me();
    let row = (0..feed.len())
        .filter_map(|i| feed.get(i))
        .find(|r| r.id == meta)
        .expect("the metadata-only share is in bob's feed");
    assert_eq!(row.messages, original.summary.messages);
    assert_eq!(row.tokens, original.summary.usage.total());
    let scope = tapes::views::stats::Scope::team(&bob.store, Some("core")).unwrap();
    let stats = tapes::views::stats::compute(
        &bob.store,
        &scope,
        &prices,
        tapes::now_ms() + 1,
        10 * 365 * 86_400_000,
    )
    .unwrap();
    assert!(
        stats.current.sessions >= 2,
        "the content share and the summary: {stats:?}"
    );
    assert!(
        stats.current.tokens >= original.summary.usage.total(),
        "{stats:?}"
    );
    match share::resolve_content(&bob.store, &meta.short()) {
        Err(e @ ShareError::ContentNotShared { .. }) => {
            assert!(e.to_string().contains("alice"), "{e}");
        }
        other => panic!("expected ContentNotShared, got {other:?}"),
    }

    // Sharing it again with its content deposits the whole chain over the summary.
    alice.share(&meta, Audience::Team(team));
    let report = alice.sync(&ticket).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    bob.sync(&ticket).await;
    assert!(bob.has(&meta));
    bob.fsck_clean();
    alice.fsck_clean();
    relay.shutdown().await;
}

/// Sharing again `--metadata-only` withdraws the content a relay held (SPEC.md §11.4, §16.3):
/// the next sync replaces the deposit with the summary, the relay removes the blobs (the
/// public copy's marker is gone from its data directory) and serves no content of it; a
/// teammate who fetched the content before keeps it, one who fetches afterwards gets the
/// summary only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_again_metadata_only_withdraws_the_content_a_relay_held() {
    use tapes::protocol::sync::Scope;
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = start(relay_dir.path(), &options(), Arc::new(|_| {}))
        .await
        .unwrap();
    let ticket = relay.ticket.clone();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let carol = Member::new("carol").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    tapes::testing::join(&alice, &bob, &team).await.unwrap();

    let session = marked(&alice, 41, WITHDRAWN_TEXT, None);
    let public = marked(&alice, 42, WITHDRAWN_PUBLIC_TEXT, None);
    alice.share(&session, Audience::Team(team));
    alice.share(&public, Audience::Public);
    alice.sync(&ticket).await;
    bob.sync(&ticket).await;
    assert!(bob.has(&session) && bob.has(&public));
    // The relay holds both contents (the public one in the clear: the control for the grep).
    let (held, _) = relay
        .state
        .deposited(&Scope::Team(team), &session)
        .unwrap()
        .unwrap();
    let blobs: Vec<_> = held.segments.iter().flat_map(|s| s.blobs.clone()).collect();
    assert!(!blobs.is_empty());
    assert!(relay.state.usage(&Scope::Team(team)).unwrap().bytes > 0);
    assert!(!outside_sled_log(relay_dir.path(), WITHDRAWN_PUBLIC_TEXT).is_empty());

    // Alice shares both again, metadata only; her next sync withdraws the content.
    share_summary_only(&alice, &session, Audience::Team(team));
    share_summary_only(&alice, &public, Audience::Public);
    let report = alice.sync(&ticket).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for scope in [Scope::Team(team), Scope::Public] {
        let id = if scope == Scope::Public {
            public
        } else {
            session
        };
        let (held, ids) = relay.state.deposited(&scope, &id).unwrap().unwrap();
        assert!(held.is_summary() && held.segments.is_empty() && ids.is_empty());
        assert_eq!(held.bytes, 0);
        assert_eq!(relay.state.usage(&scope).unwrap().bytes, 0);
    }
    for blob in &blobs {
        assert!(relay.state.backend().blob(blob).unwrap().is_none());
    }
    let in_relay = outside_sled_log(relay_dir.path(), WITHDRAWN_PUBLIC_TEXT);
    assert!(
        in_relay.is_empty(),
        "the withdrawn content stays at the relay: {in_relay:?}"
    );
    let (status, _) = http_get(relay.http.unwrap(), &format!("/s/{}", public.to_hex()));
    assert_eq!(status, 404);

    // Carol joins afterwards and fetches from the relay: the summaries, no content.
    tapes::testing::join(&alice, &carol, &team).await.unwrap();
    alice.sync(&ticket).await;
    let report = carol.sync(&ticket).await;
    assert!(
        report.fetched.rejected.is_empty(),
        "{:?}",
        report.fetched.rejected
    );
    assert!(!carol.has(&session) && !carol.has(&public));
    for marker in [WITHDRAWN_TEXT, WITHDRAWN_PUBLIC_TEXT] {
        let in_carol = files_containing(&carol.dir().join("store"), marker);
        assert!(in_carol.is_empty(), "{marker} reached carol: {in_carol:?}");
    }
    let summaries = share::all_summaries(&carol.store).unwrap();
    assert!(summaries.iter().any(|s| s.summary.session == session));
    assert!(summaries.iter().any(|s| s.summary.session == public));

    // Bob fetched the content before: he keeps it, and learns the share is metadata-only now.
    bob.sync(&ticket).await;
    assert!(bob.has(&session) && bob.has(&public));
    assert_eq!(
        share::resolve_content(&bob.store, &session.short()).unwrap(),
        session,
        "bob still opens what he fetched"
    );
    assert!(share::all_summaries(&bob.store)
        .unwrap()
        .iter()
        .any(|s| s.summary.session == session));
    bob.fsck_clean();
    carol.fsck_clean();
    alice.fsck_clean();
    relay.shutdown().await;
}

/// A `tapes relay` process whose output goes to files in its data directory; killed on drop.
struct RelayProcess {
    child: std::process::Child,
    ticket: String,
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tapes relay --data DATA` and waits for its ticket; `Err(stderr)` when it exits.
fn relay_process(data: &std::path::Path) -> Result<RelayProcess, String> {
    let ticket_file = data.join("relay-ticket");
    let _ = std::fs::remove_file(&ticket_file);
    let stdout = std::fs::File::create(data.join("relay.out")).unwrap();
    let stderr = std::fs::File::create(data.join("relay.err")).unwrap();
    let child = crate::util::std_tapes(data.join("unused-home"))
        .args([
            "relay",
            "--data",
            data.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ])
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut relay = RelayProcess {
        child,
        ticket: String::new(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(ticket) = std::fs::read_to_string(&ticket_file) {
            if !ticket.trim().is_empty() {
                relay.ticket = ticket.trim().to_string();
                return Ok(relay);
            }
        }
        if relay.child.try_wait().unwrap().is_some() {
            return Err(std::fs::read_to_string(data.join("relay.err")).unwrap_or_default());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tapes relay wrote no ticket"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Through the binary: `tapes share --metadata-only` then `tapes storage sync` puts the summary
/// at the relay; a teammate's `tapes storage sync` brings it, `tapes shared` lists it and
/// `tapes show` says the content was not shared, and no message is in the teammate's home or
/// the relay's data. The relay's `relay.toml` names the team by its name: an unknown name stops
/// `tapes relay` with the reason, the right one is bound (SPEC.md §16.14).
#[test]
fn metadata_only_through_a_relay_and_retention_by_team_name_from_the_command_line() {
    use crate::util::output as tapes;
    let ok = |home: &std::path::Path, args: &[&str]| -> String {
        let (code, out, err) = tapes(home, args);
        assert_eq!(code, 0, "tapes {args:?}\nstdout: {out}\nstderr: {err}");
        out
    };
    const MARKER: &str = "quokka-cli-summary-only-5150";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay-data");
    std::fs::create_dir_all(&data).unwrap();
    let relay = relay_process(&data).unwrap();
    let alice = dir.path().join("alice");
    let bob = dir.path().join("bob");
    ok(&alice, &["init", "--name", "alice"]);
    ok(&bob, &["init", "--name", "bob"]);
    ok(&alice, &["team", "create", "core"]);
    ok(
        &alice,
        &["relay", "register", "--team", "core", &relay.ticket],
    );
    let invite = ok(&alice, &["team", "invite"]);
    let request = dir.path().join("bob.request");
    let answer = dir.path().join("bob.answer");
    ok(
        &bob,
        &[
            "team",
            "join",
            invite.trim(),
            "-o",
            request.to_str().unwrap(),
        ],
    );
    ok(
        &alice,
        &[
            "team",
            "accept",
            request.to_str().unwrap(),
            "-o",
            answer.to_str().unwrap(),
        ],
    );
    ok(
        &bob,
        &["team", "join", "--answer", answer.to_str().unwrap()],
    );
    for home in [&alice, &bob] {
        ok(
            home,
            &[
                "storage",
                "configure",
                "--relay",
                &relay.ticket,
                "--no-sync-on-close",
                "--sync-interval",
                "1h",
            ],
        );
    }

    // Alice's session, the marker in every message.
    let mut session = tapes::session::sample::session(77, 0, Default::default());
    for message in &mut session.messages {
        message
            .blocks
            .push(tapes::protocol::ContentBlock::text(format!(
                "{MARKER} here"
            )));
    }
    let file = dir.path().join("alice.jsonl");
    std::fs::write(&file, tapes::session::sample::claude_jsonl(&session)).unwrap();
    ok(&alice, &["import", file.to_str().unwrap()]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&alice, &["sessions", "--json"])).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    ok(
        &alice,
        &[
            "share",
            &id[..12],
            "--team",
            "core",
            "--metadata-only",
            "--allow-secrets",
        ],
    );
    let out = ok(&alice, &["storage", "sync"]);
    assert!(
        out.contains(&format!("shared {} for team ", &id[..12]))
            && out.contains("as its summary only"),
        "{out}"
    );
    // Nothing is left pending: the summary is what the relay should hold of it.
    let out = ok(&alice, &["storage", "status", "--offline"]);
    assert!(out.contains("1 synced, 0 pending push"), "{out}");
    let out = ok(&bob, &["storage", "sync"]);
    assert!(!out.contains("new session"), "{out}");
    let shared = ok(&bob, &["shared"]);
    assert!(shared.contains(&id[..8]), "{shared}");
    let (code, _, err) = tapes(&bob, &["show", &id[..12]]);
    assert_ne!(code, 0);
    assert!(
        err.contains("metadata only") && err.contains("alice"),
        "{err}"
    );
    assert!(
        files_containing(&bob, MARKER).is_empty(),
        "the marker reached bob"
    );
    assert!(
        files_containing(&data, MARKER).is_empty(),
        "the marker reached the relay"
    );
    assert!(!files_containing(&alice, MARKER).is_empty(), "the control");
    drop(relay);

    // relay.toml by team name: unknown stops the start, naming the file and the teams.
    std::fs::write(
        data.join("relay.toml"),
        "[teams.cor]\nretention = \"30d\"\n",
    )
    .unwrap();
    let err = relay_process(&data)
        .err()
        .expect("an unknown team name stops tapes relay");
    assert!(
        err.contains("relay.toml")
            && err.contains("[teams.cor]")
            && err.contains("registered: core"),
        "{err}"
    );
    std::fs::write(
        data.join("relay.toml"),
        "[teams.core]\nretention = \"30d\"\n",
    )
    .unwrap();
    let relay = relay_process(&data).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = std::fs::read_to_string(data.join("relay.out")).unwrap_or_default();
        if out.contains("retention: team core (") && out.contains("keeps deposits 30d") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(relay);
}

/// Bad summary deposits change nothing at the relay (SPEC.md §16.3): one for a session the
/// caller does not own there, a public one whose share carries no summary, and one that comes
/// with objects are refused with the reason, and the relay's record stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_summary_deposits_are_refused_and_change_nothing() {
    use tapes::protocol::sync::{Deposit, Objects, Scope};
    use tapes::protocol::NodeId;
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = start(relay_dir.path(), &options(), Arc::new(|_| {}))
        .await
        .unwrap();
    let ticket = relay.ticket.clone();
    let alice = Member::new("alice").await;
    let bob = Member::new("bob").await;
    let team = team_on_relay(&alice, &ticket, "core").await;
    tapes::testing::join(&alice, &bob, &team).await.unwrap();
    let session = marked(&alice, 51, "kiwi-bad-summary-0001", None);
    let public = marked(&alice, 52, "kiwi-bad-summary-0002", None);
    alice.share(&session, Audience::Team(team));
    alice.share(&public, Audience::Public);
    alice.sync(&ticket).await;
    bob.sync(&ticket).await;
    let state = relay.state.clone();
    let (team_before, _) = state
        .deposited(&Scope::Team(team), &session)
        .unwrap()
        .unwrap();
    let (public_before, _) = state.deposited(&Scope::Public, &public).unwrap().unwrap();
    let summary_of = |scope: Scope, id, held: &tapes::relay::state::Deposited| Deposit {
        scope,
        session: id,
        expected: None,
        head: NodeId([0; 32]),
        ids: Vec::new(),
        entry: Vec::new(),
        session_item: NodeId([0; 32]),
        share: held.share.clone(),
        share_item: held.share_item,
        expires_ms: held.expires_ms,
        revoked: held.revoked,
    };

    // Bob, a member, cannot replace Alice's deposit with a summary.
    let err = state
        .begin_deposit(
            &bob.id(),
            summary_of(Scope::Team(team), session, &team_before),
        )
        .err()
        .expect("not the owner's");
    assert!(err.to_string().contains("belongs to another node"), "{err}");
    // A public share without a summary is not a summary deposit.
    let err = state
        .begin_deposit(
            &alice.id(),
            summary_of(Scope::Public, public, &public_before),
        )
        .err()
        .expect("no summary");
    assert!(err.to_string().contains("carries no summary"), "{err}");
    // A summary deposit brings no object.
    let mut pending = state
        .begin_deposit(
            &alice.id(),
            summary_of(Scope::Team(team), session, &team_before),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let err = state
        .add_batch(&mut pending, Objects::Plain(vec![b"x".to_vec()]))
        .unwrap_err();
    assert!(err.to_string().contains("carries no objects"), "{err}");
    drop(pending);

    assert_eq!(
        state
            .deposited(&Scope::Team(team), &session)
            .unwrap()
            .unwrap()
            .0,
        team_before
    );
    assert_eq!(
        state.deposited(&Scope::Public, &public).unwrap().unwrap().0,
        public_before
    );
    relay.shutdown().await;
}
