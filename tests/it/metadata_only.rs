//! Metadata-only sharing (SPEC.md §11.4) end to end over real loopback iroh endpoints: the
//! share record and its signed summary reach a teammate (peer fetch) and nothing of the
//! session's messages does — not to the teammate's store, not to a relay's data directory —
//! proven by grepping every file for a marker put in every message (with a content share of
//! another marked session as the control that the grep finds what does travel). The teammate's
//! views count the session from its summary; `show`/`fork`/`checkout` name what to ask the
//! owner; a project set to `sync.content.<project> none` shares summaries only. The sharing
//! node's audit log records the share and the teammate's fetch (SPEC.md §18).

use std::sync::Arc;

use tapes::import::ingest::{ingest, Incoming};
use tapes::protocol::SessionId;
use tapes::relay::run::start;
use tapes::session::pricing::PriceTable;
use tapes::session::sample::{self, Shape};
use tapes::share::{self, Audience, SecretPolicy, ShareError, ShareOptions};
use tapes::team;
use tapes::views::listing::{Facts, Snapshot};

use crate::relay::{files_containing, options, team_on_relay, Member};

const META_TEXT: &str = "pelican-metadata-only-marker-3141";
const META_PUBLIC_TEXT: &str = "walrus-metadata-only-public-2718";
const CONTENT_TEXT: &str = "otter-content-share-control-1618";
const PUBLIC_CONTENT_TEXT: &str = "heron-public-content-control-1414";
const LOCAL_PROJECT_TEXT: &str = "lynx-stays-on-this-machine-5772";

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
