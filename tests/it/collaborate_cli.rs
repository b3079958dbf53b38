//! The collaboration commands through the real binary: `tapes remote`, `tapes pull`,
//! `tapes push`, and `tapes branch`/`tapes fork` with the project's `.tapes/tracking.json`.
//!
//! Alice has a tapes home; a second home (the "server") is her path remote. The server is seeded
//! through the library with sessions owned by Alice's identity, plus one owned by someone else.
//! Commands run with a project directory as cwd, which is where the tracking file goes.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{json, Value};
use tapes::import::ingest::{ingest, Incoming};
use tapes::protocol::{
    ContentBlock, MemberId, Node, NodeBody, NodeId, NodeMeta, Role, SessionId, StoredObject,
};
use tapes::session::sample::{self, Shape};
use tapes::session::{session_ref_key, SessionRecord, Visibility};
use tapes::store::backend::RefUpdate;
use tapes::store::Store;

struct World {
    _dir: tempfile::TempDir,
    alice: PathBuf,
    server: PathBuf,
    project: PathBuf,
    /// Two sessions of Alice's on the server, and one of someone else's (public).
    mine: SessionId,
    second: SessionId,
    theirs: SessionId,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (alice, server, project) = (
        dir.path().join("alice"),
        dir.path().join("server"),
        dir.path().join("project"),
    );
    std::fs::create_dir_all(&server).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    let mut w = World {
        alice,
        server,
        project,
        mine: SessionId([0; 16]),
        second: SessionId([0; 16]),
        theirs: SessionId([0; 16]),
        _dir: dir,
    };
    w.tapes()
        .args(["init", "--name", "alice"])
        .assert()
        .success();
    let id: Value = serde_json::from_str(&w.ok(&["id", "--json"])).unwrap();
    let me: MemberId = id["node_id"].as_str().unwrap().parse().unwrap();

    let store = Store::open(&w.server.join("store")).unwrap();
    store.set_local_owner(&me).unwrap();
    let incoming: Vec<Incoming> = (0..3)
        .map(|i| Incoming {
            session: sample::session(5, i, Shape::default()),
            path: String::new(),
        })
        .collect();
    let report = ingest(&store, &incoming, 0).unwrap();
    (w.mine, w.second, w.theirs) = (
        report.sessions[0].id,
        report.sessions[1].id,
        report.sessions[2].id,
    );
    let raw = store.session_raw(&w.theirs).unwrap().unwrap();
    let mut record = SessionRecord::decode(&raw).unwrap();
    record.owner = Some(MemberId([9; 32]));
    record.visibility = Visibility::Public;
    store
        .commit(
            &[],
            &[RefUpdate {
                key: session_ref_key(&w.theirs),
                expected: Some(raw),
                new: Some(record.encode()),
            }],
        )
        .unwrap();
    drop(store);

    w.ok(&["remote", "add", "origin", w.server.to_str().unwrap()]);
    w
}

impl World {
    fn tapes(&self) -> Command {
        let mut cmd = super::util::tapes(&self.alice);
        cmd.current_dir(&self.project);
        cmd
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self
            .tapes()
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self
            .tapes()
            .args(args)
            .assert()
            .code(1)
            .get_output()
            .stderr
            .clone();
        String::from_utf8(out).unwrap()
    }

    fn tracking(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.project.join(".tapes/tracking.json")).unwrap(),
        )
        .unwrap()
    }

    fn write_tracking(&self, value: &Value) {
        std::fs::write(
            self.project.join(".tapes/tracking.json"),
            serde_json::to_string_pretty(value).unwrap(),
        )
        .unwrap();
    }

    fn remote_record(&self, id: &SessionId) -> Option<SessionRecord> {
        Store::open(&self.server.join("store"))
            .unwrap()
            .session(id)
            .unwrap()
    }

    fn local_record(&self, id: &SessionId) -> Option<SessionRecord> {
        Store::open(&self.alice.join("store"))
            .unwrap()
            .session(id)
            .unwrap()
    }

    /// The nodes of a session in Alice's store, root first.
    fn local_chain(&self, id: &SessionId) -> Vec<NodeId> {
        let store = Store::open(&self.alice.join("store")).unwrap();
        let head = store.session(id).unwrap().unwrap().head;
        store
            .chain(&head)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }
}

