//! Sharing and the secret gate, through the library and the real binary: `tapes share`
//! (blocked by a planted secret of every kind, `--dry-run`, `--redact`, `--allow-secrets`,
//! stdin ids, the project's default visibility), the signed share record, `tapes unshare` and
//! expiry, `tapes shared` across teams, and the same secret scan in front of `tapes push`.
//!
//! Every person has their own `TAPES_HOME` made with `tapes init`; teams are set up through
//! the teams library on those homes' stores (stores are always closed again before the binary
//! runs: the store is single-process). Share records reach a teammate's store by copying the
//! ref values, as replication will.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a public share says when no relay with a public page is configured.
const NO_PAGE: &str = "no relay with a public page is configured, so there is no web page for it; teammates fetch it by id (`tapes storage configure --relay <ticket>` adds a relay)";

use serde_json::{json, Value};
use tapes::home::Home;
use tapes::identity::Identity;
use tapes::import::ingest::{ingest, Incoming};
use tapes::import::ParsedSession;
use tapes::protocol::manifest::TeamRole;
use tapes::protocol::{
    ContentBlock, ImageSource, MemberId, Node, NodeBody, NodeId, NodeMeta, Role, SessionId,
    StoredObject, TeamId, ToolResultPart,
};
use tapes::session::sample::{self, Shape};
use tapes::session::{session_ref_key, SessionRecord, Visibility};
use tapes::share::secrets::SecretKind;
use tapes::share::{self, Audience, SecretPolicy, ShareOptions, SignedShare};
use tapes::store::backend::RefUpdate;
use tapes::store::Store;
use tapes::team::{self, InviteOptions};

const HOUR: i64 = 3_600_000;

// Every secret-looking literal is split with `concat!` so this file itself does not trip
// secret scanners (including tapes' own). They are the shapes `src/share/secrets.rs` tests with.
const OPENAI: &str = concat!("sk-", "proj-", "Xq7vB2mK9pLw", "4Rt8Yz3Nc6Hd", "1Gf5Js0Ua");
const ANTHROPIC: &str = concat!(
    "sk-",
    "ant-",
    "api03-",
    "R2d2C3p0Xw9Y",
    "v8Uq7Tp6So5R",
    "n4Qm3Pl2Ok1N",
    "j0Mi-Hh_Gg-A",
    "AAA"
);
const AWS_ACCESS: &str = concat!("AK", "IA", "Z7QX4M2N8P5R", "3T6V");
const AWS_SECRET: &str = concat!("wJalrXUtnFEM", "I/K7MDENG/", "bPxRfiCYEXAM", "PLEKEY");
const GITHUB: &str = concat!("gh", "p_", "aB3dE5gH7jK9", "mN1pQ3sT5vW7", "yZ9bC1dF3hJ5");
const SLACK: &str = concat!(
    "xo",
    "xb-",
    "2150000000-4",
    "270000000-Xk",
    "9Lm2Np5Qr8St",
    "1Uv4Wx7Yz0"
);
const STRIPE: &str = concat!("sk_", "live_", "51H8xYzAbCdE", "f0123456789G", "hIjKl");
const GOOGLE: &str = concat!("AI", "za", "SyD3mK9pLw4R", "t8Yz3Nc6Hd1G", "f5Js0Ua7Vb2");
const PEM: &str = concat!(
    "-----BEGIN ",
    "RSA PRIVATE",
    " KEY-----\n",
    "MIIEowIBAAKC",
    "AQEA7Xq2b9Lm",
    "4Np6Qr8St1Uv",
    "3Wx5Yz7Ab9Cd",
    "1Ef3Gh5Ij7Kl",
    "9Mn1Op\n",
    "3Qr5St7Uv9Wx",
    "1Yz3Ab5Cd7Ef",
    "9Gh1Ij3Kl5Mn",
    "7Op9Qr1St3Uv",
    "5Wx7Yz9Ab1Cd",
    "3Ef5==\n",
    "-----END ",
    "RSA PRIVATE",
    " KEY-----"
);
const JWT: &str = concat!(
    "eyJ",
    "hbGciOiJIUzI",
    "1NiIsInR5cCI",
    "6IkpXVCJ9",
    ".",
    "eyJzdWIiOiIx",
    "MjM0NTY3ODkw",
    "IiwibmFtZSI6",
    "IkpvaG4ifQ",
    ".",
    "SflKxwRJSMeK",
    "KF2QT4fwpMeJ",
    "f36POk6yJV_a",
    "dQssw5c"
);
const DB_PASSWORD: &str = concat!("s3cr3t", "-Pa55w0rd!");
const HIGH_ENTROPY: &str = concat!("Zq8Lm3Xv9Tn2", "Rb7W", "c4Hd6Jf1Kg5P", "s0Ay8Ue3");

/// Every secret string planted anywhere in this file's sessions.
const ALL_SECRETS: [&str; 12] = [
    OPENAI,
    ANTHROPIC,
    AWS_ACCESS,
    AWS_SECRET,
    GITHUB,
    SLACK,
    STRIPE,
    GOOGLE,
    PEM,
    JWT,
    DB_PASSWORD,
    HIGH_ENTROPY,
];

const ALL_KINDS: [SecretKind; 12] = [
    SecretKind::OpenAiKey,
    SecretKind::AnthropicKey,
    SecretKind::AwsAccessKey,
    SecretKind::AwsSecretKey,
    SecretKind::GitHubToken,
    SecretKind::SlackToken,
    SecretKind::StripeKey,
    SecretKind::GoogleApiKey,
    SecretKind::PrivateKeyBlock,
    SecretKind::Jwt,
    SecretKind::ConnectionStringPassword,
    SecretKind::HighEntropy,
];

// ------------------------------------------------------------------------------------------
// People, homes, the binary
// ------------------------------------------------------------------------------------------

struct World {
    dir: tempfile::TempDir,
}

struct Person {
    name: &'static str,
    home: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
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

    /// `tapes init --name <name>` in a fresh home.
    fn person(&self, name: &'static str) -> Person {
        let person = Person {
            name,
            home: self.work().join(format!("{name}-home")),
        };
        self.ok(&person, &["init", "--name", name]);
        person
    }

