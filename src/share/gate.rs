//! The secret gate (SPEC.md §11.2): one check in front of every way a session, or text about
//! it, leaves the machine.
//!
//! The exits ([`Exit`]): `tapes share` (the session, its record's texts, and the `--note` /
//! `--title` published with the share), `tapes push`, `tapes branch` / `tapes fork` when they
//! create the new session on a remote, `tapes bundle create` (plain, personal or team), a
//! relay deposit of what was added to a shared session after `tapes share` passed it, and
//! `tapes export`.
//!
//! Every exit offers the same three choices: `--dry-run` lists what was found and what
//! `--redact` would replace, and sends nothing; `--redact` sends a redacted copy (a new chain
//! in a new session, [`crate::share::redacted_copy`], or for an export redacted text);
//! `--allow-secrets` sends as is. Without a choice a finding refuses *that session*
//! ([`GateError::Refused`]: the session, every finding, the three options), and commands
//! that handle several sessions go on with the others and exit 1 at the end. Two exits
//! cannot redact, and say why: a push of a session the remote already holds (redacting
//! changes node ids, which would break the chain there), and a relay deposit (the share
//! decides what goes; sharing again passes the gate again).
//!
//! Findings name the kind and the place (message index, node, block, field, or the record
//! field) with a masked preview (at most a quarter of the secret, [`crate::share::secrets::Finding`]);
//! the secret itself never appears in an error, a log line or a dry run.

use tapes_protocol::{Node, NodeId, SessionId};

use crate::session::SessionRecord;
use crate::share::secrets::{self, Finding, NodeFinding};
use crate::store::{Store, StoreError};

/// Where a session or its text leaves the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `tapes share`.
    Share,
    /// `tapes push` of a session the remote does not hold yet.
    Push,
    /// `tapes push` of what follows the base of a session the remote holds.
    PushContinuation,
    /// `tapes branch` creating the new session on a remote.
    Branch,
    /// `tapes fork` creating the new session on a remote.
    Fork,
    /// `tapes bundle create`.
    Bundle,
    /// `tapes export`.
    Export,
    /// A relay deposit (`tapes storage sync`, `tapes sync`) of messages added after the share.
    Deposit,
}

impl Exit {
    /// Whether a redacted copy can go out instead.
    pub fn can_redact(self) -> bool {
        !matches!(self, Exit::PushContinuation | Exit::Deposit)
    }

    /// What happened to the session, for the refusal's first line.
    fn consequence(self) -> &'static str {
        match self {
            Exit::Share => "nothing was shared",
            Exit::Push | Exit::PushContinuation => "nothing was pushed",
            Exit::Branch | Exit::Fork => {
                "nothing was sent to the remote; it stays here as a pending branch"
            }
            Exit::Bundle => "it was left out of the bundle",
            Exit::Export => "it was left out of the export",
            Exit::Deposit => "nothing of it was deposited",
        }
    }

    /// What was scanned, for the refusal's first line.
    fn scope(self) -> &'static str {
        match self {
            Exit::Push | Exit::PushContinuation => "what would be pushed of ",
            Exit::Deposit => "what would be deposited (added since it was shared) of ",
            _ => "",
        }
    }

    /// The verb of a clean dry run: "it would be shared as is".
    fn as_is(self) -> &'static str {
        match self {
            Exit::Share => "shared",
            Exit::Push | Exit::PushContinuation => "pushed",
            Exit::Branch | Exit::Fork => "created on the remote",
            Exit::Bundle => "bundled",
            Exit::Export => "exported",
            Exit::Deposit => "deposited",
        }
    }

    /// The choices, for the refusal's last line.
    fn options(self, session: &str) -> String {
        match self {
            Exit::Share => "share a redacted copy with --redact, see everything with --dry-run, or share as is with --allow-secrets".into(),
            Exit::Push => "push a redacted copy in its place with --redact, see everything with --dry-run, or push as is with --allow-secrets".into(),
            Exit::PushContinuation => "see everything with --dry-run; redacting is not possible for a push (it would change node ids and break the chain the remote holds): share a redacted copy with `tapes share --redact`, or push anyway with --allow-secrets".into(),
            Exit::Branch | Exit::Fork => "create a redacted copy on the remote instead with --redact, see everything with --dry-run, or create it as is with --allow-secrets".into(),
            Exit::Bundle => "bundle a redacted copy with --redact, see everything with --dry-run, or bundle as is with --allow-secrets".into(),
            Exit::Export => "export it redacted with --redact, see everything with --dry-run, or export as is with --allow-secrets".into(),
            Exit::Deposit => format!("see everything with `tapes share {session} --dry-run`; to let them go as is, share it again with --allow-secrets; or unshare it (`tapes unshare {session}`) and share a redacted copy with --redact"),
        }
    }
}