fn reply(parent: NodeId, text: &str) -> StoredObject {
    StoredObject::encode(&Node {
        body: NodeBody {
            parent: Some(parent),
            role: Role::User,
            model: String::new(),
            blocks: vec![ContentBlock::text(text)],
        },
        meta: NodeMeta::default(),
    })
}

/// Appends one message to session `id` in the store at `store_dir` (continuing it locally, or
/// someone else's push landing on the server); returns the new head.
fn append(store_dir: &Path, id: &SessionId, text: &str) -> NodeId {
    let store = Store::open(store_dir).unwrap();
    let raw = store.session_raw(id).unwrap().unwrap();
    let mut record = SessionRecord::decode(&raw).unwrap();
    let next = reply(record.head, text);
    record.head = next.id;
    record.summary.messages += 1;
    store
        .commit(
            std::slice::from_ref(&next),
            &[RefUpdate {
                key: session_ref_key(id),
                expected: Some(raw),
                new: Some(record.encode()),
            }],
        )
        .unwrap();
    next.id
}

fn alias<'a>(tracking: &'a Value, name: &str) -> &'a Value {
    &tracking["aliases"][name]
}

fn session_of(value: &Value, key: &str) -> SessionId {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not set in {value}"))
        .parse()
        .unwrap()
}

#[test]
fn remote_add_list_remove_round_trip() {
    let w = world();
    let server = w.server.canonicalize().unwrap();
    let list = w.ok(&["remote", "list"]);
    assert_eq!(list, format!("origin  {}\n", server.display()));

    let err = w.fails(&["remote", "add", "origin", w.server.to_str().unwrap()]);
    assert!(
        err.contains("a remote named `origin` already exists")
            && err.contains("`tapes remote remove origin`"),
        "{err}"
    );
    let missing = w.project.join("nowhere");
    let err = w.fails(&["remote", "add", "backup", missing.to_str().unwrap()]);
    assert!(err.contains("is not a directory"), "{err}");
    let err = w.fails(&["remote", "add", "me", w.alice.to_str().unwrap()]);
    assert!(err.contains("is this tapes home"), "{err}");
    let err = w.fails(&["remote", "add", "a/b", w.server.to_str().unwrap()]);
    assert!(err.contains("cannot be a remote name"), "{err}");
    let err = w.fails(&[
        "remote",
        "add",
        "store",
        w.server.join("store").to_str().unwrap(),
    ]);
    assert!(err.contains("looks like a store directory"), "{err}");

    assert_eq!(
        w.ok(&["remote", "remove", "origin"]),
        "removed remote origin\n"
    );
    assert!(w
        .ok(&["remote", "list"])
        .starts_with("no remotes; `tapes remote add <name> <path>`"));
    let err = w.fails(&["remote", "remove", "origin"]);
    assert!(err.contains("no remote named `origin`"), "{err}");
    // The name is free again.
    w.ok(&["remote", "add", "origin", w.server.to_str().unwrap()]);
}

