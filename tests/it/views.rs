//! The views as a person meets them (issue 19): `tapes shared` as a feed with filters,
//! `tapes search --shared`, `tapes sessions` and `tapes show` with owner, visibility, status,
//! cost and lineage, tables that fit the terminal, `tapes log --graph`, and `tapes web`: its
//! JSON API over real HTTP requests (token refused, bad filter, unknown teammate, a session
//! removed while shown) and its page in headless Chromium (DOM asserted, screenshot saved).
//!
//! The store: alice's (the viewer), with the real transcripts of `../shared/fixtures` when
//! present, generated sessions of hers, a branch and a fork, and teammates bob and carol in one
//! team: bob's session (also in alice's store) shared with the team, carol's shared but not
//! fetched yet, one of alice's shared publicly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use tapes::home::Home;
use tapes::identity::Identity;
use tapes::import::ParsedSession;
use tapes::protocol::manifest::TeamRole;
use tapes::protocol::{MemberId, SessionId, TeamId};
use tapes::session::pricing::PriceTable;
use tapes::session::sample::{self, Shape};
use tapes::session::{session_ref_key, SessionRecord, Visibility};
use tapes::store::backend::RefUpdate;
use tapes::store::Store;
use tapes::team::{self, InviteOptions};
use tapes::views::listing::{self, Facts, Filter, Snapshot};

const HOUR: i64 = 3_600_000;

struct World {
    dir: tempfile::TempDir,
}