/// The text of a refusal: the session, how many findings, the list, the choices. Used by every
/// error that reports one ([`GateError::Refused`], and `share`'s and `push`'s own errors).
pub fn refusal_text(exit: Exit, session: &str, count: usize, list: &str) -> String {
    format!(
        "{} in {}session {session}; {}.\n{list}\n{}",
        crate::views::render::plural(count, "possible secret"),
        exit.scope(),
        exit.consequence(),
        exit.options(session)
    )
}

/// What to do about findings (the CLI's `--redact` / `--allow-secrets`; `--dry-run` is
/// [`Findings::dry_run`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretPolicy {
    /// Refuse when anything is found (the default).
    #[default]
    Block,
    /// Send a redacted copy instead.
    Redact,
    /// Send as is.
    Allow,
}

impl SecretPolicy {
    /// The policy the flags ask for (`--redact` wins; the CLI makes them exclusive).
    pub fn from_flags(redact: bool, allow_secrets: bool) -> SecretPolicy {
        if redact {
            SecretPolicy::Redact
        } else if allow_secrets {
            SecretPolicy::Allow
        } else {
            SecretPolicy::Block
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Findings and no choice: the session does not leave.
    #[error("{}", refusal_text(*exit, &session.short(), *count, list))]
    Refused {
        exit: Exit,
        session: SessionId,
        count: usize,
        /// One finding per line, as [`Hit::describe`] and [`FieldHit::describe`] write them.
        list: String,
    },
    /// `--redact` where it cannot be done.
    #[error("session {session}: {}, and --redact is not possible here; {}", crate::views::render::plural(*count, "possible secret"), exit.options(&session.short()))]
    CannotRedact {
        exit: Exit,
        session: SessionId,
        count: usize,
    },
}

/// One possible secret in a message of a session.
#[derive(Debug, Clone)]
pub struct Hit {
    pub session: SessionId,
    pub node: NodeId,
    /// The message's index in the session (0 = the first message).
    pub index: usize,
    pub finding: NodeFinding,
}

impl Hit {
    /// `  session S node #I N block B (field): kind masked`.
    pub fn describe(&self) -> String {
        format!(
            "  session {} node #{} {} block {} ({}): {} {}",
            self.session.short(),
            self.index,
            self.node.short(),
            self.finding.block,
            self.finding.field,
            self.finding.finding.kind.label(),
            self.finding.finding.masked
        )
    }
}

/// One possible secret in a text about a session: its record's title, description, note or
/// tags, or the note and title a share publishes.
#[derive(Debug, Clone)]
pub struct FieldHit {
    pub session: SessionId,
    /// `"record"` or `"share"`.
    pub place: &'static str,
    /// `"title"`, `"description"`, `"note"`, `"tag"`.
    pub field: &'static str,
    pub finding: Finding,
}

impl FieldHit {
    /// `  session S record (title): kind masked`.
    pub fn describe(&self) -> String {
        format!(
            "  session {} {} ({}): {} {}",
            self.session.short(),
            self.place,
            self.field,
            self.finding.kind.label(),
            self.finding.masked
        )
    }
}

/// Everything the gate found in one session's outgoing part.
#[derive(Debug, Clone)]
pub struct Findings {
    pub session: SessionId,
    pub nodes: Vec<Hit>,
    pub fields: Vec<FieldHit>,
}

/// What the gate lets through.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Nothing found: send as is.
    Clean,
    /// Found, and `--allow-secrets`: send as is.
    Allowed(Findings),
    /// Found, and `--redact`: send a redacted copy instead.
    Redact(Findings),
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.fields.is_empty()
    }

    pub fn len(&self) -> usize {
        self.nodes.len() + self.fields.len()
    }

    /// One line per finding: messages first (in chain order), then texts.
    pub fn lines(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(Hit::describe)
            .chain(self.fields.iter().map(FieldHit::describe))
            .collect()
    }

    /// The refusal of this session at `exit`.
    pub fn refusal(&self, exit: Exit) -> GateError {
        GateError::Refused {
            exit,
            session: self.session,
            count: self.len(),
            list: self.lines().join("\n"),
        }
    }

