//! The main job on the embedded default: generate realistic sample sessions as Claude Code
//! transcripts, import them into a fresh tapes store, import again (nothing new), grow one
//! transcript (only its new nodes are added), then list, show, log and fsck; then the team
//! workflow that works on one machine today: a teammate joins with an invite, the secret gate
//! stops a leaky share and shares a redacted copy, a branch, and a team-sealed bundle carried
//! to the teammate — printing what happened at each step. Everything runs in a temporary
//! directory; nothing touches ~/.tapes.
//!
//! `cargo run --release --example quickstart [-- --sessions N]`

use std::time::Instant;

use std::collections::BTreeMap;
use tapes::identity::{Identity, Profile};
use tapes::import::ingest::Outcome;
use tapes::import::walk::import_paths;
use tapes::protocol::SessionId;
use tapes::session::sample::{self, Shape};
use tapes::store::fsck::fsck;

use tapes::import::ingest::{ingest, Incoming};
use tapes::protocol::manifest::TeamRole;
use tapes::protocol::MemberId;
use tapes::session::lineage::{self, CopyOptions};
use tapes::share::{self, Audience, SecretPolicy, ShareOptions};
use tapes::store::Store;
use tapes::sync::bundle::{self, CreateOptions};
use tapes::team::{self, InviteOptions};
use tapes::{home::Home, views::render};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sessions: usize = args
        .iter()
        .position(|a| a == "--sessions")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let home = Home::at(dir.path().join("tapes-home"));
    home.ensure()?;

    let identity = Identity::generate(Profile {
        name: "alice".into(),
        email: None,
    })?;
    identity.save(&home)?;
    println!(
        "1. tapes init: node id {} (keys in 0600 files)",
        &identity.node_id_hex()[..16]
    );

    let projects = dir.path().join("claude-projects");
    let shape = Shape::default();
    for i in 0..sessions {
        let session = sample::session(2026, i, shape);
        let project = session.messages[0].meta.project.clone().unwrap_or_default();
        let folder = projects.join(format!("-home-dev-src-{project}"));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(
            folder.join(format!("{}.jsonl", session.source_id)),
            sample::claude_jsonl(&session),
        )?;
    }
    println!(
        "2. generated {sessions} Claude Code transcripts under {}",
        projects.display()
    );

    let store = Store::open(&home.store_dir())?;
    store.set_local_owner(&member_id(&identity))?;
    let started = Instant::now();
    let first = import_paths(&store, &[projects.clone()], tapes::now_ms(), |_| {})?;
    println!(
        "3. tapes import: {} new sessions, {} new nodes ({}) in {:.0?}",
        first.report.count(Outcome::Created),
        first.report.new_nodes,
        render::bytes(first.report.bytes),
        started.elapsed()
    );

    let second = import_paths(&store, &[projects.clone()], tapes::now_ms(), |_| {})?;
    println!(
        "4. tapes import again: {} new nodes, {} sessions unchanged (idempotent)",
        second.report.new_nodes,
        second.report.count(Outcome::Unchanged)
    );

    // The agent keeps working in session 0: its transcript grows by two rounds.
    let grown = sample::session(
        2026,
        0,
        Shape {
            tool_rounds: shape.tool_rounds + 2,
            ..shape
        },
    );
    let mut original = sample::session(2026, 0, shape);
    let keep = original.messages.len() - 1;
    original.messages.truncate(keep);
    original
        .messages
        .extend(grown.messages[keep..].iter().cloned());
    let project = original.messages[0]
        .meta
        .project
        .clone()
        .unwrap_or_default();
    let path = projects
        .join(format!("-home-dev-src-{project}"))
        .join(format!("{}.jsonl", original.source_id));
    std::fs::write(&path, sample::claude_jsonl(&original))?;
    let third = import_paths(&store, &[projects], tapes::now_ms(), |_| {})?;
    println!(
        "5. a transcript grew: {} session updated, {} new nodes (shared history is not stored twice)",
        third.report.count(Outcome::Updated),
        third.report.new_nodes
    );

    let mut rows = store.sessions()?;
    rows.sort_by(|a, b| b.1.summary.started_ms.cmp(&a.1.summary.started_ms));
    println!("6. tapes sessions (newest 5 of {}):", rows.len());
    for line in render::sessions_table(&rows[..rows.len().min(5)]).lines() {
        println!("   {line}");
    }

    let id = SessionId::derive("claude", &original.source_id);
    let record = store
        .session(&id)?
        .ok_or_else(|| anyhow::anyhow!("session {id} vanished"))?;
    let chain = store.chain(&record.head)?;
    println!("7. tapes show {} (first 12 lines):", id.short());
    for line in render::transcript(&id, &record, &chain).lines().take(12) {
        println!("   {line}");
    }

    let report = fsck(&store, |_| {})?;
    println!(
        "8. tapes fsck: {} objects and {} refs verified, {} problems; store is {} on disk",
        report.objects,
        report.refs,
        report.problems.len(),
        render::bytes(store.storage().size_on_disk()? as usize)
    );
    team_workflow(dir.path(), &store, &identity, id)?;
    Ok(())
}