struct Person {
    name: &'static str,
    home: PathBuf,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }

    fn person(&self, name: &'static str) -> Person {
        let person = Person {
            name,
            home: self.work().join(format!("{name}-home")),
        };
        self.ok(&person, &["init", "--name", name]);
        person
    }

    fn cmd(&self, who: &Person, args: &[&str]) -> Command {
        let mut cmd = super::util::tapes(&who.home);
        cmd.env_remove("COLUMNS")
            .current_dir(self.work())
            .args(args);
        cmd
    }

    fn run(&self, who: &Person, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(who, args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn ok(&self, who: &Person, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(who, args);
        assert_eq!(
            code,
            0,
            "{} $ tapes {}\nstdout: {stdout}\nstderr: {stderr}",
            who.name,
            args.join(" ")
        );
        stdout
    }

    /// Imports `session` as a Claude Code transcript into `who`'s store.
    fn import(&self, who: &Person, session: &ParsedSession) -> SessionId {
        let dir = self.work().join(format!("{}-transcripts", who.name));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.jsonl", session.source_id));
        std::fs::write(&file, sample::claude_jsonl(session)).unwrap();
        self.ok(who, &["import", file.to_str().unwrap()]);
        SessionId::derive("claude", &session.source_id)
    }
}

impl Person {
    fn store(&self) -> Store {
        Store::open(&Home::at(&self.home).store_dir()).unwrap()
    }

    fn identity(&self) -> Identity {
        Identity::load(&Home::at(&self.home)).unwrap()
    }

    fn id(&self) -> MemberId {
        MemberId(self.identity().verifying_key().to_bytes())
    }
}

fn team(owner: &Person, name: &str, others: &[&Person]) -> TeamId {
    let now = tapes::now_ms();
    let (store, me) = (owner.store(), owner.identity());
    let team = team::create(&store, &me, name, now).unwrap().team_id();
    for other in others {
        let chain = team::load(&store, &team).unwrap();
        let options = InviteOptions {
            expires_ms: Some(now + HOUR),
            max_uses: 1,
            email: None,
            role: TeamRole::Member,
            addrs: vec![],
        };
        let (code, _) = team::invite(&store, &me, &chain, options, now).unwrap();
        let (their_store, them) = (other.store(), other.identity());
        let (invite, request) = team::join_request(&them, &code, now).unwrap();
        let response = team::accept_join(&store, &me, &request, now).unwrap();
        team::complete_join(&their_store, &them, &invite.team, response).unwrap();
    }
    let versions = team::load(&store, &team).unwrap().versions().to_vec();
    for other in others {
        let their_store = other.store();
        for result in team::receive(&their_store, &team, versions.clone()).unwrap() {
            result.unwrap();
        }
    }
    team
}

/// Every share record `from` holds, written into `to`'s store (as replication would).
fn copy_shares(from: &Person, to: &Person) {
    let records: Vec<(Vec<u8>, Vec<u8>)> = from
        .store()
        .storage()
        .refs(b"share/")
        .map(|e| e.unwrap())
        .collect();
    let target = to.store();
    let updates: Vec<RefUpdate> = records
        .into_iter()
        .map(|(key, value)| RefUpdate {
            expected: target.storage().get_ref(&key).unwrap(),
            key,
            new: Some(value),
        })
        .collect();
    target.commit(&[], &updates).unwrap();
}

fn set_record(store: &Store, id: &SessionId, change: impl FnOnce(&mut SessionRecord)) {
    let raw = store.session_raw(id).unwrap().unwrap();
    let mut record = SessionRecord::decode(&raw).unwrap();
    change(&mut record);
    store
        .commit(
            &[],
            &[RefUpdate {
                key: session_ref_key(id),
                expected: Some(raw),
                new: Some(record.encode()),
            }],
        )
        .unwrap();
}

/// What the fixture world made.
struct Fixture {
    world: World,
    alice: Person,
    mine: Vec<SessionId>,
    branch: SessionId,
    fork: SessionId,
    bobs: SessionId,
    carols: SessionId,
}

/// Runs `args` for `who` and returns the one session it made.
fn made(world: &World, who: &Person, args: &[&str]) -> SessionId {
    let ids = |p: &Person| -> Vec<SessionId> {
        p.store()
            .sessions()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    let before = ids(who);
    world.ok(who, args);
    let new: Vec<SessionId> = ids(who)
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "tapes {} made {new:?}", args.join(" "));
    new[0]
}

fn fixture() -> Fixture {
    let world = World::new();
    let alice = world.person("alice");
    let bob = world.person("bob");
    let carol = world.person("carol");
    if tapes::real_fixtures::present() {
        world.ok(
            &alice,
            &["import", tapes::real_fixtures::dir().to_str().unwrap()],
        );
    }
    // Sessions of the last few weeks, so the dashboard's 30 days have something to show.
    let day = 24 * HOUR;
    let recent = |days_ago: i64| Shape {
        start_ms: tapes::now_ms() - days_ago * day - 3 * HOUR,
        ..Shape::default()
    };
    let mine: Vec<SessionId> = (0..4)
        .map(|i| world.import(&alice, &sample::session(41, i, recent(1 + 6 * i as i64))))
        .collect();
    let bob_session = sample::session(42, 0, recent(2));
    let bobs = world.import(&bob, &bob_session);
    let carols = world.import(&carol, &sample::session(43, 0, recent(3)));
    let paper = team(&alice, "Paper Compute", &[&bob, &carol]);
    // More of bob's and carol's work that reached alice's store (team history, not shared).
    for (who, seed, n) in [(&bob, 44, 5), (&carol, 45, 3)] {
        for i in 0..n {
            let id = world.import(&alice, &sample::session(seed, i, recent(4 * i as i64 + 1)));
            let (owner, store) = (who.id(), alice.store());
            set_record(&store, &id, |r| r.owner = Some(owner));
        }
    }

    // Bob shares with the team; alice has his session (fetched) and the share record.
    world.ok(
        &bob,
        &[
            "share",
            &bobs.short(),
            "--team",
            "Paper Compute",
            "--note",
            "look at the retry loop",
            "--allow-secrets",
        ],
    );
    world.import(&alice, &bob_session);
    {
        let store = alice.store();
        let bob_id = bob.id();
        set_record(&store, &bobs, |r| {
            r.owner = Some(bob_id);
            r.visibility = Visibility::Team(paper);
        });
    }
    copy_shares(&bob, &alice);
    // Carol shares too, but her session has not reached alice yet.
    world.ok(
        &carol,
        &[
            "share",
            &carols.short(),
            "--team",
            "Paper Compute",
            "--title",
            "Flaky arm64 build",
            "--allow-secrets",
        ],
    );
    copy_shares(&carol, &alice);
    // Alice shares one publicly and one with the team, branches one and forks bob's.
    world.ok(
        &alice,
        &["share", &mine[0].short(), "--public", "--allow-secrets"],
    );
    world.ok(
        &alice,
        &[
            "share",
            &mine[1].short(),
            "--team",
            "Paper Compute",
            "--allow-secrets",
        ],
    );
    let branch = made(
        &world,
        &alice,
        &[
            "branch",
            &mine[1].short(),
            "--at",
            "3",
            "--title",
            "Try plan B",
            "--no-track",
            "--allow-secrets",
        ],
    );
    let fork = made(
        &world,
        &alice,
        &[
            "fork",
            &bobs.short(),
            "--at",
            "2",
            "--no-track",
            "--allow-secrets",
        ],
    );
    Fixture {
        world,
        alice,
        mine,
        branch,
        fork,
        bobs,
        carols,
    }
}

#[test]
fn the_views_show_mine_shared_and_team_with_lineage() {
    let f = fixture();
    let store = f.alice.store();
    let now = tapes::now_ms();
    let snapshot = Snapshot::load(&store, Facts::Chains, &PriceTable::defaults(), now).unwrap();

    let mine = snapshot.my_sessions();
    for id in f.mine.iter().chain([&f.branch, &f.fork]) {
        let row = mine.find(id).unwrap_or_else(|| panic!("{id} is mine"));
        assert_eq!(row.owner_name, "you");
        assert!(row.status.is_some() && row.cost.is_some(), "{row:?}");
        assert!(
            !row.title.is_empty() && row.title != "(no prompt)",
            "{row:?}"
        );
    }
    assert!(mine.find(&f.bobs).is_none(), "bob's is not mine");
    let public = mine.find(&f.mine[0]).unwrap();
    assert_eq!(public.visibility.label(), "public");
    assert_eq!(
        mine.find(&f.mine[1]).unwrap().visibility.label(),
        "Paper Compute"
    );
    let branch = mine.find(&f.branch).unwrap();
    let origin = branch.origin.as_ref().unwrap();
    assert_eq!(
        (origin.kind, origin.parent, origin.base_count),
        (listing::OriginKind::Branch, f.mine[1], 3)
    );
    assert_eq!(branch.title, "Try plan B");
    let fork = mine.find(&f.fork).unwrap().origin.clone().unwrap();
    assert_eq!(
        (fork.kind, fork.parent, fork.base_count),
        (listing::OriginKind::Fork, f.bobs, 2)
    );

    // Shared with me: bob's (fetched) and carol's (not yet), newest first, both unread.
    let shared = snapshot.shared_with_me();
    let ids: Vec<SessionId> = shared.rows().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![f.carols, f.bobs]);
    let bobs = &shared.rows()[1];
    assert!(bobs.present && bobs.share.as_ref().unwrap().unread);
    assert_eq!(bobs.owner_name, "bob");
    assert_eq!(bobs.note.as_deref(), Some("look at the retry loop"));
    let carols = &shared.rows()[0];
    assert!(!carols.present);
    assert_eq!(carols.title, "Flaky arm64 build");
    assert!(matches!(
        listing::transcript(&store, carols),
        Err(listing::ListingError::NotFetched { .. })
    ));
    // Filters on the feed; a teammate nobody is named says who is here.
    let by = |text: &str| {
        let filter = Filter::parse(text, now).unwrap();
        shared.check(&filter).map(|()| shared.matching(&filter))
    };
    assert_eq!(by("teammate:bo").unwrap(), vec![1]);
    assert_eq!(by("retry loop").unwrap(), vec![1]);
    assert_eq!(by("flaky").unwrap(), vec![0]);
    let err = by("teammate:zed").unwrap_err().to_string();
    assert!(
        err.contains("alice") && err.contains("bob") && err.contains("carol"),
        "{err}"
    );

    // The team: everyone's sessions in this store, and the dashboard over them.
    let team_rows = snapshot.team(None);
    assert!(team_rows.find(&f.bobs).is_some() && team_rows.find(&f.mine[2]).is_some());
    let dashboard = listing::team_dashboard(
        &store,
        &snapshot,
        None,
        &PriceTable::defaults(),
        3650 * 24 * HOUR,
    )
    .unwrap();
    assert_eq!(dashboard.scope, "Paper Compute");
    assert_eq!(dashboard.members, 3);
    assert!(
        dashboard.stats.current.sessions >= 5,
        "{:?}",
        dashboard.stats.current
    );
    assert!(dashboard.stats.by_member.iter().any(|m| m.label == "bob"));
    assert!(!dashboard.recent_shares.is_empty());

    // The lineage of the branch: the original with its branch.
    let graph = snapshot.lineage(&f.branch).unwrap();
    assert_eq!(graph.root, f.mine[1]);
    assert_eq!(graph.nodes.len(), 2);
    assert_eq!(graph.edges[0].at, 3);
    let picture = graph.picture(now, None);
    let lines: Vec<&str> = picture.lines().collect();
    assert!(
        lines[0].starts_with(&format!("● {}", f.mine[1].short())),
        "{picture}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "└─● {}  branch at #3 by you, just now · Try plan B",
            f.branch.short()
        )),
        "{picture}"
    );
    assert!(lines[1].ends_with("◀"), "{picture}");

    // A session removed while shown: a clear error, not a crash.
    let row = mine.find(&f.mine[3]).unwrap().clone();
    store
        .commit(
            &[],
            &[RefUpdate {
                key: session_ref_key(&row.id),
                expected: store.session_raw(&row.id).unwrap(),
                new: None,
            }],
        )
        .unwrap();
    let gone = listing::transcript(&store, &row).unwrap_err().to_string();
    assert!(
        gone.contains("no longer in this store") && gone.contains("reload"),
        "{gone}"
    );
}

