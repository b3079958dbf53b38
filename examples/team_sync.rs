//! The whole team workflow on loopback, over real iroh connections: three teammates, each with
//! their own identity, store and `tapes serve` endpoint on 127.0.0.1 (no relays, no
//! discovery). Alice creates a team and invites Bob and Carol, who join over the connection;
//! Alice shares sessions with the team (sealed with the team key on the wire) and one publicly;
//! Bob fetches them, Carol fetches them from Bob (peers pass on what they may); Bob forks one,
//! continues it in a (stand-in) Claude Code file tapes wrote for him, and pushes the fork to
//! Alice, who sees the agent's reply last; Alice branches hers; a push from a stale base is refused with the
//! conflict hint; a no-op sync costs one round trip. Then a relay: Alice registers the team
//! and deposits a session sealed, goes away, Bob syncs it from the relay, Dave's join request
//! waits there until Alice's next sync, the public page serves the public share (and 404s a
//! team one), and no file under the relay's data directory holds the team-only text. Prints
//! what happened at each step.
//!
//! `cargo run --release --example team_sync [-- --sessions N]`

use std::sync::Arc;
use std::time::Instant;

use tapes::import::ingest::{ingest, Incoming};
use tapes::peer::client::FetchReport;
use tapes::peer::PeerError;
use tapes::protocol::manifest::TeamRole;
use tapes::protocol::{SessionId, TeamId};
use tapes::relay::run::{start, RelayOptions};
use tapes::session::lineage::{self, CopyOptions};
use tapes::session::sample::{self, Shape};
use tapes::share::{Audience, SecretPolicy};
use tapes::team::{self, InviteOptions};
use tapes::testing::Node as Teammate;

/// A teammate's machine: the shared harness node, with `tapes serve`'s log printed under its
/// name.
async fn teammate(name: &'static str) -> anyhow::Result<Teammate> {
    let log: tapes::peer::server::EventLog =
        Arc::new(move |line| println!("      [{name}'s tapes serve] {line}"));
    Ok(Teammate::with_log(name, log).await?)
}

/// The status code of a plain HTTP GET.
fn http_status(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer"))
}

/// How many files under `dir` contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> anyhow::Result<usize> {
    let mut hits = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry?;
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path())?;
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits += 1;
            }
        }
    }
    Ok(hits)
}

fn describe(report: &FetchReport) -> String {
    format!(
        "{} new sessions, {} updated, {} nodes, {} share records, {} manifests; {} round trips, {} B sent, {} B received",
        report.new_sessions,
        report.updated_sessions,
        report.nodes,
        report.shares,
        report.manifests,
        report.round_trips,
        report.bytes_sent,
        report.bytes_received
    )
}

async fn join(owner: &Teammate, joiner: &Teammate, team: &TeamId) -> anyhow::Result<()> {
    let chain = team::load(&owner.store, team)?;
    let (code, _) = team::invite(
        &owner.store,
        &owner.identity,
        &chain,
        InviteOptions {
            expires_ms: Some(tapes::now_ms() + 86_400_000),
            max_uses: 1,
            email: None,
            role: TeamRole::Member,
            addrs: vec![owner.addr().ticket()],
        },
        tapes::now_ms(),
    )?;
    let (invite, request) = team::join_request(&joiner.identity, &code, tapes::now_ms())?;
    let conn = joiner.dial(owner, &owner.name).await?;
    let response = conn.join(&request).await?;
    conn.close();
    let chain = team::complete_join(&joiner.store, &joiner.identity, &invite.team, response)?;
    println!(
        "   {} joined \"{}\" over the connection to {}'s node: {} members now",
        joiner.name,
        chain.head().manifest.name,
        owner.name,
        chain.head().manifest.members.len()
    );
    Ok(())
}

/// Continues a session by one message, as an agent would.
fn append(who: &Teammate, id: &SessionId, text: &str) -> anyhow::Result<()> {
    Ok(sample::continue_session(
        &who.store,
        id,
        &[text.to_string()],
    )?)
}