    fn run_with(&self, who: &Person, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = super::util::tapes(&who.home);
        cmd.current_dir(self.work()).args(args);
        if let Some(input) = stdin {
            cmd.write_stdin(input);
        }
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn run(&self, who: &Person, args: &[&str]) -> Run {
        self.run_with(who, args, None)
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, who: &Person, args: &[&str]) -> String {
        let run = self.run(who, args);
        assert_eq!(
            run.code,
            0,
            "{} $ tapes {}\nstdout: {}\nstderr: {}",
            who.name,
            args.join(" "),
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Runs and requires exit code 1; returns the run.
    fn fails(&self, who: &Person, args: &[&str]) -> Run {
        let run = self.run(who, args);
        assert_eq!(
            run.code,
            1,
            "{} $ tapes {}\nstdout: {}\nstderr: {}",
            who.name,
            args.join(" "),
            run.stdout,
            run.stderr
        );
        run
    }

    /// Writes `session` as a Claude Code transcript and imports it into `who`'s home with
    /// `tapes import`; returns its tapes session id.
    fn import(&self, who: &Person, session: &ParsedSession) -> SessionId {
        let dir = self.work().join(format!("{}-transcripts", who.name));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.jsonl", session.source_id));
        std::fs::write(&file, sample::claude_jsonl(session)).unwrap();
        self.ok(who, &["import", file.to_str().unwrap()]);
        let id = SessionId::derive("claude", &session.source_id);
        let store = who.store();
        let record = store.session(&id).unwrap().expect("the import made it");
        assert_eq!(
            store.chain(&record.head).unwrap().len(),
            session.messages.len(),
            "one node per message"
        );
        id
    }
}

impl Person {
    fn home(&self) -> Home {
        Home::at(&self.home)
    }

    /// Opens this person's store; drop it before running the binary for them.
    fn store(&self) -> Store {
        Store::open(&self.home().store_dir()).unwrap()
    }

    fn identity(&self) -> Identity {
        Identity::load(&self.home()).unwrap()
    }

    fn id(&self) -> MemberId {
        MemberId(self.identity().verifying_key().to_bytes())
    }
}

/// Every ref of a store: what "nothing was written" is compared on.
fn all_refs(who: &Person) -> BTreeMap<Vec<u8>, Vec<u8>> {
    who.store()
        .storage()
        .refs(b"")
        .map(|entry| entry.unwrap())
        .collect()
}

fn share_key(session: &SessionId, audience: &str) -> Vec<u8> {
    format!("share/{}/{audience}", session.to_hex()).into_bytes()
}

fn share_refs(who: &Person) -> Vec<(Vec<u8>, Vec<u8>)> {
    who.store()
        .storage()
        .refs(b"share/")
        .map(|entry| entry.unwrap())
        .collect()
}

fn signed_share(who: &Person, session: &SessionId, audience: &str) -> SignedShare {
    let raw = who
        .store()
        .storage()
        .get_ref(&share_key(session, audience))
        .unwrap()
        .unwrap_or_else(|| panic!("no share record of {} for {audience}", session.short()));
    SignedShare::decode(&raw).unwrap()
}

/// Sends every share record `from` holds to `to`, as replication will.
fn copy_shares(from: &Person, to: &Person) {
    let records = share_refs(from);
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

/// `owner` creates a team named `name` and lets each of `others` in (invite, join request,
/// accept, complete), all through the teams library on their stores; every member's store
/// ends up with the final chain.
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

// ------------------------------------------------------------------------------------------
// Sessions with planted secrets
// ------------------------------------------------------------------------------------------

/// Where a secret was planted: the message (= node index), the part of it the scanner names,
/// and what it must be found as.
#[derive(Debug, Clone, Copy)]
struct Plant {
    node: usize,
    field: &'static str,
    kind: SecretKind,
    secret: &'static str,
}

fn text_of(block: &mut ContentBlock) -> &mut String {
    match block {
        ContentBlock::Text { text } | ContentBlock::Thinking { text, .. } => text,
        other => panic!("not a text block: {other:?}"),
    }
}

fn tool_input(block: &mut ContentBlock) -> &mut String {
    match block {
        ContentBlock::ToolUse { input, .. } => input,
        other => panic!("not a tool use: {other:?}"),
    }
}

fn tool_result(block: &mut ContentBlock) -> &mut String {
    match block {
        ContentBlock::ToolResult { content, .. } => match &mut content[0] {
            ToolResultPart::Text { text } => text,
            other => panic!("not a text part: {other:?}"),
        },
        other => panic!("not a tool result: {other:?}"),
    }
}

/// A generated Claude Code session (seed `seed`) with one secret of every kind the scanner
/// knows, planted in user and assistant text, thinking, tool inputs (nested JSON) and tool
/// results; the last message stays clean.
fn planted_session(seed: u64) -> (ParsedSession, Vec<Plant>) {
    let mut s = sample::session(seed, 0, Shape::default());
    assert_eq!(s.messages.len(), 10, "the default shape has 4 tool rounds");
    let m = &mut s.messages;
    text_of(&mut m[0].blocks[0]).push_str(&format!("\nexport OPENAI_API_KEY={OPENAI} # rotate"));
    text_of(&mut m[1].blocks[0]).push_str(&format!("\nANTHROPIC_API_KEY='{ANTHROPIC}'"));
    *tool_input(&mut m[1].blocks[2]) = json!({
        "command": "./deploy.sh --env staging",
        "env": { "vars": [
            { "name": "GH_TOKEN", "value": GITHUB },
            { "name": "AWS_ACCESS_KEY_ID", "value": AWS_ACCESS },
        ]},
    })
    .to_string();
    tool_result(&mut m[2].blocks[0]).push_str(&format!(
        "[default]\naws_secret_access_key = {AWS_SECRET}\nregion = us-east-1\n"
    ));
    text_of(&mut m[3].blocks[1]).push_str(&format!(" Using SLACK_BOT_TOKEN={SLACK} for alerts."));
    *tool_input(&mut m[3].blocks[2]) = json!({
        "request": { "method": "GET", "headers": { "Authorization": format!("Bearer {JWT}") } },
    })
    .to_string();
    tool_result(&mut m[4].blocks[0]).push_str(&format!("$ cat id_rsa\n{PEM}\n$ ls\n"));
    text_of(&mut m[5].blocks[1]).push_str(&format!(" Stripe.api_key = '{STRIPE}'"));
    tool_result(&mut m[6].blocks[0]).push_str(&format!(
        "DATABASE_URL=postgresql://app_user:{DB_PASSWORD}@db.internal:5432/app\n"
    ));
    *tool_input(&mut m[7].blocks[2]) = json!({
        "url": format!("https://maps.googleapis.com/maps/api/geocode/json?key={GOOGLE}&q=1"),
        "options": { "retries": 2 },
    })
    .to_string();
    tool_result(&mut m[8].blocks[0]).push_str(&format!("token: {HIGH_ENTROPY} (expires)\n"));
    let plant = |node, field, kind, secret| Plant {
        node,
        field,
        kind,
        secret,
    };
    let plants = vec![
        plant(0, "text", SecretKind::OpenAiKey, OPENAI),
        plant(1, "thinking", SecretKind::AnthropicKey, ANTHROPIC),
        plant(1, "tool_input", SecretKind::GitHubToken, GITHUB),
        plant(1, "tool_input", SecretKind::AwsAccessKey, AWS_ACCESS),
        plant(2, "tool_result", SecretKind::AwsSecretKey, AWS_SECRET),
        plant(3, "text", SecretKind::SlackToken, SLACK),
        plant(3, "tool_input", SecretKind::Jwt, JWT),
        plant(4, "tool_result", SecretKind::PrivateKeyBlock, PEM),
        plant(5, "text", SecretKind::StripeKey, STRIPE),
        plant(
            6,
            "tool_result",
            SecretKind::ConnectionStringPassword,
            DB_PASSWORD,
        ),
        plant(7, "tool_input", SecretKind::GoogleApiKey, GOOGLE),
        plant(8, "tool_result", SecretKind::HighEntropy, HIGH_ENTROPY),
    ];
    let mut kinds: Vec<SecretKind> = plants.iter().map(|p| p.kind).collect();
    kinds.sort();
    assert_eq!(kinds, ALL_KINDS, "one planted secret of each kind");
    (s, plants)
}

/// Every string a node carries, in full: model, texts, thinking (and its signature), tool
/// names, ids and inputs (raw, and each string inside the JSON decoded, so escapes cannot
/// hide anything), tool results, image references and unmodeled blocks, and the metadata.
fn strings_of(node: &Node) -> Vec<String> {
    fn json_strings(text: &str, out: &mut Vec<String>) {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Value::Object(map) => {
                    for (k, v) in map {
                        out.push(k.clone());
                        walk(v, out);
                    }
                }
                _ => {}
            }
        }
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            walk(&value, out);
        }
    }
    let mut out = vec![node.body.model.clone()];
    for block in &node.body.blocks {
        match block {
            ContentBlock::Text { text } => out.push(text.clone()),
            ContentBlock::Thinking { text, signature } => {
                out.push(text.clone());
                out.extend(signature.clone());
            }
            ContentBlock::ToolUse { id, name, input } => {
                out.extend([id.clone(), name.clone(), input.clone()]);
                json_strings(input, &mut out);
            }
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                ..
            } => {
                out.push(tool_use_id.clone());
                for part in content {
                    match part {
                        ToolResultPart::Text { text } => out.push(text.clone()),
                        ToolResultPart::Image { source, .. } => {
                            if let ImageSource::Reference { uri } = source {
                                out.push(uri.clone())
                            }
                        }
                    }
                }
            }
            ContentBlock::Image { source, .. } => {
                if let ImageSource::Reference { uri } = source {
                    out.push(uri.clone())
                }
            }
            ContentBlock::Other { kind, json } => {
                out.extend([kind.clone(), json.clone()]);
                json_strings(json, &mut out);
            }
        }
    }
    out.push(format!("{:?}", node.meta));
    out
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The chain of session `id`: (node id, stored bytes, decoded node), root first.
fn chain_of(store: &Store, id: &SessionId) -> Vec<(NodeId, Vec<u8>, Node)> {
    let head = store.session(id).unwrap().unwrap().head;
    store
        .chain(&head)
        .unwrap()
        .into_iter()
        .map(|(node, body)| {
            let bytes = store.storage().get_object(&node).unwrap().unwrap();
            (node, bytes, body)
        })
        .collect()
}

/// The first `n` characters of `s`.
fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// No planted secret (nor its first 10 characters: masks reveal at most 6) in `text`.
fn assert_no_secret_in(text: &str, what: &str) {
    for secret in ALL_SECRETS {
        assert!(!text.contains(secret), "{what} reveals a secret: {text}");
        let start = prefix(secret, 10);
        assert!(!text.contains(&start), "{what} reveals `{start}…`: {text}");
    }
}

// ------------------------------------------------------------------------------------------
// The secret gate of `tapes share`
// ------------------------------------------------------------------------------------------

#[test]
fn a_planted_secret_of_every_kind_blocks_the_share_and_redact_shares_a_clean_copy() {
    let world = World::new();
    let alice = world.person("alice");
    let (session, plants) = planted_session(7);
    let id = world.import(&alice, &session);
    let team = team(&alice, "Paper Compute", &[]);

    // The library finds exactly the planted secrets, each where it was planted.
    let hits = share::scan_session(&alice.store(), &id).unwrap();
    assert_eq!(
        hits.len(),
        plants.len(),
        "exactly the planted secrets: {:#?}",
        hits.iter().map(|h| h.describe()).collect::<Vec<_>>()
    );
    let chain_before = chain_of(&alice.store(), &id);
    for plant in &plants {
        let hit = hits
            .iter()
            .find(|h| h.finding.finding.kind == plant.kind)
            .unwrap_or_else(|| panic!("{:?} not found", plant.kind));
        assert_eq!(hit.index, plant.node, "{plant:?}");
        assert_eq!(hit.node, chain_before[plant.node].0, "{plant:?}");
        assert_eq!(hit.finding.field, plant.field, "{plant:?}");
        let masked = &hit.finding.finding.masked;
        let n = plant.secret.chars().count();
        assert!(masked.contains(&format!("…({n} chars)…")), "{masked}");
        let parts: Vec<&str> = masked.split('…').collect();
        assert!(plant.secret.starts_with(parts[0]), "{masked}");
        assert!(plant.secret.ends_with(parts[2]), "{masked}");
        assert!(!masked.contains(plant.secret));
    }

    let refs_before = all_refs(&alice);
    let original_raw = alice.store().session_raw(&id).unwrap().unwrap();

    // Blocked: exit 1, the list on stderr, nothing written.
    let blocked = world.fails(&alice, &["share", &id.short(), "--team", "Paper Compute"]);
    let stderr = &blocked.stderr;
    assert!(
        stderr.contains(&format!(
            "12 possible secrets in session {}; nothing was shared.",
            id.short()
        )),
        "{stderr}"
    );
    for hit in &hits {
        assert!(stderr.contains(&hit.describe()), "{stderr}");
    }
    for plant in &plants {
        let masked = &hits
            .iter()
            .find(|h| h.finding.finding.kind == plant.kind)
            .unwrap()
            .finding
            .finding
            .masked;
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(&format!("session {}", id.short()))
                    && line.contains(&format!("node #{} ", plant.node))
                    && line.contains(&format!("({})", plant.field))
                    && line.contains(plant.kind.label())
                    && line.contains(masked.as_str())),
            "{plant:?} is not listed: {stderr}"
        );
    }
    assert!(
        stderr.contains("--redact")
            && stderr.contains("--dry-run")
            && stderr.contains("--allow-secrets"),
        "{stderr}"
    );
    assert_no_secret_in(stderr, "the blocked share's stderr");
    assert_no_secret_in(&blocked.stdout, "the blocked share's stdout");
    assert_eq!(
        all_refs(&alice),
        refs_before,
        "a blocked share writes nothing"
    );
    assert!(share_refs(&alice).is_empty());
    assert_eq!(
        alice.store().session(&id).unwrap().unwrap().visibility,
        Visibility::Private
    );

    // --dry-run: the same list, exit 0, nothing written.
    let dry = world.ok(
        &alice,
        &["share", &id.short(), "--team", "Paper Compute", "--dry-run"],
    );
    assert!(
        dry.starts_with(&format!("{}: 12 possible secrets;", id.short())),
        "{dry}"
    );
    assert!(dry.contains("[REDACTED:<kind>]"), "{dry}");
    for hit in &hits {
        assert!(dry.contains(&hit.describe()), "{dry}");
    }
    assert_no_secret_in(&dry, "the dry run");
    assert_eq!(all_refs(&alice), refs_before, "a dry run writes nothing");

    // --redact: a new session, a new chain without any of the secrets, shared in its place.
    let out = world.ok(
        &alice,
        &["share", &id.short(), "--team", "Paper Compute", "--redact"],
    );
    let store = alice.store();
    let sessions: Vec<SessionId> = store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(sessions.len(), 2, "the original and its redacted copy");
    let copy = *sessions.iter().find(|s| **s != id).unwrap();
    assert_eq!(
        out.trim(),
        format!(
            "shared a redacted copy {} of {} with team \"Paper Compute\" (12 spans redacted; the original is untouched)",
            copy.short(),
            id.short()
        )
    );
    let copy_record = store.session(&copy).unwrap().unwrap();
    assert_eq!(
        copy_record.lineage.parent,
        Some(id),
        "its parent is the original"
    );
    assert_eq!(copy_record.visibility, Visibility::Team(team));
    assert_eq!(copy_record.owner, Some(alice.id()));
    let copy_chain = chain_of(&store, &copy);
    assert_eq!(copy_chain.len(), chain_before.len());
    let mut markers = String::new();
    for (i, (node, bytes, body)) in copy_chain.iter().enumerate() {
        assert_ne!(
            *node, chain_before[i].0,
            "node #{i} of the copy is a new node"
        );
        for text in strings_of(body) {
            for secret in ALL_SECRETS {
                assert!(!text.contains(secret), "node #{i} of the copy: {text}");
            }
            if text.contains("[REDACTED:") {
                markers.push_str(&text);
            }
        }
        for secret in ALL_SECRETS {
            assert!(
                !contains_bytes(bytes, secret.as_bytes()),
                "node #{i}'s stored bytes"
            );
        }
    }
    for kind in ALL_KINDS {
        assert!(
            markers.contains(&format!("[REDACTED:{}]", kind.label())),
            "no marker for {kind:?}"
        );
    }
    // The copy's record (title, first prompt) and share record carry nothing either.
    let copy_raw = store.session_raw(&copy).unwrap().unwrap();
    for secret in ALL_SECRETS {
        assert!(!contains_bytes(&copy_raw, secret.as_bytes()));
    }
    assert!(share::scan_session(&store, &copy).unwrap().is_empty());
    drop(store);
    let shared = signed_share(&alice, &copy, &team.to_hex());
    assert_eq!(shared.record.session, copy);
    assert_eq!(shared.record.head, copy_record.head);
    assert_eq!(shared.record.audience, Audience::Team(team));
    assert!(shared
        .record
        .title
        .as_deref()
        .is_some_and(|t| t.ends_with("(redacted)")));
    assert_no_secret_in(&format!("{:?}", shared.record), "the share record");

    // The original is untouched: same record, head and objects, byte for byte, not shared.
    let store = alice.store();
    assert_eq!(store.session_raw(&id).unwrap().unwrap(), original_raw);
    let chain_after = chain_of(&store, &id);
    assert_eq!(
        chain_after
            .iter()
            .map(|(n, b, _)| (*n, b.clone()))
            .collect::<Vec<_>>(),
        chain_before
            .iter()
            .map(|(n, b, _)| (*n, b.clone()))
            .collect::<Vec<_>>()
    );
    assert!(store
        .storage()
        .get_ref(&share_key(&id, &team.to_hex()))
        .unwrap()
        .is_none());
    drop(store);

    // --allow-secrets shares the original as it is.
    let out = world.ok(
        &alice,
        &[
            "share",
            &id.short(),
            "--team",
            "Paper Compute",
            "--allow-secrets",
        ],
    );
    assert_eq!(
        out.trim(),
        format!("shared {} with team \"Paper Compute\"", id.short())
    );
    let shared = signed_share(&alice, &id, &team.to_hex());
    assert_eq!(shared.record.session, id);
    assert_eq!(shared.record.head, chain_before.last().unwrap().0);
    let store = alice.store();
    assert_eq!(
        store.session(&id).unwrap().unwrap().visibility,
        Visibility::Team(team)
    );
    assert_eq!(chain_of(&store, &id).len(), chain_before.len());
    assert_eq!(store.sessions().unwrap().len(), 2, "no further copy");
}