#[test]
fn pull_tracks_the_session_and_push_appends_only_the_delta() {
    let w = world();
    let out = w.ok(&["pull", &w.mine.to_hex()]);
    assert!(
        out.starts_with(&format!(
            "pulled {} from origin: 10 new nodes, 10 messages\n",
            w.mine.short()
        )),
        "{out}"
    );
    assert!(out.contains("tracking it as `main` in "), "{out}");

    let head = w.remote_record(&w.mine).unwrap().head;
    let mut tracking = w.tracking();
    let pulled_at = alias(&tracking, "main")["lastPulledAt"]
        .as_str()
        .unwrap()
        .to_string();
    chrono::DateTime::parse_from_rfc3339(&pulled_at).expect("lastPulledAt is RFC 3339");
    tracking["aliases"]["main"]["lastPulledAt"] = json!("<rfc3339>");
    let checked_at = tracking["aliases"]["main"]["remoteCheckedAt"]
        .as_str()
        .unwrap()
        .to_string();
    chrono::DateTime::parse_from_rfc3339(&checked_at).expect("remoteCheckedAt is RFC 3339");
    tracking["aliases"]["main"]["remoteCheckedAt"] = json!("<rfc3339>");
    assert_eq!(
        tracking,
        json!({
            "current": "main",
            "aliases": {"main": {
                "sessionId": w.mine.to_hex(),
                "localSessionId": null,
                "parentId": null,
                "rootId": w.mine.to_hex(),
                "baseCount": 10,
                "baseDigest": head.to_hex(),
                "remote": "origin",
                "platform": null,
                "files": [],
                "lastPulledAt": "<rfc3339>",
                // What the remote held when last asked (here: at the pull).
                "remoteDigest": head.to_hex(),
                "remoteCount": 10,
                "remoteCheckedAt": "<rfc3339>",
            }}
        })
    );
    let sessions = w.ok(&["sessions"]);
    assert!(sessions.contains(&w.mine.short()), "{sessions}");
    assert!(
        !sessions.contains(&w.second.short()),
        "only the pulled session came: {sessions}"
    );

    // Continue locally by one message; a bare `tapes push` sends just that node.
    let next = append(&w.alice.join("store"), &w.mine, "and now add a test for it");
    let out = w.ok(&["push"]);
    assert_eq!(
        out,
        format!("pushed {} to origin: 1 new node\n", w.mine.short())
    );
    assert_eq!(w.remote_record(&w.mine).unwrap().head, next);
    let main = alias(&w.tracking(), "main").clone();
    assert_eq!(
        (main["baseCount"].as_u64(), main["baseDigest"].as_str()),
        (Some(11), Some(next.to_hex().as_str()))
    );
    assert_eq!(
        main["lastPulledAt"].as_str(),
        Some(pulled_at.as_str()),
        "a push is not a pull"
    );

    // Nothing new: an empty push, still fine.
    assert_eq!(
        w.ok(&["push", "origin"]),
        format!("pushed {} to origin: 0 new nodes\n", w.mine.short())
    );
    // Pulling again is a no-op fast-forward that keeps the alias.
    let out = w.ok(&["pull", &w.mine.short()]);
    assert!(
        out.starts_with(&format!(
            "pulled {} from origin: 0 new nodes, 11 messages",
            w.mine.short()
        )),
        "{out}"
    );
}