#[test]
fn the_cli_shows_the_feed_columns_and_the_graph() {
    let f = fixture();
    let (w, alice) = (&f.world, &f.alice);

    // The feed: groups, sharer, where it went, title, note.
    let feed = w.ok(alice, &["shared"]);
    let lines: Vec<&str> = feed.lines().collect();
    assert!(
        lines[0].contains("ID") && lines[0].contains("SHARER"),
        "{feed}"
    );
    assert_eq!(lines[1], "TODAY", "{feed}");
    assert!(
        lines[2].starts_with("●") && lines[2].contains(&f.carols.short()),
        "{feed}"
    );
    assert!(
        lines[2].contains("just now") && lines[2].contains("carol"),
        "{feed}"
    );
    assert!(
        lines[2].contains("Paper Compute") && lines[2].contains("Flaky arm64 build"),
        "{feed}"
    );
    assert!(
        lines[3].contains("bob") && lines[3].contains("\"look at the retry loop\""),
        "{feed}"
    );
    let only_bob = w.ok(alice, &["shared", "--sharer", "BO"]);
    assert!(only_bob.contains(&f.bobs.short()) && !only_bob.contains(&f.carols.short()));
    let (code, _, err) = w.run(alice, &["shared", "--sharer", "zed"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--sharer zed: no teammate has that name; teammates here: alice, bob, carol"),
        "{err}"
    );
    let none = w.ok(alice, &["shared", "--project", "no-such-project"]);
    assert_eq!(
        none,
        "none of the 2 sessions shared with you matches; `tapes shared` lists them all\n"
    );
    let (code, _, err) = w.run(alice, &["shared", "--since", "soon"]);
    assert_eq!(code, 1);
    assert!(err.contains("--since"), "{err}");
    let json: Value = serde_json::from_str(&w.ok(alice, &["shared", "--json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows[1]["session"], f.bobs.to_hex());
    assert_eq!(rows[1]["sharer_name"], "bob");
    assert_eq!(rows[1]["group"], "TODAY");
    assert_eq!(rows[1]["present"], true);
    assert!(rows[1]["cost"].as_f64().is_some() && rows[1]["project"].is_string());
    assert_eq!(rows[0]["present"], false);

    // Search within what is shared with me.
    let shared_hits = w.ok(alice, &["search", "--shared"]);
    assert_eq!(shared_hits.trim(), f.bobs.to_hex(), "{shared_hits}");

    // `tapes sessions`: the new columns; at 100 columns nothing wraps and ids stay whole.
    let table = w.ok(alice, &["sessions"]);
    let header = table.lines().next().unwrap();
    for column in ["OWNER", "VISIBILITY", "STATUS", "COST", "FROM", "TITLE"] {
        assert!(header.contains(column), "{header}");
    }
    let fork_line = table
        .lines()
        .find(|l| l.starts_with(&f.fork.short()))
        .unwrap();
    assert!(
        fork_line.contains(&format!("fork of {} #2", f.bobs.short())),
        "{fork_line}"
    );
    for width in [160, 120, 80] {
        let out = w
            .cmd(alice, &["sessions"])
            .env("COLUMNS", width.to_string())
            .output()
            .unwrap();
        let narrow = String::from_utf8(out.stdout).unwrap();
        assert_eq!(narrow.lines().count(), table.lines().count());
        for line in narrow.lines() {
            let n = line.chars().count();
            assert!(n <= width, "{n} > {width}: {line}");
        }
        // Ids are never cut; titles are.
        assert!(
            narrow.contains(&f.branch.short()) && narrow.contains('…'),
            "{narrow}"
        );
        if width == 160 {
            assert!(
                narrow.contains("FROM") && narrow.contains("VISIBILITY"),
                "{narrow}"
            );
        }
    }
    let json: Value = serde_json::from_str(&w.ok(alice, &["sessions", "--json"])).unwrap();
    let fork = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == f.fork.to_hex())
        .unwrap();
    assert_eq!(fork["origin"]["kind"], "fork");
    assert_eq!(fork["origin"]["base_count"], 2);
    assert_eq!(fork["owner_name"], "you");
    assert!(
        fork["status"].is_string() && fork["cost_usd"].is_number(),
        "{fork}"
    );

    // `tapes show`: owner, visibility, status, cost, parent and base, sharer and note.
    let shown = w.ok(alice, &["show", &f.fork.short()]);
    assert!(shown.contains("owner   you · visibility "), "{shown}");
    assert!(
        shown.contains(" · status ") && shown.contains(" · cost $"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "fork    of session {} after message 2",
            f.bobs.short()
        )),
        "{shown}"
    );
    let shown = w.ok(alice, &["show", &f.bobs.short()]);
    assert!(
        shown.contains("owner   bob · visibility team Paper Compute"),
        "{shown}"
    );
    assert!(
        shown.contains("shared  by bob with Paper Compute just now"),
        "{shown}"
    );
    assert!(shown.contains("note    look at the retry loop"), "{shown}");

    // `tapes log --graph`: the family of bob's session as alice sees it.
    let graph = w.ok(alice, &["log", "--graph", &f.fork.short()]);
    let lines: Vec<&str> = graph.lines().collect();
    assert_eq!(lines.len(), 2, "{graph}");
    assert!(
        lines[0].starts_with(&format!("● {}", f.bobs.short())) && lines[0].contains("bob"),
        "{graph}"
    );
    assert!(
        lines[1].contains("fork at #2 by you") && lines[1].ends_with("◀"),
        "{graph}"
    );
    let json: Value =
        serde_json::from_str(&w.ok(alice, &["log", "--graph", "--json", &f.fork.short()])).unwrap();
    assert_eq!(json["edges"][0]["kind"], "fork");
}

// ------------------------------------------------------------------------------------------
// tapes web
// ------------------------------------------------------------------------------------------

/// A `tapes web` server on alice's store, in this process, on a free loopback port.
struct Server {
    addr: SocketAddr,
    token: String,
    /// The store the server reads (the test changes it underneath).
    store: Arc<Store>,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    fn start(store: Store) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(store);
        let web =
            Arc::new(tapes::views::web::Web::new(store.clone(), PriceTable::defaults()).unwrap());
        let token = web.token().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = runtime.block_on(async {
            let listener = tapes::views::web::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(tapes::views::web::serve(web, listener, async {
                let _ = stopped.await;
            }));
            addr
        });
        Server {
            addr,
            token,
            store,
            runtime,
            stop: Some(stop),
        }
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("http://{}{path}{sep}token={}", self.addr, self.token)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = &self.runtime;
    }
}

/// A plain HTTP/1.1 GET: status and body.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = response[9..12].parse().unwrap();
    let body = match response.split_once("\r\n\r\n") {
        Some((head, body))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            unchunk(body)
        }
        Some((_, body)) => body.to_string(),
        None => String::new(),
    };
    (status, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn api(server: &Server, path: &str) -> (u16, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, body) = get(
        server.addr,
        &format!("{path}{sep}token={}", server.token),
        &[],
    );
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, value)
}

