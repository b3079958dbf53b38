//! `tapes stats` on a constructed two-member team whose members' sessions share history:
//! alice's session, bob's branch of it (same first two nodes) and bob's copy of all of it (as if
//! fetched from alice under another session id). Shared nodes must be counted once; every
//! number below is worked out by hand in the comments.

use std::path::Path;

use tapes::home::Home;
use tapes::identity::{Identity, Profile};
use tapes::import::ingest::{ingest, Incoming};
use tapes::import::{ParsedMessage, ParsedSession};
use tapes::protocol::{ContentBlock, MemberId, NodeMeta, Role, SessionId, Usage};
use tapes::session::pricing::PriceTable;
use tapes::session::{session_ref_key, SessionRecord};
use tapes::store::backend::RefUpdate;
use tapes::store::Store;
use tapes::team::{self, InviteOptions};
use tapes::views::stats::{self, Scope};

/// 2026-03-01T00:00:00Z, the end of the period.
const NOW: i64 = 1_772_323_200_000;
const DAY: i64 = 86_400_000;

fn identity(home: &Path, name: &str) -> Identity {
    let me = Identity::generate(Profile {
        name: name.into(),
        email: None,
    })
    .unwrap();
    let home = Home::at(home);
    home.ensure().unwrap();
    me.save(&home).unwrap();
    me
}

fn member(me: &Identity) -> MemberId {
    MemberId(me.verifying_key().to_bytes())
}

/// A message; assistants report 1000 input + 1000 output tokens.
fn msg(role: Role, model: &str, text: &str, at: i64) -> ParsedMessage {
    ParsedMessage {
        role,
        model: model.into(),
        blocks: vec![ContentBlock::text(text)],
        meta: NodeMeta {
            timestamp_ms: Some(at),
            project: Some(if text.contains("web") { "web" } else { "api" }.into()),
            usage: (role == Role::Assistant).then_some(Usage {
                input_tokens: 1000,
                output_tokens: 1000,
                ..Usage::default()
            }),
            ..NodeMeta::default()
        },
    }
}

fn session(source_id: &str, messages: Vec<ParsedMessage>) -> Incoming {
    Incoming {
        session: ParsedSession {
            source_kind: "messages-json",
            source_id: source_id.into(),
            parent_source_id: None,
            title: None,
            messages,
        },
        path: String::new(),
    }
}