#[test]
fn a_stale_push_is_a_conflict_and_changes_nothing() {
    let w = world();
    w.ok(&["pull", &w.mine.to_hex()]);
    let base = w.remote_record(&w.mine).unwrap().head;

    // Alice continues here while her other machine pushes to the server from the same base.
    let local = append(&w.alice.join("store"), &w.mine, "alice, laptop");
    let theirs = append(&w.server.join("store"), &w.mine, "alice, desktop");
    let err = w.fails(&["push"]);
    assert!(
        err.contains("conflict") && err.contains("tapes pull") && err.contains("tapes branch"),
        "{err}"
    );
    assert_eq!(
        w.remote_record(&w.mine).unwrap().head,
        theirs,
        "the remote is unchanged"
    );
    assert_eq!(
        alias(&w.tracking(), "main")["baseDigest"].as_str(),
        Some(base.to_hex().as_str()),
        "the base did not move"
    );

    // Pull would set the local copy back: refused, with the ways out.
    let err = w.fails(&["pull", &w.mine.to_hex()]);
    assert!(
        err.contains("has messages that remote origin does not"),
        "{err}"
    );
    assert!(
        err.contains("tapes branch") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        w.local_record(&w.mine).unwrap().head,
        local,
        "the refused pull moved nothing"
    );

    // Keep the local work as a branch, then take the remote's version and continue from it.
    let out = w.ok(&["branch", "--alias", "laptop"]);
    assert!(out.contains("(11 shared messages, "), "{out}");
    let laptop = session_of(alias(&w.tracking(), "laptop"), "sessionId");
    assert_eq!(w.local_record(&laptop).unwrap().head, local);
    w.ok(&["pull", &w.mine.to_hex(), "--force"]);
    assert_eq!(w.local_record(&w.mine).unwrap().head, theirs);
    assert_eq!(w.tracking()["current"], "main");
    let next = append(
        &w.alice.join("store"),
        &w.mine,
        "continuing from the desktop's turn",
    );
    assert_eq!(
        w.ok(&["push"]),
        format!("pushed {} to origin: 1 new node\n", w.mine.short())
    );
    assert_eq!(w.remote_record(&w.mine).unwrap().head, next);

    // A tracking file whose base went stale (reset to an older head) is refused the same way.
    let mut tracking = w.tracking();
    tracking["aliases"]["main"]["baseDigest"] = json!(theirs.to_hex());
    w.write_tracking(&tracking);
    append(&w.alice.join("store"), &w.mine, "one more");
    let err = w.fails(&["push"]);
    assert!(
        err.contains("conflict") && err.contains("tapes pull") && err.contains("tapes branch"),
        "{err}"
    );
    assert_eq!(
        w.remote_record(&w.mine).unwrap().head,
        next,
        "the remote is unchanged"
    );
}

#[test]
fn pulling_someone_elses_session_is_not_found() {
    let w = world();
    let out = w
        .tapes()
        .args(["pull", &w.theirs.to_hex()])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Session not found.\n"
    );
    assert!(out.stdout.is_empty());
    let out = w
        .tapes()
        .args(["pull", &"ab".repeat(16)])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Session not found.\n"
    );
    assert!(!w.project.join(".tapes").exists(), "nothing was tracked");
    assert!(
        w.ok(&["sessions"]).starts_with("no sessions yet"),
        "nothing was stored"
    );
}