#[test]
fn the_web_api_answers_scripts_and_refuses_strangers() {
    let f = fixture();
    let server = Server::start(f.alice.store());

    // No token, a wrong token: refused, saying what would work.
    for path in [
        "/",
        "/api/sessions",
        "/api/session/abc",
        "/api/sessions?token=nope",
    ] {
        let (status, body) = get(server.addr, path, &[]);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            body.contains("Open the exact URL `tapes web` printed"),
            "{body}"
        );
    }
    let bearer = format!("Bearer {}", server.token);
    let (status, body) = get(server.addr, "/api/stats", &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");

    let (status, mine) = api(&server, "/api/sessions");
    assert_eq!(status, 200);
    let rows = mine["rows"].as_array().unwrap();
    assert!(rows.len() >= 6, "{mine}");
    assert_eq!(mine["counts"]["shared"], 2);
    assert!(rows.iter().all(|r| r["owner_name"] == "you"));
    let (_, filtered) = api(&server, "/api/sessions?q=plan+b");
    assert_eq!(filtered["matched"], 1, "{filtered}");
    assert_eq!(filtered["rows"][0]["id"], f.branch.to_hex());

    let (_, shared) = api(&server, "/api/shared");
    let rows = shared["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["group"], "TODAY");
    assert_eq!(rows[1]["share"]["sharer_name"], "bob");

    // Bad input: a bad filter value, an unknown teammate, an unknown session.
    let (status, bad) = api(&server, "/api/sessions?q=cost%3A%3Eabc");
    assert_eq!(status, 400);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("is not a cost; use >1"),
        "{bad}"
    );
    let (status, bad) = api(&server, "/api/shared?q=teammate%3Azed");
    assert_eq!(status, 400);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("teammate:zed matches nobody here"),
        "{bad}"
    );
    let (status, bad) = api(&server, "/api/session/0123456789abcdef0123456789abcdef");
    assert_eq!(status, 404);
    assert!(
        bad["error"].as_str().unwrap().contains("not in this store"),
        "{bad}"
    );
    let (status, bad) = api(&server, &format!("/api/session/{}", f.carols.to_hex()));
    assert_eq!(status, 404);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("not in this store yet"),
        "{bad}"
    );
    let (status, bad) = api(&server, "/api/stats?since=forever");
    assert_eq!(status, 400, "{bad}");

    // One session: row, lineage, messages as HTML with markdown rendered and HTML escaped.
    let (status, one) = api(&server, &format!("/api/session/{}", f.branch.short()));
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["session"]["title"], "Try plan B");
    assert_eq!(one["lineage"]["nodes"].as_array().unwrap().len(), 2);
    let html = one["html"].as_str().unwrap();
    assert_eq!(html.matches("<section class=\"msg").count(), 3, "{html}");
    assert!(!html.contains("<script"));

    // The dashboard.
    let (_, stats) = api(&server, "/api/stats?since=3650d");
    assert_eq!(stats["scope"], "Paper Compute");
    assert!(
        stats["stats"]["by_member"].as_array().unwrap().len() >= 2,
        "{stats}"
    );
    assert!(stats["stats"]["by_day"].as_array().unwrap().len() >= 3650);

    // A session removed while the page shows it: 404 with what happened.
    let (status, _) = api(&server, &format!("/api/session/{}", f.mine[3].to_hex()));
    assert_eq!(status, 200);
    let store = &server.store;
    store
        .commit(
            &[],
            &[RefUpdate {
                key: session_ref_key(&f.mine[3]),
                expected: store.session_raw(&f.mine[3]).unwrap(),
                new: None,
            }],
        )
        .unwrap();
    let (status, gone) = api(&server, &format!("/api/session/{}", f.mine[3].to_hex()));
    assert_eq!(status, 404);
    assert!(
        gone["error"].as_str().unwrap().contains("reload the list"),
        "{gone}"
    );
}