    /// Applies `policy` at `exit`: what may go, or the refusal.
    pub fn check(self, exit: Exit, policy: SecretPolicy) -> Result<Verdict, GateError> {
        if self.is_empty() {
            return Ok(Verdict::Clean);
        }
        match policy {
            SecretPolicy::Allow => Ok(Verdict::Allowed(self)),
            SecretPolicy::Redact if exit.can_redact() => Ok(Verdict::Redact(self)),
            SecretPolicy::Redact => Err(GateError::CannotRedact {
                exit,
                session: self.session,
                count: self.len(),
            }),
            SecretPolicy::Block => Err(self.refusal(exit)),
        }
    }

    /// The `--dry-run` report: what was found, and what `--redact` would do with it.
    pub fn dry_run(&self, exit: Exit) -> String {
        let short = self.session.short();
        if self.is_empty() {
            return format!(
                "{short}: no secrets found; it would be {} as is",
                exit.as_is()
            );
        }
        let what = if exit.can_redact() {
            "--redact would replace each with [REDACTED:<kind>]".to_string()
        } else {
            format!(
                "--redact is not possible here, --allow-secrets would let them go as is ({})",
                exit.options(&short)
            )
        };
        let mut out = format!(
            "{short}: {}; {what}:",
            crate::views::render::plural(self.len(), "possible secret")
        );
        for line in self.lines() {
            out.push('\n');
            out.push_str(&line);
        }
        out
    }
}

/// Every possible secret in the messages of `chain` from index `from` on (a push sends only
/// what follows its base). Indexes are positions in the whole chain.
pub fn scan_chain(id: &SessionId, chain: &[(NodeId, Node)], from: usize) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, (node, body)) in chain.iter().enumerate().skip(from) {
        for finding in secrets::scan_blocks(&body.body.blocks) {
            hits.push(Hit {
                session: *id,
                node: *node,
                index,
                finding,
            });
        }
    }
    hits
}