#[test]
fn branches_track_their_own_bases_and_push_independently() {
    let w = world();
    w.ok(&["pull", &w.mine.to_hex()]);
    let chain = w.local_chain(&w.mine);

    // A branch of the current tracked session at message 4 is created on the remote now.
    let out = w.ok(&[
        "branch",
        "--alias",
        "exp-a",
        "--at",
        "4",
        "--title",
        "RAG variant A",
    ]);
    assert!(
        out.starts_with(&format!("branched {} into new session ", w.mine.short())),
        "{out}"
    );
    assert!(
        out.contains("(4 shared messages, private)") && out.contains("tracking it as `exp-a`"),
        "{out}"
    );
    let mut tracking = w.tracking();
    assert_eq!(tracking["current"], "exp-a");
    let checked_at = tracking["aliases"]["exp-a"]["remoteCheckedAt"].take();
    assert!(
        checked_at.is_string(),
        "the remote was asked when the branch was created"
    );
    let exp_a = alias(&tracking, "exp-a");
    let a = session_of(exp_a, "sessionId");
    assert!(
        out.contains(&format!("created {} on origin", a.short())),
        "{out}"
    );
    assert_eq!(
        *exp_a,
        json!({
            "sessionId": a.to_hex(),
            "localSessionId": null,
            "parentId": w.mine.to_hex(),
            "rootId": w.mine.to_hex(),
            "baseCount": 4,
            "baseDigest": chain[3].to_hex(),
            "remote": "origin",
            "platform": null,
            "files": [],
            "lastPulledAt": null,
            "remoteDigest": chain[3].to_hex(),
            "remoteCount": 4,
            "remoteCheckedAt": null,
        })
    );
    assert_eq!(
        w.remote_record(&a).unwrap().head,
        chain[3],
        "the branch exists on the remote at its branch point"
    );

    // A --local branch (of the current alias, exp-a) is pending until its first push.
    let out = w.ok(&["branch", "--local", "--alias", "exp-b"]);
    assert!(!out.contains("created"), "{out}");
    let exp_b = alias(&w.tracking(), "exp-b").clone();
    assert_eq!(exp_b["sessionId"], Value::Null);
    assert_eq!(
        (exp_b["parentId"].as_str(), exp_b["baseCount"].as_u64()),
        (Some(a.to_hex().as_str()), Some(4))
    );
    let b = session_of(&exp_b, "localSessionId");
    assert!(w.remote_record(&b).is_none(), "not on the remote yet");
    let b_head = append(&w.alice.join("store"), &b, "variant B");
    assert_eq!(
        w.ok(&["push"]),
        format!("pushed {} to origin: 5 new nodes\n", b.short())
    );
    let exp_b = alias(&w.tracking(), "exp-b").clone();
    assert_eq!(session_of(&exp_b, "sessionId"), b);
    assert_eq!(exp_b["localSessionId"], Value::Null);
    assert_eq!(
        (exp_b["baseCount"].as_u64(), exp_b["baseDigest"].as_str()),
        (Some(5), Some(b_head.to_hex().as_str()))
    );
    assert_eq!(w.remote_record(&b).unwrap().head, b_head);

    // Aliases isolate their bases: exp-a and main move on independently in one push.
    let a_head = append(&w.alice.join("store"), &a, "variant A");
    let main_head = append(&w.alice.join("store"), &w.mine, "the original goes on");
    let out = w.ok(&["push", "origin", "exp-a", &w.mine.short()]);
    assert_eq!(
        out,
        format!(
            "pushed {} to origin: 1 new node\npushed {} to origin: 1 new node\n",
            a.short(),
            w.mine.short()
        )
    );
    let tracking = w.tracking();
    assert_eq!(alias(&tracking, "exp-a")["baseCount"].as_u64(), Some(5));
    assert_eq!(
        alias(&tracking, "exp-a")["baseDigest"].as_str(),
        Some(a_head.to_hex().as_str())
    );
    assert_eq!(alias(&tracking, "main")["baseCount"].as_u64(), Some(11));
    assert_eq!(
        alias(&tracking, "main")["baseDigest"].as_str(),
        Some(main_head.to_hex().as_str())
    );
    assert_eq!(
        alias(&tracking, "exp-b")["baseCount"].as_u64(),
        Some(5),
        "exp-b untouched"
    );
    assert_eq!(w.remote_record(&a).unwrap().head, a_head);
    assert_eq!(w.remote_record(&w.mine).unwrap().head, main_head);

    // An alias name in use is refused before anything is made; --no-track records nothing.
    let err = w.fails(&["branch", &w.mine.short(), "--alias", "exp-a"]);
    assert!(
        err.contains("alias `exp-a`") && err.contains("already tracks"),
        "{err}"
    );
    let before = w.tracking();
    let out = w.ok(&["branch", &w.mine.short(), "--no-track", "--local"]);
    assert!(!out.contains("tracking it"), "{out}");
    assert_eq!(w.tracking(), before);
}

#[test]
fn fork_tracks_the_new_session_too() {
    let w = world();
    // Someone else's public session reaches Alice's store (as a teammate's share would).
    let store = Store::open(&w.server.join("store")).unwrap();
    let record = store.session(&w.theirs).unwrap().unwrap();
    let objects: Vec<StoredObject> = store
        .chain(&record.head)
        .unwrap()
        .into_iter()
        .map(|(id, _)| StoredObject {
            id,
            bytes: store.storage().get_object(&id).unwrap().unwrap(),
        })
        .collect();
    drop(store);
    let local = Store::open(&w.alice.join("store")).unwrap();
    local
        .commit(
            &objects,
            &[RefUpdate {
                key: session_ref_key(&w.theirs),
                expected: None,
                new: Some(record.encode()),
            }],
        )
        .unwrap();
    drop(local);

    let out = w.ok(&["fork", &w.theirs.short(), "--alias", "trial", "--private"]);
    assert!(
        out.starts_with(&format!("forked {} into new session ", w.theirs.short())),
        "{out}"
    );
    let trial = alias(&w.tracking(), "trial").clone();
    let id = session_of(&trial, "sessionId");
    assert_eq!(trial["parentId"].as_str(), Some(w.theirs.to_hex().as_str()));
    assert_eq!(trial["baseCount"].as_u64(), Some(10));
    let on_remote = w.remote_record(&id).unwrap();
    assert_eq!(on_remote.visibility, Visibility::Private);
    assert_ne!(
        on_remote.owner,
        Some(MemberId([9; 32])),
        "the fork is Alice's"
    );
}