fn set_owner(store: &Store, id: &SessionId, owner: MemberId) {
    let raw = store.session_raw(id).unwrap().unwrap();
    let mut record = SessionRecord::decode(&raw).unwrap();
    record.owner = Some(owner);
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

const SONNET: &str = "claude-sonnet-4-5-20250929";

#[test]
fn two_member_team_with_overlapping_history() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_home, bob_home) = (dir.path().join("alice"), dir.path().join("bob"));
    let alice = identity(&alice_home, "alice");
    let bob = identity(&bob_home, "bob");
    let carol = identity(&dir.path().join("carol"), "carol");
    let store = Store::open(&Home::at(&alice_home).store_dir()).unwrap();
    store.set_local_owner(&member(&alice)).unwrap();

    // A real team of two: alice creates it and bob joins through an invite.
    let chain = team::create(&store, &alice, "Paper Compute", NOW - 30 * DAY).unwrap();
    let (code, _) = team::invite(
        &store,
        &alice,
        &chain,
        InviteOptions {
            expires_ms: None,
            max_uses: 1,
            addrs: Vec::new(),
            email: None,
            role: tapes::protocol::manifest::TeamRole::Member,
        },
        NOW - 30 * DAY,
    )
    .unwrap();
    let (_, request) = team::join_request(&bob, &code, NOW - 30 * DAY).unwrap();
    team::accept_join(&store, &alice, &request, NOW - 30 * DAY).unwrap();
    let bob_store = Store::open(&Home::at(&bob_home).store_dir()).unwrap();
    drop(bob_store);

    let t = NOW - 2 * DAY;
    let m1 = msg(Role::User, "", "add retries to the api client", t);
    let m2 = msg(Role::Assistant, SONNET, "retries added", t + 1000);
    let m3 = msg(Role::User, "", "and a timeout", t + 2000);
    let m4 = msg(Role::Assistant, SONNET, "timeout added", t + 3000);
    let b = NOW - DAY;
    // Bob's branch: the same first two messages (same node ids: meta is not hashed), then his.
    let mut b_m1 = m1.clone();
    b_m1.meta.timestamp_ms = Some(b);
    let mut b_m2 = m2.clone();
    b_m2.meta.timestamp_ms = Some(b + 1000);
    let b3 = msg(Role::User, "", "now log each retry", b + 2000);
    let b4 = msg(
        Role::Assistant,
        "gpt-4o-2024-08-06",
        "logging added",
        b + 3000,
    );
    // Bob's copy of alice's whole session, fetched under another session id.
    let mut copy: Vec<ParsedMessage> = vec![m1.clone(), m2.clone(), m3.clone(), m4.clone()];
    for (i, m) in copy.iter_mut().enumerate() {
        m.meta.timestamp_ms = Some(b + 3_600_000 + i as i64);
    }
    ingest(
        &store,
        &[
            session("a1", vec![m1, m2, m3, m4]),
            session("b1", vec![b_m1, b_m2, b3, b4]),
            session("b2", copy),
            // Previous period (8-14 days ago): one alice session.
            session(
                "a0",
                vec![
                    msg(Role::User, "", "fix the web build", NOW - 10 * DAY),
                    msg(
                        Role::Assistant,
                        SONNET,
                        "web build fixed",
                        NOW - 10 * DAY + 1,
                    ),
                ],
            ),
            // Carol is in no team of this store.
            session(
                "c1",
                vec![
                    msg(Role::User, "", "carol's question", NOW - DAY),
                    msg(Role::Assistant, SONNET, "carol's answer", NOW - DAY + 1),
                ],
            ),
            // Outside both periods: ignored.
            session(
                "old",
                vec![
                    msg(Role::User, "", "ancient", NOW - 40 * DAY),
                    msg(Role::Assistant, SONNET, "history", NOW - 40 * DAY + 1),
                ],
            ),
        ],
        NOW,
    )
    .unwrap();
    let id = |s: &str| SessionId::derive("messages-json", s);
    set_owner(&store, &id("b1"), member(&bob));
    set_owner(&store, &id("b2"), member(&bob));
    set_owner(&store, &id("c1"), member(&carol));

    let prices = PriceTable::defaults();
    let scope = Scope::team(&store, Some("Paper Compute")).unwrap();
    let s = stats::compute(&store, &scope, &prices, NOW, 7 * DAY).unwrap();

    // Per assistant node: sonnet 1000·3 + 1000·15 = 18000 → $0.018; gpt-4o 1000·2.5 + 1000·10
    // = 12500 → $0.0125. 2000 tokens each.
    // Current period (last 7 days), oldest first:
    //   a1 (alice): m1..m4, two sonnet answers → $0.036, 4000 tokens
    //   b1 (bob):   m1, m2 already counted; b3, b4 (gpt-4o) → $0.0125, 2000 tokens
    //   b2 (bob):   all four nodes already counted → not a session (duplicate)
    // Total: 2 sessions, $0.0485, 6000 tokens, avg $0.02425.
    assert_eq!(s.current.sessions, 2);
    assert!(
        (s.current.cost - 0.0485).abs() < 1e-12,
        "{}",
        s.current.cost
    );
    assert_eq!(s.current.tokens, 6000);
    assert!((s.current.avg_cost - 0.02425).abs() < 1e-12);
    assert_eq!(s.duplicate_sessions, 1);
    // Previous period: a0 → 1 session, $0.018, 2000 tokens.
    assert_eq!(s.previous.sessions, 1);
    assert!((s.previous.cost - 0.018).abs() < 1e-12);
    assert_eq!(s.previous.tokens, 2000);
    // Changes: sessions +100%, cost (0.0485 − 0.018)/0.018 = +169.4%, tokens +200%,
    // avg (0.02425 − 0.018)/0.018 = +34.7%.
    let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-6;
    assert!(close(s.change.sessions, 100.0));
    assert!(close(s.change.cost, (0.0485 - 0.018) / 0.018 * 100.0));
    assert!(close(s.change.tokens, 200.0));
    assert!(close(s.change.avg_cost, (0.02425 - 0.018) / 0.018 * 100.0));

    // By member: names from the team manifest.
    let members: Vec<(&str, u64, f64)> = s
        .by_member
        .iter()
        .map(|r| (r.label.as_str(), r.sessions, r.cost))
        .collect();
    assert_eq!(members.len(), 2);
    assert_eq!((members[0].0, members[0].1), ("alice", 1));
    assert!((members[0].2 - 0.036).abs() < 1e-12);
    assert_eq!((members[1].0, members[1].1), ("bob", 1));
    assert!((members[1].2 - 0.0125).abs() < 1e-12);
    assert_eq!(s.by_member[1].key, member(&bob).to_hex());

    // By model (normalized), biggest cost first.
    let models: Vec<(&str, u64, u64)> = s
        .by_model
        .iter()
        .map(|r| (r.key.as_str(), r.sessions, r.tokens))
        .collect();
    assert_eq!(
        models,
        vec![("claude-sonnet-4-5", 1, 4000), ("gpt-4o", 1, 2000)]
    );
    assert_eq!(s.by_project.len(), 1);
    assert_eq!(
        (s.by_project[0].key.as_str(), s.by_project[0].sessions),
        ("api", 2)
    );
    // By day: the 7 days of the period, a1 two days ago and b1 yesterday.
    assert_eq!(s.by_day.len(), 7);
    let sessions_by_day: Vec<u64> = s.by_day.iter().map(|r| r.sessions).collect();
    assert_eq!(sessions_by_day, vec![0, 0, 0, 0, 0, 1, 1]);
    assert_eq!(s.by_day[5].key, "2026-02-27");
    assert!(s.unpriced.is_empty());

    // Without --team: carol's session counts too, under her short id (no name known).
    let all = stats::compute(&store, &Scope::all(&store).unwrap(), &prices, NOW, 7 * DAY).unwrap();
    assert_eq!(all.current.sessions, 3);
    assert!((all.current.cost - 0.0665).abs() < 1e-12);
    assert!(all
        .by_member
        .iter()
        .any(|r| r.label == member(&carol).short() && r.sessions == 1));
}