/// Whether headless Chromium is here; without it the browser test skips with one line,
/// unless `TAPES_REQUIRE_BROWSER` is set (CI installs it).
fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return Some(path);
        }
    }
    if std::env::var_os("TAPES_REQUIRE_BROWSER").is_some() {
        panic!(
            "TAPES_REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)"
        );
    }
    eprintln!("skipped: chromium is not installed (apt-get install chromium); CI requires it");
    None
}

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
fn headless(browser: &str, url: &str, extra: &[&str], profile: &Path) -> String {
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=15000",
            "--window-size=1440,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_web_page_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let f = fixture();
    let server = Server::start(f.alice.store());
    let profile = f.world.work().join("chromium-profile");

    // My sessions, filtered through ?q=, with the branch opened.
    let url = format!("{}#mine/{}", server.url("/?q=plan"), f.branch.to_hex());
    let dom = headless(&browser, &url, &["--dump-dom"], &profile);
    assert!(dom.contains("id=\"tab-mine\""), "{dom}");
    assert_eq!(dom.matches("class=\"row").count(), 1, "{dom}");
    assert!(
        dom.contains("<h2 id=\"session-title\">Try plan B</h2>"),
        "{dom}"
    );
    assert!(dom.contains("id=\"lineage\""), "{dom}");
    assert!(dom.contains("branch at #3 by you"), "{dom}");
    assert!(dom.contains("<section class=\"msg role-user\""), "{dom}");

    // Shared with me: the feed's group and both shares.
    let dom = headless(
        &browser,
        &format!("{}#shared", server.url("/")),
        &["--dump-dom"],
        &profile,
    );
    assert!(dom.contains("<div class=\"group\">TODAY</div>"), "{dom}");
    assert!(
        dom.contains("Flaky arm64 build") && dom.contains("look at the retry loop"),
        "{dom}"
    );

    // The Team dashboard: four numbers and three SVG charts.
    let team = format!("{}#team", server.url("/"));
    let dom = headless(&browser, &team, &["--dump-dom"], &profile);
    assert!(dom.contains("id=\"kpis\""), "{dom}");
    for id in ["chart-day", "chart-member", "chart-model"] {
        assert!(dom.contains(&format!("<svg id=\"{id}\"")), "{id}: {dom}");
    }
    assert!(dom.matches("<rect class=\"bar\"").count() >= 30, "{dom}");

    // A bad filter shows its message in place; nothing else breaks.
    let dom = headless(
        &browser,
        &server.url("/?q=cost%3A%3Eabc"),
        &["--dump-dom"],
        &profile,
    );
    assert!(dom.contains("is not a cost; use &gt;1"), "{dom}");
    // Without the token the page is refused with the message.
    let dom = headless(
        &browser,
        &format!("http://{}/", server.addr),
        &["--dump-dom"],
        &profile,
    );
    assert!(dom.contains("401 Unauthorized"), "{dom}");

    // A screenshot of the dashboard, kept with the test's output.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        &team,
        &[&format!("--screenshot={}", shot.display())],
        &profile,
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn tapes_web_prints_a_tokened_loopback_url_and_serves_it() {
    let world = World::new();
    let alice = world.person("alice");
    world.import(&alice, &sample::session(46, 0, Shape::default()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapes"))
        .args(["web", "--bind", "127.0.0.1:0"])
        .env("TAPES_HOME", &alice.home)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let url = first
        .trim()
        .strip_prefix("tapes web: ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let rest = url.strip_prefix("http://127.0.0.1:").expect("loopback");
    let (port, token) = rest.split_once("/?token=").expect("a token in the URL");
    assert_eq!(token.len(), 32, "{url}");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, body) = get(addr, "/api/sessions", &[]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(addr, &format!("/api/sessions?token={token}"), &[]);
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"], 1, "{json}");
    let (status, page) = get(addr, &format!("/?token={token}"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains("<title>tapes</title>"));
    child.kill().unwrap();
    child.wait().unwrap();
}