fn member_id(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

/// The collaboration that works today on one machine: a team with a second member, the secret
/// gate before sharing, a branch, and a sealed bundle carried to the teammate.
fn team_workflow(
    dir: &std::path::Path,
    store: &Store,
    alice: &Identity,
    id: SessionId,
) -> anyhow::Result<()> {
    let now = tapes::now_ms();

    let bob_home = Home::at(dir.join("bob-home"));
    bob_home.ensure()?;
    let bob = Identity::generate(Profile {
        name: "bob".into(),
        email: None,
    })?;
    bob.save(&bob_home)?;
    let bob_store = Store::open(&bob_home.store_dir())?;
    bob_store.set_local_owner(&member_id(&bob))?;

    let team = team::create(store, alice, "Paper Compute", now)?;
    let options = InviteOptions {
        expires_ms: Some(now + 7 * 86_400_000),
        max_uses: 1,
        email: None,
        role: TeamRole::Member,
        addrs: Vec::new(),
    };
    let (code, _) = team::invite(store, alice, &team, options, now)?;
    let (invite, request) = team::join_request(&bob, &code, now)?;
    let answer = team::accept_join(store, alice, &request, now)?;
    let bobs_view = team::complete_join(&bob_store, &bob, &invite.team, answer)?;
    let team = team::load(store, &team.team_id())?;
    println!(
        "9. tapes team create/invite/join: bob joined \"Paper Compute\" ({} members; both verified the signed chain)",
        bobs_view.head().manifest.members.len()
    );

    // A session where an API key was pasted into the prompt.
    let mut leaky = sample::session(2026, 10_000, Shape::default());
    leaky.source_id.push_str("-leaky");
    leaky.messages[0]
        .blocks
        .push(tapes::protocol::ContentBlock::text(format!(
            "use ANTHROPIC_API_KEY={}{} for the test",
            "sk-ant-api03-", "Xq7rT2vLm9Pz4Kw8Jd3Nb6Hc1Fy5Gs0AeUiOoQpRrStUvWx"
        )));
    let report = ingest(
        store,
        &[Incoming {
            session: leaky,
            path: String::new(),
        }],
        now,
    )?;
    let leaky_id = report.sessions[0].id;
    let share_options = |secrets| ShareOptions {
        audience: Audience::Team(team.team_id()),
        title: None,
        note: Some("how I fixed the flaky deploy".into()),
        expires_ms: None,
        secrets,
    };
    match share::share(
        store,
        alice,
        &leaky_id,
        &share_options(SecretPolicy::Block),
        now,
    ) {
        Err(share::ShareError::Secrets { count, .. }) => {
            println!(
                "10. tapes share {}: blocked, {count} possible secret found before anything left",
                leaky_id.short()
            )
        }
        other => anyhow::bail!("the secret gate let a planted key through: {other:?}"),
    }
    let shared = share::share(
        store,
        alice,
        &leaky_id,
        &share_options(SecretPolicy::Redact),
        now,
    )?;
    println!(
        "    tapes share --redact: shared a redacted copy {} ({} span replaced; the original is untouched)",
        shared.session.short(),
        shared.redacted_spans
    );

    let branch = lineage::branch(
        store,
        &id,
        &CopyOptions {
            at: Some(4),
            title: Some("variant A".into()),
            ..CopyOptions::default()
        },
        now,
    )?;
    println!(
        "11. tapes branch {} --at 4: new session {} shares the first 4 nodes (no copies)",
        id.short(),
        branch.short()
    );

    let record = store
        .session(&shared.session)?
        .ok_or_else(|| anyhow::anyhow!("shared copy vanished"))?;
    let out = dir.join("paper-compute.tape");
    let created = bundle::create(
        store,
        alice,
        &out,
        CreateOptions {
            sessions: vec![(shared.session, record)],
            filter: BTreeMap::new(),
            team: Some(team),
            basis: None,
            now_ms: now,
        },
        &mut |_| {},
    )?;
    let imported = bundle::import(&bob_store, Some(&bob), &out, &mut |_| {})?;
    let bobs_copy = bob_store
        .session(&shared.session)?
        .ok_or_else(|| anyhow::anyhow!("bob has no copy"))?;
    let text: String = bob_store
        .chain(&bobs_copy.head)?
        .iter()
        .map(|(_, n)| n.body.plain_text())
        .collect();
    println!(
        "12. tapes bundle create --team / import: {} bytes sealed to the team; bob imported {} session with {} nodes; key in it: {}",
        created.size,
        imported.sessions.len(),
        imported.objects_written,
        if text.contains("sk-ant-") { "YES (bug)" } else { "none" }
    );
    Ok(())
}