#[test]
fn stats_cli_prints_totals_and_json() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let now = tapes::now_ms();
    {
        let store = Store::open(&Home::at(h).store_dir()).unwrap();
        ingest(
            &store,
            &[
                session(
                    "x",
                    vec![
                        msg(Role::User, "", "q", now - DAY),
                        msg(Role::Assistant, SONNET, "a", now - DAY + 1),
                    ],
                ),
                session(
                    "y",
                    vec![
                        msg(Role::User, "", "q2", now - 2 * DAY),
                        msg(Role::Assistant, "mystery-9", "a2", now - 2 * DAY + 1),
                    ],
                ),
            ],
            now,
        )
        .unwrap();
    }
    let run = |args: &[&str]| {
        let out = super::util::tapes(h)
            .arg("stats")
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run(&["--since", "7d", "--json"])).unwrap();
    assert_eq!(json["current"]["sessions"], 2);
    assert_eq!(json["current"]["tokens"], 4000);
    assert!((json["current"]["cost"].as_f64().unwrap() - 0.018).abs() < 1e-12);
    assert_eq!(json["unpriced"], serde_json::json!(["mystery-9"]));
    // 7 days from a time that is not midnight touch 8 calendar days.
    let days = json["by_day"].as_array().unwrap().len();
    assert!(days == 7 || days == 8, "{days}");
    let only_models: serde_json::Value =
        serde_json::from_str(&run(&["--json", "--by", "model"])).unwrap();
    assert!(only_models.get("by_member").is_none() && only_models.get("by_model").is_some());

    let text = run(&["--since", "7d"]);
    assert!(
        text.contains("SESSIONS") && text.contains("$0.02"),
        "{text}"
    );
    assert!(
        text.contains("unpriced models (counted as $0): mystery-9"),
        "{text}"
    );
    assert!(
        text.contains("By member") && text.contains("By day"),
        "{text}"
    );
}