#[test]
fn redaction_through_the_library_catches_every_kind_in_ingested_blocks() {
    // The same planted session, ingested directly (no importer in between).
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    home.ensure().unwrap();
    let me = Identity::generate(tapes::identity::Profile {
        name: "alice".into(),
        email: None,
    })
    .unwrap();
    me.save(&home).unwrap();
    let store = Store::open(&home.store_dir()).unwrap();
    store
        .set_local_owner(&MemberId(me.verifying_key().to_bytes()))
        .unwrap();
    let (mut session, plants) = planted_session(11);
    // A title (a Claude summary, a Codex thread name) can carry one too.
    session.title = Some(format!("deploy with GH_TOKEN={GITHUB}"));
    let report = ingest(
        &store,
        &[Incoming {
            session,
            path: String::new(),
        }],
        0,
    )
    .unwrap();
    let id = report.sessions[0].id;
    let before = chain_of(&store, &id);

    let options = |secrets| ShareOptions {
        audience: Audience::Public,
        title: None,
        note: None,
        expires_ms: None,
        secrets,
    };
    let err = share::share(&store, &me, &id, &options(SecretPolicy::Block), 1_000).unwrap_err();
    match &err {
        share::ShareError::Secrets { count, list, .. } => {
            // Every planted node secret, plus the one in the session's title.
            assert_eq!(*count, plants.len() + 1);
            assert!(list.contains("record (title): GitHub token"), "{list}");
            for kind in ALL_KINDS {
                assert!(list.contains(kind.label()), "{list}");
            }
        }
        other => panic!("expected the secret block, got {other}"),
    }
    assert!(share::shares_of(&store, &id).unwrap().is_empty());

    let done = share::share(&store, &me, &id, &options(SecretPolicy::Redact), 2_000).unwrap();
    assert_ne!(done.session, id);
    assert_eq!(done.redacted_spans, plants.len());
    for (i, (_, _, node)) in chain_of(&store, &done.session).iter().enumerate() {
        let all = strings_of(node).join("\n");
        for plant in &plants {
            assert!(!all.contains(plant.secret), "node #{i}: {all}");
            if plant.node == i {
                assert!(
                    all.contains(&format!("[REDACTED:{}]", plant.kind.label())),
                    "node #{i}: {all}"
                );
            }
        }
    }
    // Tool inputs stay JSON after redaction.
    for (_, _, node) in chain_of(&store, &done.session) {
        for block in &node.body.blocks {
            if let ContentBlock::ToolUse { input, .. } = block {
                serde_json::from_str::<Value>(input).unwrap();
            }
        }
    }
    let after = chain_of(&store, &id);
    assert_eq!(
        after
            .iter()
            .map(|(n, b, _)| (*n, b.clone()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|(n, b, _)| (*n, b.clone()))
            .collect::<Vec<_>>(),
        "the original is untouched"
    );
    let copy = store.session(&done.session).unwrap().unwrap();
    assert_eq!(
        copy.title.as_deref(),
        Some("deploy with GH_TOKEN=[REDACTED:GitHub token] (redacted)")
    );
    let copy_raw = store.session_raw(&done.session).unwrap().unwrap();
    let shared = share::shares_of(&store, &done.session).unwrap();
    assert_eq!(shared.len(), 1);
    for secret in ALL_SECRETS {
        assert!(
            !contains_bytes(&copy_raw, secret.as_bytes()),
            "the copy's record"
        );
        assert!(
            !contains_bytes(&shared[0].1.encode(), secret.as_bytes()),
            "the share record"
        );
    }
    assert_eq!(copy.lineage.parent, Some(id));
    assert_eq!(copy.visibility, Visibility::Public);
    assert_eq!(
        store.session(&id).unwrap().unwrap().visibility,
        Visibility::Private
    );
}

// ------------------------------------------------------------------------------------------
// The share record: signed, unshare, expiry
// ------------------------------------------------------------------------------------------

#[test]
fn the_share_record_is_signed_and_carries_everything_and_unshare_revokes_it() {
    let world = World::new();
    let alice = world.person("alice");
    let id = world.import(&alice, &sample::session(3, 0, Shape::default()));
    let team = team(&alice, "Paper Compute", &[]);

    let before = tapes::now_ms();
    let out = world.ok(
        &alice,
        &[
            "share",
            &id.short(),
            "--team",
            "Paper Compute",
            "--note",
            "look at the retry loop",
            "--title",
            "Webhook retries",
            "--expires",
            "7d",
        ],
    );
    let after = tapes::now_ms();
    assert_eq!(
        out.trim(),
        format!("shared {} with team \"Paper Compute\"", id.short())
    );

    let key = share_key(&id, &team.to_hex());
    let raw = alice.store().storage().get_ref(&key).unwrap().unwrap();
    let shared = SignedShare::decode(&raw).unwrap();
    assert!(shared.verify());
    let r = &shared.record;
    let head = alice.store().session(&id).unwrap().unwrap().head;
    assert_eq!(r.session, id);
    assert_eq!(r.head, head);
    assert_eq!(r.audience, Audience::Team(team));
    assert_eq!(r.sharer, alice.id());
    assert_eq!(r.sharer_name, "alice");
    assert_eq!(r.title.as_deref(), Some("Webhook retries"));
    assert_eq!(r.note.as_deref(), Some("look at the retry loop"));
    assert!((before..=after).contains(&r.shared_ms), "{}", r.shared_ms);
    let week = 7 * 24 * HOUR;
    assert!(
        (before + week..=after + week).contains(&r.expires_ms.unwrap()),
        "{:?}",
        r.expires_ms
    );
    assert!(!r.revoked);
    assert!(shared.is_live(after));
    assert!(
        !shared.is_live(r.expires_ms.unwrap()),
        "expired at its expiry"
    );
    let record = alice.store().session(&id).unwrap().unwrap();
    assert_eq!(record.visibility, Visibility::Team(team));
    assert_eq!(record.note.as_deref(), Some("look at the retry loop"));
    assert_eq!(record.expires_ms, r.expires_ms);

    // Any changed byte breaks it; a changed note (still well-formed) fails on the signature.
    for i in 0..raw.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = raw.clone();
            bad[i] ^= bit;
            assert!(
                SignedShare::decode(&bad).is_err(),
                "byte {i} ^ {bit:#x} still decodes"
            );
        }
    }
    let at = raw
        .windows(b"retry loop".len())
        .position(|w| w == b"retry loop")
        .unwrap();
    let mut forged = raw.clone();
    forged[at] = b'R';
    assert_eq!(
        SignedShare::decode(&forged).unwrap_err(),
        tapes::protocol::signed::ShareError::BadSignature
    );
    // A record re-signed by someone else than the sharer it names does not verify either.
    let mallory = Identity::generate(Default::default()).unwrap();
    let resigned = SignedShare::sign(shared.record.clone(), mallory.signing_key());
    assert!(!resigned.verify());
    assert!(SignedShare::decode(&resigned.encode()).is_err());

    // Unshare: a newer signed record marked revoked; the session is private again.
    let out = world.ok(&alice, &["unshare", &id.short()]);
    assert_eq!(
        out.trim(),
        format!("unshared {} (1 share revoked; access ends now)", id.short())
    );
    let revoked = signed_share(&alice, &id, &team.to_hex());
    assert!(revoked.verify());
    assert!(revoked.record.revoked);
    assert!(revoked.record.shared_ms >= r.shared_ms);
    assert_eq!(revoked.record.session, id);
    assert_eq!(revoked.record.sharer, alice.id());
    assert!(!revoked.is_live(revoked.record.shared_ms));
    assert!(!revoked.is_live(r.shared_ms));
    assert_eq!(
        alice.store().session(&id).unwrap().unwrap().visibility,
        Visibility::Private
    );
    // Nothing left to unshare.
    let again = world.fails(&alice, &["unshare", &id.short()]);
    assert!(
        again
            .stderr
            .contains("has no share to revoke; nothing changed"),
        "{}",
        again.stderr
    );

    // Shared with a team and publicly: unsharing the public share leaves the team's.
    world.ok(&alice, &["share", &id.short(), "--team", "Paper Compute"]);
    world.ok(&alice, &["share", &id.short(), "--public"]);
    assert_eq!(
        alice.store().session(&id).unwrap().unwrap().visibility,
        Visibility::Public
    );
    world.ok(&alice, &["unshare", &id.short(), "--public"]);
    assert!(signed_share(&alice, &id, "public").record.revoked);
    assert!(!signed_share(&alice, &id, &team.to_hex()).record.revoked);
    assert_eq!(
        alice.store().session(&id).unwrap().unwrap().visibility,
        Visibility::Team(team)
    );
}