/// The descriptive texts of a record that travel with it: title, description, note, tags.
pub fn record_texts(record: &SessionRecord) -> Vec<(&'static str, &str)> {
    let mut fields: Vec<(&'static str, &str)> = Vec::new();
    if let Some(t) = &record.title {
        fields.push(("title", t));
    }
    if let Some(d) = &record.description {
        fields.push(("description", d));
    }
    if let Some(n) = &record.note {
        fields.push(("note", n));
    }
    for tag in &record.tags {
        fields.push(("tag", tag));
    }
    fields
}

/// Every possible secret in `texts` (field name, text), reported at `place`.
pub fn scan_texts(
    id: &SessionId,
    place: &'static str,
    texts: &[(&'static str, &str)],
) -> Vec<FieldHit> {
    let mut out = Vec::new();
    for &(field, text) in texts {
        for finding in secrets::scan_text(text) {
            out.push(FieldHit {
                session: *id,
                place,
                field,
                finding,
            });
        }
    }
    out
}

/// The gate's scan of session `id` as it would leave: its messages after `after` (all of them
/// when `None`, or when `after` is not in its history), its record's texts, and `extra` texts
/// that go out with it (a share's note and title).
pub fn scan_session(
    store: &Store,
    id: &SessionId,
    after: Option<&NodeId>,
    extra: &[(&'static str, &str)],
) -> Result<Findings, GateError> {
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    let chain = store.chain(&record.head)?;
    let from = after
        .and_then(|a| chain.iter().position(|(n, _)| n == a))
        .map_or(0, |i| i + 1);
    Ok(Findings {
        session: *id,
        nodes: scan_chain(id, &chain, from),
        fields: scan_texts(id, "record", &record_texts(&record))
            .into_iter()
            .chain(scan_texts(id, "share", extra))
            .collect(),
    })
}

/// The secret gate in front of a relay deposit (SPEC.md §11.2, §16.3), which sends `objects`
/// (the messages after what the relay holds, root first) of one of our shared sessions.
///
/// What a share passed through the gate: the session's head then, and the texts the share
/// carries (a share record's view, `SharedAs::from(&ShareRecord)`).
#[derive(Debug, Clone, Copy)]
pub struct SharedAs<'a> {
    pub session: tapes_protocol::SessionId,
    pub head: tapes_protocol::NodeId,
    pub title: Option<&'a str>,
    pub note: Option<&'a str>,
}

impl<'a> From<&'a tapes_protocol::signed::ShareRecord> for SharedAs<'a> {
    fn from(share: &'a tapes_protocol::signed::ShareRecord) -> SharedAs<'a> {
        SharedAs {
            session: share.session,
            head: share.head,
            title: share.title.as_deref(),
            note: share.note.as_deref(),
        }
    }
}

/// A deposit only carries sessions `tapes share` passed, but the share passed the session *as
/// it was then*: a relay is sent the session's current head, and messages added since the
/// share have not been through the gate, nor has a title or note changed since. Those are
/// scanned here: the messages of `objects` after the share's head, and the record's title and
/// note where they differ from what the share carries (description and tags are only set when
/// a session is made, before any share). A finding refuses the deposit ([`Exit::Deposit`]);
/// sharing again passes the gate again. What goes carries no local paths (§11.3).
pub fn deposit(
    store: &Store,
    share: &SharedAs<'_>,
    objects: Vec<tapes_protocol::StoredObject>,
) -> Result<Vec<tapes_protocol::StoredObject>, GateError> {
    let id = &share.session;
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    // Everything after the shared head is new to the gate; when the shared head is not among
    // the objects, it is at or before what the relay holds, and every object is new.
    let from = objects
        .iter()
        .position(|o| o.id == share.head)
        .map_or(0, |i| i + 1);
    // Objects end at the head: their positions in the whole chain follow from its length.
    let offset = (record.summary.messages as usize).saturating_sub(objects.len());
    let mut nodes = Vec::new();
    for (k, object) in objects.iter().enumerate().skip(from) {
        let node = tapes_protocol::StoredObject::decode(&object.bytes).map_err(|source| {
            StoreError::BadNode {
                id: object.id,
                source,
            }
        })?;
        for finding in secrets::scan_blocks(&node.body.blocks) {
            nodes.push(Hit {
                session: *id,
                node: object.id,
                index: offset + k,
                finding,
            });
        }
    }
    let texts = changed_since_share(&record, share);
    let findings = Findings {
        session: *id,
        nodes,
        fields: scan_texts(id, "record", &texts),
    };
    if !findings.is_empty() {
        return Err(findings.refusal(Exit::Deposit));
    }
    let mut leaving =
        crate::share::outgoing::Outgoing::new(crate::share::outgoing::PathPolicy::load(store)?);
    Ok(objects
        .into_iter()
        .map(|o| tapes_protocol::StoredObject {
            id: o.id,
            bytes: leaving.object(o.bytes),
        })
        .collect())
}

/// The record's title and note where they differ from what the share carries: the texts no
/// gate has seen since (description and tags are only set when a session is made).
fn changed_since_share<'r>(
    record: &'r SessionRecord,
    share: &SharedAs<'_>,
) -> Vec<(&'static str, &'r str)> {
    let mut texts = Vec::new();
    if let Some(title) = record
        .title
        .as_ref()
        .filter(|t| Some(t.as_str()) != share.title)
    {
        texts.push(("title", title.as_str()));
    }
    if let Some(note) = record
        .note
        .as_ref()
        .filter(|n| Some(n.as_str()) != share.note)
    {
        texts.push(("note", note.as_str()));
    }
    texts
}

/// What `tapes serve` checks before it sends one of its owner's shared sessions: the
/// messages added since the share (walking back from the head to the share's head) and a
/// title or note changed since, as [`deposit`] does for a relay. A teammate fetching a session
/// that grew after `tapes share` would otherwise receive messages no gate has seen. Returns
/// the findings (empty: the session may be served as it is now).
pub fn served(store: &Store, share: &SharedAs<'_>) -> Result<Findings, GateError> {
    let id = &share.session;
    let record = store
        .session(id)?
        .ok_or(StoreError::SessionNotFound(id.short()))?;
    let mut nodes = Vec::new();
    let mut next = Some(record.head);
    let mut index = record.summary.messages as usize;
    let mut seen = std::collections::HashSet::new();
    while let Some(at) = next {
        if at == share.head || !seen.insert(at) {
            break;
        }
        // Decoded without the hash check: the gate is about what the bytes say, and a node
        // whose bytes do not match its id is the receiver's to refuse (it verifies everything).
        let bytes = store
            .storage()
            .get_object(&at)
            .map_err(StoreError::from)?
            .ok_or(StoreError::MissingNode(at))?;
        let node = tapes_protocol::StoredObject::decode(&bytes)
            .map_err(|source| StoreError::BadNode { id: at, source })?;
        index = index.saturating_sub(1);
        for finding in secrets::scan_blocks(&node.body.blocks) {
            nodes.push(Hit {
                session: *id,
                node: at,
                index,
                finding,
            });
        }
        next = node.body.parent;
    }
    let texts = changed_since_share(&record, share);
    Ok(Findings {
        session: *id,
        nodes,
        fields: scan_texts(id, "record", &texts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding() -> Findings {
        let id = SessionId([7; 16]);
        let text = concat!("key ", "AK", "IA", "Z7QX4M2N8P5R", "3T6V");
        Findings {
            session: id,
            nodes: Vec::new(),
            fields: scan_texts(&id, "share", &[("note", text)]),
        }
    }

    #[test]
    fn a_deposit_scans_what_was_added_after_the_share_and_nothing_before() {
        use crate::import::ingest::{ingest, Incoming};
        use crate::share::{Audience, ShareOptions};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let me = crate::identity::Identity::generate(Default::default()).unwrap();
        store
            .set_local_owner(&tapes_protocol::MemberId(me.verifying_key().to_bytes()))
            .unwrap();
        let session =
            crate::session::sample::session(3, 0, crate::session::sample::Shape::default());
        let id = ingest(
            &store,
            &[Incoming {
                session,
                path: String::new(),
            }],
            0,
        )
        .unwrap()
        .sessions[0]
            .id;
        let options = ShareOptions {
            audience: Audience::Public,
            title: None,
            note: None,
            expires_ms: None,
            secrets: SecretPolicy::Block,
        };
        crate::share::share(&store, &me, &id, &options, 1).unwrap();
        let raw = store
            .storage()
            .get_ref(&crate::share::share_key(&id, &Audience::Public));
        let share = crate::share::SignedShare::decode(&raw.unwrap().unwrap())
            .unwrap()
            .record;
        let objects = |store: &Store| -> Vec<tapes_protocol::StoredObject> {
            let head = store.session(&id).unwrap().unwrap().head;
            store
                .chain(&head)
                .unwrap()
                .into_iter()
                .map(|(n, _)| tapes_protocol::StoredObject {
                    id: n,
                    bytes: store.storage().get_object(&n).unwrap().unwrap(),
                })
                .collect()
        };
        // What the share passed goes.
        assert_eq!(
            deposit(&store, &SharedAs::from(&share), objects(&store))
                .unwrap()
                .len(),
            10
        );
        // A message with a key added since does not.
        let key = concat!("gh", "p_", "aB3dE5gH7jK9", "mN1pQ3sT5vW7", "yZ9bC1dF3hJ5");
        crate::session::sample::continue_session(&store, &id, &[format!("GH_TOKEN={key}")])
            .unwrap();
        let err = deposit(&store, &SharedAs::from(&share), objects(&store)).unwrap_err();
        assert!(
            matches!(
                err,
                GateError::Refused {
                    exit: Exit::Deposit,
                    count: 1,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("node #10") && text.contains("GitHub token"),
            "{text}"
        );
        assert!(!text.contains(key), "{text}");
        // Sharing again passes the gate again (here: allowed as is).
        let allow = ShareOptions {
            secrets: SecretPolicy::Allow,
            ..options
        };
        crate::share::share(&store, &me, &id, &allow, 2).unwrap();
        let raw = store
            .storage()
            .get_ref(&crate::share::share_key(&id, &Audience::Public));
        let share = crate::share::SignedShare::decode(&raw.unwrap().unwrap())
            .unwrap()
            .record;
        assert_eq!(
            deposit(&store, &SharedAs::from(&share), objects(&store))
                .unwrap()
                .len(),
            11
        );
    }

    #[test]
    fn a_refusal_names_the_session_the_findings_and_the_choices_never_the_secret() {
        let f = finding();
        assert_eq!(f.len(), 1);
        for exit in [
            Exit::Share,
            Exit::Push,
            Exit::PushContinuation,
            Exit::Branch,
            Exit::Fork,
            Exit::Bundle,
            Exit::Export,
            Exit::Deposit,
        ] {
            let text = f
                .clone()
                .check(exit, SecretPolicy::Block)
                .unwrap_err()
                .to_string();
            assert!(text.contains(&f.session.short()), "{text}");
            assert!(text.contains("share (note): AWS access key ID"), "{text}");
            assert!(
                text.contains("--dry-run") && text.contains("--allow-secrets"),
                "{text}"
            );
            assert!(text.contains("--redact"), "{text}");
            assert!(!text.contains("Z7QX4M2N8P5R"), "{text}");
            let dry = f.dry_run(exit);
            assert!(!dry.contains("Z7QX4M2N8P5R"), "{dry}");
            assert!(matches!(
                f.clone().check(exit, SecretPolicy::Allow),
                Ok(Verdict::Allowed(_))
            ));
            match f.clone().check(exit, SecretPolicy::Redact) {
                Ok(Verdict::Redact(_)) => assert!(exit.can_redact()),
                Err(GateError::CannotRedact { .. }) => assert!(!exit.can_redact()),
                other => panic!("{other:?}"),
            }
        }
    }
}