#[test]
fn wrong_usage_gets_clear_errors() {
    let w = world();
    let id = w.mine.to_hex();

    let err = w.fails(&["push"]);
    assert!(
        err.contains("nothing to push") && err.contains("tracking.json"),
        "{err}"
    );
    let err = w.fails(&["branch"]);
    assert!(
        err.contains("no current tracked session") && err.contains("`tapes branch <session>`"),
        "{err}"
    );
    let err = w.fails(&["pull", "abc123"]);
    assert!(err.contains("not a full session id"), "{err}");
    let err = w.fails(&["pull", &id, "--from", "nosuch"]);
    assert!(
        err.contains("no remote named `nosuch` (remotes: origin)"),
        "{err}"
    );

    w.ok(&["pull", &id]);
    let err = w.fails(&["push", "nosuch"]);
    assert!(
        err.contains("no remote named `nosuch`")
            && err.contains("`tapes remote add nosuch <path>`"),
        "{err}"
    );
    let err = w.fails(&["push", &w.mine.short()]);
    assert!(
        err.contains("name the remote first: `tapes push <remote>"),
        "{err}"
    );
    let err = w.fails(&[
        "pull",
        &id,
        "--alias",
        "main",
        "--into",
        w.project.join("nowhere").to_str().unwrap(),
    ]);
    assert!(err.contains("no such directory"), "{err}");

    // Several remotes: pull needs --from; with it, it works.
    let backup = w.project.parent().unwrap().join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    w.ok(&["remote", "add", "backup", backup.to_str().unwrap()]);
    let err = w.fails(&["pull", &w.second.to_hex(), "--alias", "second"]);
    assert!(
        err.contains(
            "several remotes are configured (backup, origin); say which with --from <name>"
        ),
        "{err}"
    );
    w.ok(&[
        "pull",
        &w.second.to_hex(),
        "--alias",
        "second",
        "--from",
        "origin",
    ]);
    // Pulling another session into an alias in use is refused.
    let err = w.fails(&["pull", &w.second.to_hex(), "--from", "origin"]);
    assert!(
        err.contains("alias `main`") && err.contains("--alias <name>"),
        "{err}"
    );

    // No remote at all.
    w.ok(&["remote", "remove", "backup"]);
    w.ok(&["remote", "remove", "origin"]);
    let err = w.fails(&["pull", &id, "--no-track"]);
    assert!(
        err.contains("no remote is configured; add one with `tapes remote add <name> <path>`"),
        "{err}"
    );

    // A damaged tracking file is named, with the fix.
    std::fs::write(w.project.join(".tapes/tracking.json"), "{ oops").unwrap();
    let err = w.fails(&["push"]);
    assert!(
        err.contains(".tapes/tracking.json is not a valid tracking file")
            && err.contains("delete it"),
        "{err}"
    );
    let err = w.fails(&["branch"]);
    assert!(
        err.contains(".tapes/tracking.json is not a valid tracking file")
            && err.contains("delete it"),
        "{err}"
    );

    // Clap: --alias and --no-track exclude each other.
    w.tapes()
        .args(["pull", &id, "--alias", "x", "--no-track"])
        .assert()
        .code(2);
}