#[test]
fn shared_with_me_honours_expiry_and_revocation_on_a_fixed_clock() {
    let world = World::new();
    let alice = world.person("alice");
    let bob = world.person("bob");
    let id = world.import(&alice, &sample::session(5, 0, Shape::default()));
    let team = team(&alice, "Paper Compute", &[&bob]);
    const T0: i64 = 1_767_225_600_000;

    {
        let (store, me) = (alice.store(), alice.identity());
        let options = ShareOptions {
            audience: Audience::Team(team),
            title: Some("flaky test".into()),
            note: Some("see the end".into()),
            expires_ms: Some(T0 + HOUR),
            secrets: SecretPolicy::Block,
        };
        let done = share::share(&store, &me, &id, &options, T0).unwrap();
        assert_eq!(done.session, id);
        assert_eq!(done.redacted_spans, 0);
    }
    copy_shares(&alice, &bob);
    let bob_store = bob.store();
    let me = bob.id();
    let listed = |now| share::shared_with_me(&bob_store, &me, &[team], now).unwrap();
    assert_eq!(listed(T0).len(), 1);
    assert_eq!(listed(T0 + HOUR - 1).len(), 1);
    assert!(listed(T0 + HOUR).is_empty(), "expired: no longer listed");
    assert!(listed(T0 + 2 * HOUR).is_empty());
    // Not in the team: not listed, even live.
    assert!(share::shared_with_me(&bob_store, &me, &[], T0)
        .unwrap()
        .is_empty());
    // The sharer does not see their own share.
    assert!(share::shared_with_me(&bob_store, &alice.id(), &[team], T0)
        .unwrap()
        .is_empty());
    drop(bob_store);

    // Unshare before expiry: from then on bob's copy of the record lists nothing.
    {
        let (store, me) = (alice.store(), alice.identity());
        assert_eq!(share::unshare(&store, &me, &id, None, T0 + 10).unwrap(), 1);
        let shares = share::shares_of(&store, &id).unwrap();
        assert_eq!(shares.len(), 1);
        assert!(shares[0].1.record.revoked);
        assert!(!shares[0].1.is_live(T0 + 10));
        assert_eq!(
            store.session(&id).unwrap().unwrap().visibility,
            Visibility::Private
        );
    }
    copy_shares(&alice, &bob);
    let bob_store = bob.store();
    assert!(share::shared_with_me(&bob_store, &me, &[team], T0 + 20)
        .unwrap()
        .is_empty());
}