/// Writes session `id` where Claude Code resumes it (under the teammate's own temporary agent
/// home), then plays the agent: appends the user's prompt and a reply, as Claude Code would.
fn continue_in_agent(
    who: &Teammate,
    id: &SessionId,
    prompt: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use tapes::resume::{checkout, AgentHomes, Platform};
    let agents = who.dir().join("agents");
    let done = checkout::checkout(
        &who.store,
        id,
        &checkout::Options {
            platform: Platform::Claude,
            cwd: who.dir().join("project"),
            homes: AgentHomes {
                claude: agents.join(".claude"),
                codex: agents.join(".codex"),
                gemini: agents.join(".gemini"),
            },
            now_ms: tapes::now_ms(),
            fresh_id: true,
        },
    )?;
    let path = done.files[0].path.clone();
    let text = std::fs::read_to_string(&path)?;
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap_or_default();
    let line = |uuid: &str, parent: &serde_json::Value, kind: &str, message: serde_json::Value| {
        serde_json::json!({"parentUuid": parent, "isSidechain": false, "type": kind,
            "sessionId": done.agent_session_id, "cwd": last["cwd"], "uuid": uuid,
            "timestamp": "2026-12-06T12:00:00.000Z", "message": message})
        .to_string()
    };
    let more = [
        line(
            "c0ffee00-0000-4000-8000-000000000001",
            &last["uuid"],
            "user",
            serde_json::json!({"role": "user", "content": prompt}),
        ),
        line(
            "c0ffee00-0000-4000-8000-000000000002",
            &serde_json::json!("c0ffee00-0000-4000-8000-000000000001"),
            "assistant",
            serde_json::json!({"id": "msg_standin_1", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Streaming it is: see src/stream.rs."}],
                "stop_reason": "end_turn", "usage": {"input_tokens": 900, "output_tokens": 12}}),
        ),
    ];
    std::fs::write(&path, format!("{text}{}\n", more.join("\n")))?;
    Ok(path)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args
        .iter()
        .position(|a| a == "--sessions")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(60);
    let started = Instant::now();

    println!("1. three teammates start their nodes on 127.0.0.1 (relays and discovery off)");
    let alice = teammate("alice").await?;
    let bob = teammate("bob").await?;
    let carol = teammate("carol").await?;
    for t in [&alice, &bob, &carol] {
        println!("   {:5} node {}", t.name, t.addr().ticket());
    }

    println!("2. alice creates team \"platform\" and invites bob and carol");
    let team = team::create(&alice.store, &alice.identity, "platform", tapes::now_ms())?.team_id();
    join(&alice, &bob, &team).await?;
    join(&alice, &carol, &team).await?;

    println!("3. alice imports {count} sessions; shares 3 with the team and 1 publicly; the rest stay private");
    let incoming: Vec<Incoming> = (0..count)
        .map(|i| Incoming {
            session: sample::session(2026, i, Shape::default()),
            path: String::new(),
        })
        .collect();
    let report = ingest(&alice.store, &incoming, tapes::now_ms())?;
    let ids: Vec<SessionId> = report.sessions.iter().map(|s| s.id).collect();
    for id in &ids[..3] {
        alice.share(id, Audience::Team(team), SecretPolicy::Redact)?;
    }
    alice.share(&ids[3], Audience::Public, SecretPolicy::Redact)?;
    println!("   alice has {} sessions", alice.sessions()?);

    println!("4. bob fetches from alice (team shares travel sealed with the team key)");
    let report = bob.fetch_from(&alice).await?;
    println!("   {}", describe(&report));
    println!(
        "   bob now has {} sessions; none of alice's private ones",
        bob.sessions()?
    );

    println!("5. carol fetches from bob: teammates pass on what the team may see");
    let report = carol.fetch_from(&bob).await?;
    println!("   {}", describe(&report));

    println!("6. nothing changed: bob fetches again");
    let report = bob.fetch_from(&alice).await?;
    println!("   {}", describe(&report));

    println!("7. bob forks alice's first shared session for Claude Code, continues it there, and pushes the fork to alice");
    let fork = lineage::fork(
        &bob.store,
        &ids[0],
        &CopyOptions {
            at: None,
            title: Some("bob's take on the refactor".into()),
            tags: vec![],
            description: None,
            private: false,
        },
        false,
        tapes::now_ms(),
    )?;
    let agent_file = continue_in_agent(&bob, &fork, "Try the streaming variant instead")?;
    println!("   bob's agent appended a turn to {}", agent_file.display());
    let imported =
        tapes::resume::sync::import_agent_files(&bob.store, &[agent_file], tapes::now_ms())?;
    println!(
        "   the import attaches exactly the new turns to the fork: {} new messages",
        imported.report.new_nodes
    );
    bob.share(&fork, Audience::Team(team), SecretPolicy::Redact)?;
    let conn = bob.dial(&alice, &alice.name).await?;
    let nodes = conn.push(&bob.store, &bob.identity, fork, None).await?;
    let last = alice
        .store
        .chain(
            &alice
                .store
                .session(&fork)?
                .expect("alice holds the fork")
                .head,
        )?
        .pop()
        .map(|(_, node)| node.body.plain_text())
        .unwrap_or_default();
    println!(
        "   pushed fork {} of session {} to alice ({nodes} new nodes); its last message there: {last:?}",
        fork.short(),
        ids[0].short()
    );

    println!("8. alice branches her own session at message 4 and pushes the branch to bob's node");
    let branch = lineage::branch(
        &alice.store,
        &ids[1],
        &CopyOptions {
            at: Some(4),
            title: Some("alternative approach".into()),
            tags: vec![],
            description: None,
            private: false,
        },
        tapes::now_ms(),
    )?;
    let conn = alice.dial(&bob, &bob.name).await?;
    let nodes = conn
        .push(&alice.store, &alice.identity, branch, None)
        .await?;
    println!(
        "   pushed branch {}: {nodes} new nodes on bob's node",
        branch.short()
    );

    println!("9. alice continues the branch on two machines from the same base: one push wins");
    let base = alice.store.session(&branch)?.map(|r| r.head);
    append(&alice, &branch, "continued on the laptop")?;
    conn.push(&alice.store, &alice.identity, branch, base)
        .await?;
    println!("   laptop: pushed");
    // The desktop still thinks the node is at `base`, and continued it otherwise. (The
    // laptop's own push again would find its update there and succeed: SPEC.md §10.)
    append(&alice, &branch, "continued on the desktop")?;
    match conn.push(&alice.store, &alice.identity, branch, base).await {
        Err(e @ PeerError::Conflict { .. }) => println!("   desktop: refused: {e}"),
        other => anyhow::bail!("the stale push should conflict: {other:?}"),
    }
    conn.close();

    println!(
        "10. a relay keeps the team's sessions while laptops are closed; it holds no team key"
    );
    let relay_dir = tempfile::tempdir()?;
    // The free tier (the default) allows 3 members per team; this team will have 4.
    std::fs::write(
        relay_dir.path().join("relay.toml"),
        "[default]\nmembers = 10\n",
    )?;
    println!("   relay.toml: the free tier, with room for 10 members");
    let relay = start(
        relay_dir.path(),
        &RelayOptions {
            bind: "127.0.0.1:0".parse()?,
            http: Some("127.0.0.1:0".parse()?),
            network: tapes::peer::network::NetworkMode::Local,
            public_url: None,
        },
        Arc::new(|line| println!("      [relay] {line}")),
    )
    .await?;
    println!("   relay node {}", relay.ticket.ticket());
    alice
        .relay(&relay.ticket)
        .await?
        .register(&alice.store, &team)
        .await?;
    println!("   alice (owner) registered \"platform\" on it");
    const SECRET: &str = "the database failover runbook (team only)";
    let plan = ids[4];
    append(&alice, &plan, SECRET)?;
    alice.share(&plan, Audience::Team(team), SecretPolicy::Redact)?;
    let report = alice.relay_sync(&relay.ticket).await?;
    println!(
        "   alice syncs: {} sessions deposited (sealed to the team), {} manifests",
        report.deposited.len(),
        report.manifests_sent
    );
    println!("   alice closes her laptop; bob syncs with the relay instead");
    let report = bob.relay_sync(&relay.ticket).await?;
    println!("   {}", describe(&report.fetched));
    anyhow::ensure!(
        bob.store.session(&plan)?.is_some(),
        "bob should have the plan"
    );
    let dave = teammate("dave").await?;
    let chain = team::load(&alice.store, &team)?;
    let (code, _) = team::invite(
        &alice.store,
        &alice.identity,
        &chain,
        InviteOptions {
            expires_ms: None,
            max_uses: 1,
            email: None,
            role: TeamRole::Member,
            addrs: team::relay_hints(&alice.identity, &relay.ticket.ticket()),
        },
        tapes::now_ms(),
    )?;
    let (invite, request) = team::join_request(&dave.identity, &code, tapes::now_ms())?;
    let inviter = team::inviter_recipient(&invite)
        .ok_or_else(|| anyhow::anyhow!("the invite should name the inviter's key"))?;
    let waiting = dave
        .relay(&relay.ticket)
        .await?
        .join_at_relay(&request, &inviter)
        .await?;
    println!(
        "   dave asks to join while alice is away: {}",
        if waiting.is_none() {
            "the request waits at the relay"
        } else {
            "answered"
        }
    );
    let report = alice.relay_sync(&relay.ticket).await?;
    for (_, who, accepted) in &report.joins_answered {
        println!(
            "   alice's next sync {} {who}",
            if *accepted { "accepts" } else { "refuses" }
        );
    }
    let answer = dave
        .relay(&relay.ticket)
        .await?
        .join_at_relay(&request, &inviter)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the answer should wait at the relay"))?;
    team::complete_join(&dave.store, &dave.identity, &invite.team, answer)?;
    let report = dave.relay_sync(&relay.ticket).await?;
    println!("   dave joined and synced: {}", describe(&report.fetched));
    let http = relay
        .http
        .ok_or_else(|| anyhow::anyhow!("no public page"))?;
    let public = http_status(http, &format!("/s/{}", ids[3].to_hex()))?;
    let team_only = http_status(http, &format!("/s/{}", plan.to_hex()))?;
    println!(
        "   public page: GET /s/<public session> -> {public}, GET /s/<team session> -> {team_only}"
    );
    relay.shutdown().await;
    let leaks = files_containing(relay_dir.path(), SECRET)?;
    println!(
        "   files under the relay's data dir containing the team-only text: {}",
        leaks
    );
    anyhow::ensure!(leaks == 0, "the relay holds plaintext");

    println!("11. every store verifies");
    for t in [&alice, &bob, &carol, &dave] {
        let report = tapes::store::fsck::fsck(&t.store, |_| {})?;
        println!(
            "   {:5} {} sessions, fsck {}",
            t.name,
            t.sessions()?,
            if report.is_clean() {
                "clean"
            } else {
                "DAMAGED"
            }
        );
        anyhow::ensure!(report.is_clean(), "fsck found damage in {}'s store", t.name);
    }
    println!("done in {:.1?}", started.elapsed());
    for t in [alice, bob, carol, dave] {
        t.router.shutdown().await.ok();
    }
    Ok(())
}