#[test]
fn a_push_that_would_rewind_the_remote_is_refused_by_the_remote() {
    let w = world();
    w.ok(&["pull", &w.mine.to_hex()]);
    append(&w.alice.join("store"), &w.mine, "one more");
    w.ok(&["push"]);
    let remote_before = w.remote_record(&w.mine).unwrap();
    assert_eq!(remote_before.summary.messages, 11);

    // A correctly signed update from the owner whose head is an older node of the session:
    // the remote checks history, not only the signature and the expected head.
    let home = tapes::home::Home::at(w.alice.clone());
    let me = tapes::identity::Identity::load(&home).unwrap();
    let chain = w.local_chain(&w.mine);
    let mut rewound = remote_before.clone();
    rewound.head = chain[4];
    rewound.summary.messages = 5;
    let signature = tapes::sync::remote::RefSignature::sign(
        me.signing_key(),
        &w.mine,
        Some(&remote_before.head),
        &rewound,
    );
    let server = Store::open(&w.server.join("store")).unwrap();
    let err = tapes::sync::remote::apply_push(
        &server,
        "origin",
        &w.mine,
        Some(&remote_before.head),
        &[],
        &rewound,
        &signature,
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not extend"), "{err}");
    drop(server);
    assert_eq!(w.remote_record(&w.mine).unwrap(), remote_before);
}

#[test]
fn an_identity_moves_to_a_second_device_and_pulls_and_pushes_as_the_same_node() {
    let w = world();
    let export = w.alice.parent().unwrap().join("alice.tapes-id");
    let out = w
        .tapes()
        .env("TAPES_PASSPHRASE", "correct horse battery")
        .args(["id", "export", "-o", export.to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("tapes init --from"));
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!text.contains("AGE-SECRET-KEY"));

    let laptop = w.alice.parent().unwrap().join("laptop");
    let project = w.alice.parent().unwrap().join("laptop-project");
    std::fs::create_dir_all(&project).unwrap();
    let on_laptop = |pass: &str, args: &[&str]| {
        let mut cmd = super::util::tapes(&laptop);
        cmd.env("TAPES_PASSPHRASE", pass)
            .env_remove("RUST_LOG")
            .current_dir(&project)
            .args(args);
        cmd
    };
    // A wrong passphrase writes nothing.
    let err = on_laptop("wrong", &["init", "--from", export.to_str().unwrap()])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("wrong passphrase"));
    assert!(!laptop.join("identity").exists());

    on_laptop(
        "correct horse battery",
        &["init", "--from", export.to_str().unwrap()],
    )
    .assert()
    .success();
    let id = |home: &Path| -> String {
        let out = super::util::tapes(home)
            .args(["id", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["node_id"].as_str().unwrap().to_string()
    };
    assert_eq!(id(&laptop), id(&w.alice));

    let ok = |args: &[&str]| {
        let out = on_laptop("", args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    };
    ok(&["remote", "add", "origin", w.server.to_str().unwrap()]);
    let out = ok(&["pull", &w.mine.to_hex()]);
    assert!(
        out.starts_with(&format!("pulled {}", w.mine.short())),
        "{out}"
    );
    append(&laptop.join("store"), &w.mine, "written on the laptop");
    let out = ok(&["push"]);
    assert!(out.contains("1 new node\n"), "{out}");
    assert_eq!(w.remote_record(&w.mine).unwrap().summary.messages, 11);
}

#[test]
fn identity_files_copied_by_hand_still_own_their_sessions() {
    let w = world();
    let copy = w.alice.parent().unwrap().join("copied");
    std::fs::create_dir_all(copy.join("identity")).unwrap();
    for file in ["node.key", "age.key", "profile.json"] {
        std::fs::copy(
            w.alice.join("identity").join(file),
            copy.join("identity").join(file),
        )
        .unwrap();
    }
    let run = |args: &[&str]| {
        super::util::tapes(&copy)
            .current_dir(&w.project)
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    run(&["remote", "add", "origin", w.server.to_str().unwrap()]);
    let out = String::from_utf8(run(&["pull", &w.mine.to_hex()])).unwrap();
    assert!(
        out.starts_with(&format!("pulled {}", w.mine.short())),
        "{out}"
    );
}

#[test]
fn a_branch_with_a_key_is_not_created_on_the_remote_unless_redacted_or_allowed() {
    let w = world();
    w.ok(&["pull", &w.mine.to_hex()]);
    // A key pasted so the terminal wrapped it: `AKIA` ends one line, the rest starts the next.
    let key = concat!("AK", "IA", "Z7QX4M2N8P5R", "3T6V");
    let leaky = append(
        &w.alice.join("store"),
        &w.mine,
        &format!("export AWS_ACCESS_KEY_ID={}\n  {}", &key[..4], &key[4..]),
    );
    let sessions_here = || {
        Store::open(&w.alice.join("store"))
            .unwrap()
            .sessions()
            .unwrap()
            .len()
    };
    let remote_sessions = || {
        Store::open(&w.server.join("store"))
            .unwrap()
            .sessions()
            .unwrap()
    };
    let remote_has_node = |node: &NodeId| {
        Store::open(&w.server.join("store"))
            .unwrap()
            .has_node(node)
            .unwrap()
    };
    let before = remote_sessions();

    // --dry-run lists and creates nothing, here or there.
    let here = sessions_here();
    let dry = w.ok(&["branch", "--alias", "dry", "--dry-run"]);
    assert!(dry.contains("1 possible secret"), "{dry}");
    assert!(dry.contains("AWS access key ID"), "{dry}");
    assert!(!dry.contains(&key[4..]), "{dry}");
    assert_eq!(sessions_here(), here);

    // Refused: the branch stays here as a pending branch, nothing reaches the remote.
    let out = w
        .tapes()
        .args(["branch", "--alias", "leaky"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    let pending = session_of(alias(&w.tracking(), "leaky"), "localSessionId");
    assert!(
        stderr.contains(&format!(
            "1 possible secret in session {}; nothing was sent to the remote",
            pending.short()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "node #10 {} block 0 (text): AWS access key ID",
            leaky.short()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("--redact")
            && stderr.contains("--dry-run")
            && stderr.contains("--allow-secrets"),
        "{stderr}"
    );
    assert!(!stderr.contains(&key[4..]) && !stdout.contains(&key[4..]));
    assert!(!stdout.contains("created"), "{stdout}");
    assert_eq!(alias(&w.tracking(), "leaky")["sessionId"], Value::Null);
    assert_eq!(remote_sessions(), before, "nothing landed on the remote");
    assert!(!remote_has_node(&leaky));

    // --redact: a redacted copy goes to the remote and is what the alias tracks.
    let out = w.ok(&["branch", &w.mine.short(), "--alias", "clean", "--redact"]);
    assert!(out.contains("created a redacted copy "), "{out}");
    let copy = session_of(alias(&w.tracking(), "clean"), "sessionId");
    let theirs = w.remote_record(&copy).unwrap();
    assert!(!remote_has_node(&leaky), "the original node never left");
    let server = Store::open(&w.server.join("store")).unwrap();
    let last = server.chain(&theirs.head).unwrap().pop().unwrap().1;
    let text = last.body.plain_text();
    assert!(text.contains("[REDACTED:AWS access key ID]"), "{text}");
    assert!(!text.contains(&key[4..]), "{text}");
    drop(server);

    // --allow-secrets creates it as is.
    let out = w.ok(&[
        "branch",
        &w.mine.short(),
        "--alias",
        "as-is",
        "--allow-secrets",
    ]);
    let as_is = session_of(alias(&w.tracking(), "as-is"), "sessionId");
    assert!(
        out.contains(&format!("created {} on origin", as_is.short())),
        "{out}"
    );
    assert_eq!(w.remote_record(&as_is).unwrap().head, leaky);
}