// ------------------------------------------------------------------------------------------
// `tapes shared`
// ------------------------------------------------------------------------------------------

#[test]
fn shared_lists_what_teammates_shared_across_my_teams_newest_first_with_unread_marks() {
    let world = World::new();
    let alice = world.person("alice");
    let bob = world.person("bob");
    let carol = world.person("carol");
    let s: Vec<SessionId> = (0..5)
        .map(|i| world.import(&alice, &sample::session(21, i, Shape::default())))
        .collect();
    let bobs = world.import(&bob, &sample::session(22, 0, Shape::default()));
    let carols = world.import(&carol, &sample::session(23, 0, Shape::default()));
    let paper = team(&alice, "Paper Compute", &[&bob, &carol]);
    let infra = team(&alice, "Infra", &[&bob]);
    team(&alice, "Secret Club", &[&carol]);

    assert_eq!(
        world.ok(&bob, &["shared"]).trim(),
        "nothing is shared with you yet"
    );

    // In share order: each later than the one before.
    let shares: [(&Person, SessionId, &[&str]); 7] = [
        (
            &alice,
            s[0],
            &["--team", "Paper Compute", "--note", "first"],
        ),
        (
            &alice,
            s[1],
            &["--team", "Infra", "--title", "Infra things"],
        ),
        (&alice, s[2], &["--team", "Secret Club"]),
        (&bob, bobs, &["--team", "Paper Compute"]),
        (&alice, s[3], &["--public"]),
        (&carol, carols, &["--team", "Paper Compute"]),
        (
            &alice,
            s[4],
            &["--team", "Paper Compute", "--expires", "1h"],
        ),
    ];
    for (who, id, extra) in shares {
        let short = id.short();
        let mut args = vec!["share", short.as_str()];
        args.extend_from_slice(extra);
        world.ok(who, &args);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    copy_shares(&alice, &bob);
    copy_shares(&carol, &bob);

    // Newest first: alice's s4, carol's, alice's public s3, alice's s1 (Infra), alice's s0.
    // Not listed: s2 (a team bob is not in) and bob's own share.
    let want = [s[4], carols, s[3], s[1], s[0]];
    let json: Value = serde_json::from_str(&world.ok(&bob, &["shared", "--json"])).unwrap();
    let rows = json.as_array().unwrap();
    let listed: Vec<String> = rows
        .iter()
        .map(|r| r["session"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        want.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
        "{json:#}"
    );
    assert!(rows.iter().all(|r| r["unread"] == true), "{json:#}");
    let times: Vec<i64> = rows
        .iter()
        .map(|r| r["shared_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
    assert_eq!(rows[0]["audience"], paper.to_hex());
    assert!(rows[0]["expires_ms"].as_i64().is_some());
    assert_eq!(rows[1]["sharer_name"], "carol");
    assert_eq!(rows[1]["sharer"], carol.id().to_hex());
    assert_eq!(rows[2]["audience"], "public");
    assert_eq!(rows[3]["audience"], infra.to_hex());
    assert_eq!(rows[3]["title"], "Infra things");
    assert_eq!(rows[4]["note"], "first");
    assert_eq!(rows[4]["sharer_name"], "alice");

    // The human feed: a header, the group, one line per share, ● for unread.
    let text = world.ok(&bob, &["shared", "--mark-read"]);
    let all: Vec<&str> = text.lines().collect();
    assert!(
        all[0].contains("SHARER") && all[0].contains("NOTE"),
        "{text}"
    );
    assert_eq!(all[1], "TODAY", "{text}");
    let lines = &all[2..];
    assert_eq!(lines.len(), want.len(), "{text}");
    for (line, id) in lines.iter().zip(&want) {
        assert!(line.starts_with("● "), "{line}");
        assert!(line.contains(&format!("  {}  ", id.short())), "{line}");
        assert!(line.contains("just now"), "{line}");
    }
    assert!(lines[1].contains("  carol  "), "{}", lines[1]);
    assert!(
        lines[3].contains("  alice  ") && lines[3].contains("  Infra things  "),
        "{}",
        lines[3]
    );
    assert!(lines[4].ends_with("  \"first\""), "{}", lines[4]);
    assert!(!text.contains(&s[2].short()) && !text.contains(&bobs.short()));

    // --mark-read cleared the marks.
    let text = world.ok(&bob, &["shared"]);
    assert_eq!(text.lines().count(), want.len() + 2);
    assert!(!text.contains('●'), "{text}");
    let json: Value = serde_json::from_str(&world.ok(&bob, &["shared", "--json"])).unwrap();
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["unread"] == false));

    // Expiry, on bob's side: after s4's hour it is no longer shared with him.
    let now = tapes::now_ms();
    let bob_store = bob.store();
    let mine = [paper, infra];
    let live: Vec<SessionId> = share::shared_with_me(&bob_store, &bob.id(), &mine, now)
        .unwrap()
        .iter()
        .map(|s| s.record.session)
        .collect();
    assert_eq!(live, want);
    let later: Vec<SessionId> = share::shared_with_me(&bob_store, &bob.id(), &mine, now + 2 * HOUR)
        .unwrap()
        .iter()
        .map(|s| s.record.session)
        .collect();
    assert_eq!(later, &want[1..], "s4 expired");
    drop(bob_store);

    // Unshare reaches bob with the revoked record: s0 is gone from his list.
    world.ok(&alice, &["unshare", &s[0].short()]);
    copy_shares(&alice, &bob);
    let json: Value = serde_json::from_str(&world.ok(&bob, &["shared", "--json"])).unwrap();
    let listed: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["session"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        want[..4].iter().map(|s| s.to_hex()).collect::<Vec<_>>()
    );
    // Re-sharing s0 lists it again, on top.
    world.ok(&alice, &["share", &s[0].short(), "--team", "Paper Compute"]);
    copy_shares(&alice, &bob);
    let text = world.ok(&bob, &["shared"]);
    assert!(
        text.lines().nth(2).unwrap().contains(&s[0].short()),
        "{text}"
    );
}

// ------------------------------------------------------------------------------------------
// Choosing sessions and the audience
// ------------------------------------------------------------------------------------------

#[test]
fn ids_piped_on_stdin_are_all_shared() {
    let world = World::new();
    let alice = world.person("alice");
    let a = world.import(&alice, &sample::session(31, 0, Shape::default()));
    let (planted, _) = planted_session(32);
    let b = world.import(&alice, &planted);
    let team = team(&alice, "Paper Compute", &[]);

    // As `tapes search … | tapes share` would feed it: one id per line, the rest ignored.
    let input = format!(
        "{}  Refactor the invoice totals\n\n{}\n",
        a.short(),
        b.to_hex()
    );
    let run = world.run_with(
        &alice,
        &["share", "--team", "Paper Compute", "--allow-secrets"],
        Some(&input),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "shared {} with team \"Paper Compute\"\nshared {} with team \"Paper Compute\"\n",
            a.short(),
            b.short()
        )
    );
    for id in [a, b] {
        assert_eq!(signed_share(&alice, &id, &team.to_hex()).record.session, id);
    }

    // Without --allow-secrets the planted one is blocked while the clean one is shared, and
    // the exit code says something failed.
    let c = world.import(&alice, &sample::session(33, 0, Shape::default()));
    let (planted, _) = planted_session(34);
    let d = world.import(&alice, &planted);
    let run = world.run_with(
        &alice,
        &["share", "--public"],
        Some(&format!("{}\n{}\n", d.short(), c.short())),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "shared {} with everyone with the link\n{NO_PAGE}\n",
            c.short()
        )
    );
    assert!(
        run.stderr.contains(&format!(
            "12 possible secrets in session {}; nothing was shared.",
            d.short()
        )),
        "{}",
        run.stderr
    );
    signed_share(&alice, &c, "public");
    assert!(alice
        .store()
        .storage()
        .get_ref(&share_key(&d, "public"))
        .unwrap()
        .is_none());

    // Nothing on stdin.
    let run = world.run_with(&alice, &["share", "--public"], Some(""));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no session ids on stdin"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_projects_default_visibility_decides_where_a_plain_share_goes() {
    let world = World::new();
    let alice = world.person("alice");
    // Three sessions of project "billing-api", one of "infra".
    let ids: Vec<SessionId> = (0..4)
        .map(|i| {
            let mut session = sample::session(41, i, Shape::default());
            let project = if i < 3 { "billing-api" } else { "infra" };
            for m in &mut session.messages {
                m.meta.project = Some(project.into());
                m.meta.cwd = Some(format!("/home/dev/src/{project}"));
            }
            world.import(&alice, &session)
        })
        .collect();
    let project = |id: &SessionId| alice.store().session(id).unwrap().unwrap().summary.project;
    let p = project(&ids[0]);
    assert_eq!(p, "billing-api");
    let key = format!("default-visibility.{p}");
    // Two teams, so the "only team" fallback cannot decide.
    let paper = team(&alice, "Paper Compute", &[]);
    team(&alice, "Infra", &[]);

    world.ok(&alice, &["config", "set", &key, "public"]);
    assert_eq!(world.ok(&alice, &["config", "get", &key]).trim(), "public");
    let out = world.ok(&alice, &["share", &ids[0].short()]);
    assert_eq!(
        out.trim(),
        format!(
            "shared {} with everyone with the link\n{NO_PAGE}",
            ids[0].short()
        )
    );
    assert_eq!(
        signed_share(&alice, &ids[0], "public").record.audience,
        Audience::Public
    );
    assert_eq!(
        alice.store().session(&ids[0]).unwrap().unwrap().visibility,
        Visibility::Public
    );

    world.ok(&alice, &["config", "set", &key, "private"]);
    let refs = all_refs(&alice);
    let refused = world.fails(&alice, &["share", &ids[0].short()]);
    assert!(
        refused
            .stderr
            .contains(&format!("project {p} is private by default")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--team or --public"),
        "{}",
        refused.stderr
    );
    assert_eq!(all_refs(&alice), refs, "a refused share writes nothing");
    // Explicit flags still win.
    world.ok(
        &alice,
        &["share", &ids[0].short(), "--team", "Paper Compute"],
    );

    world.ok(&alice, &["config", "set", &key, "team:Paper Compute"]);
    for id in &ids[1..3] {
        let out = world.ok(&alice, &["share", &id.short()]);
        assert_eq!(
            out.trim(),
            format!("shared {} with team \"Paper Compute\"", id.short())
        );
        assert_eq!(
            signed_share(&alice, id, &paper.to_hex()).record.audience,
            Audience::Team(paper)
        );
    }
    // Another project has no default, and with two teams there is no only team.
    assert_eq!(project(&ids[3]), "infra");
    let which = world.fails(&alice, &["share", &ids[3].short()]);
    assert!(
        which
            .stderr
            .contains("you are in 2 teams; say which with --team"),
        "{}",
        which.stderr
    );
    assert!(share_refs(&alice)
        .iter()
        .all(|(k, _)| !k.starts_with(format!("share/{}", ids[3].to_hex()).as_bytes())));

    // Not a visibility, or not a setting: refused, and the old value stays.
    let bad = world.fails(&alice, &["config", "set", &key, "friends"]);
    assert!(
        bad.stderr.contains("`friends` is not a visibility"),
        "{}",
        bad.stderr
    );
    let bad = world.fails(&alice, &["config", "set", "colour", "blue"]);
    assert!(
        bad.stderr.contains("unknown setting `colour`"),
        "{}",
        bad.stderr
    );
    let bad = world.fails(&alice, &["config", "set", "default-visibility.", "public"]);
    assert!(bad.stderr.contains("name the project"), "{}", bad.stderr);
    assert_eq!(
        world.ok(&alice, &["config", "get", &key]).trim(),
        "team:Paper Compute"
    );
    let list = world.ok(&alice, &["config", "list"]);
    // The network mode is listed too (tests run LAN-only: TAPES_RELAYS=none).
    assert_eq!(
        list.trim(),
        format!("network.relays = none\n{key} = team:Paper Compute")
    );
}

// ------------------------------------------------------------------------------------------
// The secret scan in front of `tapes push`
// ------------------------------------------------------------------------------------------

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

/// Continues session `id` in `who`'s store by one message; returns the new head.
fn append(who: &Person, id: &SessionId, text: &str) -> NodeId {
    let store = who.store();
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

#[test]
fn push_is_refused_on_a_secret_in_what_it_would_send_unless_allowed() {
    let world = World::new();
    let alice = world.person("alice");
    let server = world.work().join("server");
    drop(Store::open(&server.join("store")).unwrap());
    world.ok(
        &alice,
        &["remote", "add", "origin", server.to_str().unwrap()],
    );
    let remote_head = |id: &SessionId| {
        Store::open(&server.join("store"))
            .unwrap()
            .session(id)
            .unwrap()
            .map(|r| r.head)
    };

    // A new session with planted secrets: nothing of it reaches the server.
    let (session, plants) = planted_session(51);
    let id = world.import(&alice, &session);
    let hits = share::scan_session(&alice.store(), &id).unwrap();
    let refused = world.fails(&alice, &["push", "origin", &id.short()]);
    let stderr = &refused.stderr;
    assert!(
        stderr.contains(&format!(
            "12 possible secrets in what would be pushed of session {}; nothing was pushed.",
            id.short()
        )),
        "{stderr}"
    );
    for hit in &hits {
        assert!(stderr.contains(&hit.describe()), "{stderr}");
    }
    for plant in &plants {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("node #{} ", plant.node))
                    && l.contains(plant.kind.label())),
            "{plant:?}: {stderr}"
        );
    }
    // The remote does not hold the session yet, so a redacted copy could go in its place.
    assert!(
        stderr.contains(
            "push a redacted copy in its place with --redact, see everything with --dry-run, or push as is with --allow-secrets"
        ),
        "{stderr}"
    );
    assert_no_secret_in(stderr, "the refused push");
    assert_eq!(remote_head(&id), None, "the remote is unchanged");
    {
        let server_store = Store::open(&server.join("store")).unwrap();
        for (node, _, _) in chain_of(&alice.store(), &id) {
            assert!(!server_store.has_node(&node).unwrap(), "no node was sent");
        }
    }

    let out = world.ok(&alice, &["push", "origin", &id.short(), "--allow-secrets"]);
    assert_eq!(
        out.trim(),
        format!("pushed {} to origin: 10 new nodes", id.short())
    );
    assert_eq!(
        remote_head(&id),
        Some(alice.store().session(&id).unwrap().unwrap().head)
    );
}

#[test]
fn push_scans_only_the_nodes_after_the_base() {
    let world = World::new();
    let alice = world.person("alice");
    let server = world.work().join("server");
    // The server already holds a session of alice's whose history has a key in it (pushed
    // with --allow-secrets some time ago).
    let id = {
        let store = Store::open(&server.join("store")).unwrap();
        store.set_local_owner(&alice.id()).unwrap();
        let mut session = sample::session(61, 0, Shape::default());
        text_of(&mut session.messages[0].blocks[0])
            .push_str(&format!("\nGH_TOKEN={GITHUB} gh pr list"));
        let report = ingest(
            &store,
            &[Incoming {
                session,
                path: String::new(),
            }],
            0,
        )
        .unwrap();
        report.sessions[0].id
    };
    let remote_head = || {
        Store::open(&server.join("store"))
            .unwrap()
            .session(&id)
            .unwrap()
            .unwrap()
            .head
    };
    world.ok(
        &alice,
        &["remote", "add", "origin", server.to_str().unwrap()],
    );
    world.ok(&alice, &["pull", &id.to_hex()]);

    // A clean continuation pushes without a word about the old key.
    let clean = append(&alice, &id, "now add a test for the retry path");
    let out = world.ok(&alice, &["push"]);
    assert_eq!(
        out.trim(),
        format!("pushed {} to origin: 1 new node", id.short())
    );
    assert_eq!(remote_head(), clean);

    // A continuation with a key in it is refused; the remote and the tracked base stay.
    let tracking = || std::fs::read_to_string(world.work().join(".tapes/tracking.json")).unwrap();
    let tracked = tracking();
    let leaky = append(
        &alice,
        &id,
        &format!("use Stripe.api_key = '{STRIPE}' here"),
    );
    let refused = world.fails(&alice, &["push"]);
    assert!(
        refused.stderr.contains(&format!(
            "1 possible secret in what would be pushed of session {}; nothing was pushed.",
            id.short()
        )),
        "{}",
        refused.stderr
    );
    // Node #11: its position in the whole chain (10 pulled, 1 pushed, then this one).
    assert!(
        refused.stderr.lines().any(|l| l.contains("node #11 ")
            && l.contains(&leaky.short())
            && l.contains(SecretKind::StripeKey.label())),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("GitHub"), "{}", refused.stderr);
    // The remote holds the history: a redacted copy is no option for a continuation.
    assert!(
        refused
            .stderr
            .contains("it would change node ids and break the chain the remote holds"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(
            "share a redacted copy with `tapes share --redact`, or push anyway with --allow-secrets"
        ),
        "{}",
        refused.stderr
    );
    assert_no_secret_in(&refused.stderr, "the refused push");
    assert_eq!(remote_head(), clean, "the remote is unchanged");
    assert_eq!(tracking(), tracked, "the base did not move");

    let out = world.ok(&alice, &["push", "--allow-secrets"]);
    assert_eq!(
        out.trim(),
        format!("pushed {} to origin: 1 new node", id.short())
    );
    assert_eq!(remote_head(), leaky);
}

// ------------------------------------------------------------------------------------------
// The share's own note and title; what a push carries of local paths
// ------------------------------------------------------------------------------------------

#[test]
fn a_key_in_the_share_note_or_title_is_refused_and_redact_shares_it_redacted() {
    let world = World::new();
    let alice = world.person("alice");
    let id = world.import(&alice, &sample::session(71, 0, Shape::default()));
    team(&alice, "Paper Compute", &[]);
    let refs_before = all_refs(&alice);
    let short = id.short();

    // The note is published on the relay's public page: a key in it blocks the share.
    let note = format!("deploy with {AWS_ACCESS} please");
    let refused = world.fails(
        &alice,
        &["share", &short, "--team", "Paper Compute", "--note", &note],
    );
    assert!(
        refused.stderr.contains(&format!(
            "1 possible secret in session {short}; nothing was shared."
        )),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&format!(
            "session {short} share (note): {}",
            SecretKind::AwsAccessKey.label()
        )),
        "{}",
        refused.stderr
    );
    assert_no_secret_in(&refused.stderr, "the refused share");
    assert_eq!(all_refs(&alice), refs_before, "nothing was written");

    // The same key cut by a line break, in the title.
    let (head, rest) = AWS_ACCESS.split_at(4);
    let title = format!("keys: {head}\n    {rest}");
    let refused = world.fails(
        &alice,
        &[
            "share",
            &short,
            "--team",
            "Paper Compute",
            "--title",
            &title,
        ],
    );
    assert!(
        refused.stderr.contains("share (title): AWS access key ID"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(rest), "{}", refused.stderr);
    assert_eq!(all_refs(&alice), refs_before, "nothing was written");

    // --dry-run lists it.
    let dry = world.ok(
        &alice,
        &[
            "share",
            &short,
            "--team",
            "Paper Compute",
            "--note",
            &note,
            "--dry-run",
        ],
    );
    assert!(
        dry.starts_with(&format!("{short}: 1 possible secret;")),
        "{dry}"
    );
    assert_no_secret_in(&dry, "the dry run");

    // --redact shares the (clean) session itself, with the note redacted.
    let out = world.ok(
        &alice,
        &[
            "share",
            &short,
            "--team",
            "Paper Compute",
            "--note",
            &note,
            "--redact",
        ],
    );
    assert!(
        out.starts_with(&format!("shared {short} with team")),
        "{out}"
    );
    assert!(
        out.contains("1 possible secret redacted in its note"),
        "{out}"
    );
    let team_id = team::list(&alice.store()).unwrap()[0].team_id();
    let shared = signed_share(&alice, &id, &team_id.to_hex());
    assert_eq!(
        shared.record.note.as_deref(),
        Some("deploy with [REDACTED:AWS access key ID] please")
    );
    let record_raw = alice.store().session_raw(&id).unwrap().unwrap();
    assert!(!contains_bytes(&record_raw, AWS_ACCESS.as_bytes()));
}

#[test]
fn what_a_push_sends_carries_no_local_paths() {
    let world = World::new();
    let alice = world.person("alice");
    let server = world.work().join("server");
    drop(Store::open(&server.join("store")).unwrap());
    world.ok(
        &alice,
        &["remote", "add", "origin", server.to_str().unwrap()],
    );
    let session = sample::session(81, 0, Shape::default());
    let project = session.messages[0].meta.project.clone().unwrap();
    let cwd = session.messages[0].meta.cwd.clone().unwrap();
    assert!(cwd.starts_with("/home/dev/"), "{cwd}");
    let id = world.import(&alice, &session);
    let local = alice.store().session(&id).unwrap().unwrap();
    assert!(
        local.source.path.contains("alice-transcripts"),
        "{}",
        local.source.path
    );

    world.ok(&alice, &["push", "origin", &id.short()]);
    let remote = Store::open(&server.join("store")).unwrap();
    let theirs = remote.session(&id).unwrap().unwrap();
    assert_eq!(theirs.source.path, "", "the source file path stays here");
    assert_eq!(theirs.head, local.head, "same history, same ids");
    for (_, node) in remote.chain(&theirs.head).unwrap() {
        assert_eq!(node.meta.cwd.as_deref(), Some(project.as_str()));
        assert!(!format!("{:?}", node.meta).contains("/home/dev"));
    }
    drop(remote);
    // Here, nothing changed.
    let store = alice.store();
    assert_eq!(store.session(&id).unwrap().unwrap(), local);
    for (_, node) in store.chain(&local.head).unwrap() {
        assert_eq!(node.meta.cwd.as_deref(), Some(cwd.as_str()));
    }
    drop(store);

    // Opted in: working directories travel in full; the source path still does not.
    world.ok(&alice, &["config", "set", "share.paths", "full"]);
    let second = world.import(&alice, &sample::session(82, 0, Shape::default()));
    world.ok(&alice, &["push", "origin", &second.short()]);
    let remote = Store::open(&server.join("store")).unwrap();
    let theirs = remote.session(&second).unwrap().unwrap();
    assert_eq!(theirs.source.path, "");
    let (_, first) = &remote.chain(&theirs.head).unwrap()[0];
    assert!(
        first
            .meta
            .cwd
            .as_deref()
            .is_some_and(|c| c.starts_with("/home/dev/")),
        "{:?}",
        first.meta
    );
}
