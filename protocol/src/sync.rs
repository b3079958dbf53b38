//! The sync protocol `tapes/sync/3` (SPEC.md §15): what two peers say to each other over one
//! QUIC connection, sans-IO.
//!
//! A client opens one bi-directional stream per request. Every message on a stream is a frame,
//! `len:u32le | postcard(message)`, at most [`MAX_FRAME`] bytes. The first frame on a stream
//! is a [`Request`]; the server answers with [`Response`] frames; a few requests continue with
//! more client frames ([`Request`] variants say which).
//!
//! What is synchronised is a set of *items*, each a 32-byte [`ItemId`]: one per session record,
//! per share record and per team manifest the peer may see. The first 16 bytes of an item name
//! what it is about (a session id, or the first half of a team id), the next byte its kind and
//! the rest is a digest of its content, so when reconciliation ([`crate::reconcile`]) tells a client it lacks an item,
//! the client already knows which session it concerns and can ask for the session and the
//! missing part of its node chain in the same request. Nodes themselves are not items: they
//! travel as the chain of the session they belong to, root first, so a receiver always stores
//! parents before children and an interrupted transfer resumes where it stopped.

use serde::{Deserialize, Serialize};

use crate::batch_key::NONCE_LEN;
use crate::bundle::SessionEntry;
use crate::{MemberId, NodeId, SessionId, TeamId};

/// The ALPN of this protocol. A peer speaking a later version uses a different one.
pub const ALPN: &[u8] = b"tapes/sync/3";

/// The largest frame either side accepts (a batch of objects, or one sealed batch).
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes of a frame's length prefix.
pub const FRAME_HEAD_LEN: usize = 4;

/// Item ids are 32-byte keys in the same space reconciliation works on.
pub type ItemId = NodeId;

const ITEM_CONTEXT: &str = "tapes 2026-11 sync item v1";

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemKind {
    /// A session record with its owner's signature.
    Session = 1,
    /// A signed share record.
    Share = 2,
    /// One signed manifest of a team's chain.
    Manifest = 3,
}

/// The item id of content `bytes` of `kind` about `subject` (16 bytes: a session id, or the
/// first half of a team id).
pub fn item_id(kind: ItemKind, subject: &[u8; 16], bytes: &[u8]) -> ItemId {
    let mut h = blake3::Hasher::new_derive_key(ITEM_CONTEXT);
    h.update(&[kind as u8]);
    h.update(subject);
    h.update(bytes);
    let digest = h.finalize();
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(subject);
    id[16] = kind as u8;
    id[17..].copy_from_slice(&digest.as_bytes()[..15]);
    NodeId(id)
}

/// What an item id says it is (its 17th byte), if it is a known kind.
pub fn item_kind(item: &ItemId) -> Option<ItemKind> {
    match item.0[16] {
        1 => Some(ItemKind::Session),
        2 => Some(ItemKind::Share),
        3 => Some(ItemKind::Manifest),
        _ => None,
    }
}

/// The item id of a session record (its encoded bytes, without the signature: signatures are
/// deterministic, but the record alone is what two peers compare).
pub fn session_item(session: &SessionId, record: &[u8]) -> ItemId {
    item_id(ItemKind::Session, &session.0, record)
}

/// The item id of an encoded signed share record of `session`.
pub fn share_item(session: &SessionId, share: &[u8]) -> ItemId {
    item_id(ItemKind::Share, &session.0, share)
}

/// The item id of an encoded signed manifest of `team`.
pub fn manifest_item(team: &TeamId, manifest: &[u8]) -> ItemId {
    item_id(ItemKind::Manifest, &team_subject(team), manifest)
}

/// The 16-byte subject of a team's items.
pub fn team_subject(team: &TeamId) -> [u8; 16] {
    let mut subject = [0u8; 16];
    subject.copy_from_slice(&team.0[..16]);
    subject
}

/// The session an item is about (meaningful for session and share items).
pub fn item_session(item: &ItemId) -> SessionId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&item.0[..16]);
    SessionId(id)
}

/// The first frame of every stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Reconcile the items the client may see. `first` is the initiator's opening
    /// [`crate::reconcile::Message`]; both sides then alternate `Reconcile` frames on this
    /// stream until one side has nothing to ask.
    Reconcile {
        #[serde(with = "serde_bytes")]
        first: Vec<u8>,
    },
    /// One item the client lacks. For a session item the server answers with the entry and
    /// the node chain down to `have_head` (the client's head of that session, if it has one):
    /// [`Response::Session`], then, if the server did not find `have_head` in the chain, it
    /// waits for a [`Request::From`]; then object frames and [`Response::End`].
    Fetch {
        item: ItemId,
        have_head: Option<NodeId>,
    },
    /// Sent after [`Response::Session`] with `ids` when the server did not stop at the
    /// client's head: send the chain's objects from `index` on (everything before it is
    /// already stored by the client).
    From { index: u64 },
    /// The session's current signed entry, if it is the client's own or visible to it (what
    /// `tapes pull` asks first). Answered with [`Response::Entry`].
    Session { id: SessionId },
    /// Move session `entry.id` from `expected` to the entry's record (compare-and-swap),
    /// signed by the owner over exactly this update (`ref_signature`, SPEC.md §10). Object
    /// frames with the nodes after `expected` follow, then [`Request::Done`]; the server
    /// answers [`Response::Pushed`], [`Response::Conflict`] or [`Response::Refused`].
    Push {
        entry: SessionEntry,
        expected: Option<NodeId>,
        /// The ids of the objects that follow, in chain order.
        ids: Vec<NodeId>,
        #[serde(with = "serde_bytes")]
        ref_signature: Vec<u8>,
        #[serde(with = "crate::wire_bytes")]
        shares: Vec<Vec<u8>>,
    },
    /// Ends a client's run of object frames.
    Done,
    /// A join request (`tapes team join <code>`) for the inviter to accept:
    /// `crate::join::JoinRequest` bytes. Answered with [`Response::Join`].
    Join {
        #[serde(with = "serde_bytes")]
        request: Vec<u8>,
    },
    /// The client's object frames during a push, exactly like [`Response::Objects`].
    Upload(Objects),
    /// Relay only (SPEC.md §16): which registered teams the client is a current member of.
    /// Answered with [`Response::Relay`].
    Hello,
    /// Relay only: an admin registers a team with its whole signed manifest chain (encoded
    /// manifests, genesis first). Answered with [`Response::Accepted`] or `Refused`.
    Register {
        #[serde(with = "crate::wire_bytes")]
        manifests: Vec<Vec<u8>>,
    },
    /// Relay only: newer manifests of a registered team, to keep the relay's chain current.
    Manifests {
        team: TeamId,
        #[serde(with = "crate::wire_bytes")]
        manifests: Vec<Vec<u8>>,
    },
    /// Relay only: deposit the new part of one of the client's sessions for a team or the
    /// public. Object frames ([`Request::Upload`]) with the nodes after `expected` follow
    /// (sealed to the team, or plain for the public), then [`Request::Done`]; answered like a
    /// push.
    Deposit(Deposit),
    /// Relay only: a join request for an offline inviter, sealed (age) to the inviter's key
    /// so the relay never sees the invite secret it carries. Answered with
    /// [`Response::Queued`], or [`Response::Join`] once the inviter left an answer.
    JoinSealed {
        team: TeamId,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// Relay only: an admin collects the join requests waiting for `team`. Answered with
    /// [`Response::Joins`].
    Mailbox { team: TeamId },
    /// Relay only: an admin's answer (`crate::join::JoinResponse` bytes) to the waiting join
    /// request of `joiner`, for the joiner to collect.
    Answer {
        team: TeamId,
        joiner: MemberId,
        #[serde(with = "serde_bytes")]
        response: Vec<u8>,
    },
    /// The audit log of `team` (SPEC.md §18.3): every entry of each writer's chain from the
    /// seq after the one the client holds (`have`: writer, number of its entries held; writers
    /// not named: from 0). Answered with [`Response::Audit`] or `Refused`.
    Audit {
        team: TeamId,
        have: Vec<(MemberId, u64)>,
    },
    /// The signed tombstones (SPEC.md §3.5) the answering node holds. Answered with
    /// [`Response::Tombstones`] or `Refused`.
    Tombstones,
    /// To a relay: drop this session, by its owner's signed tombstone (SPEC.md §3.5).
    /// Answered with [`Response::Accepted`] or `Refused`.
    Bury(crate::tombstone::Published),
    /// To a relay: its retention (SPEC.md §16.14) for the caller's teams, as lines for the
    /// user. Answered with [`Response::Retention`].
    Retention,
    /// To a relay: the caller's own entries of `team`'s audit log (SPEC.md §18.3), seq
    /// `first`, `first + 1`, …, each sealed to the team (`TSEAL1`, one entry each), for the
    /// members who fetch the log there. Answered with [`Response::Accepted`] or `Refused`.
    AuditDeposit {
        team: TeamId,
        first: u64,
        #[serde(with = "crate::wire_bytes")]
        entries: Vec<Vec<u8>>,
    },
}

/// Where a deposit at a relay is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The current members of a registered team; everything is sealed to the team.
    Team(TeamId),
    /// Anyone, and the relay's public page; plain.
    Public,
}

/// A deposit of one session at a relay (SPEC.md §16.3). For a team the relay cannot read the
/// entry or the share, so the pusher also states what the relay needs in the clear: the head
/// (for compare-and-swap), the node ids (hashes), the item ids and the share's expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub scope: Scope,
    pub session: SessionId,
    /// The relay's head the pusher builds on (`None`: the relay has no copy yet).
    pub expected: Option<NodeId>,
    /// The new head.
    pub head: NodeId,
    /// Ids of the objects that follow, in chain order (the nodes after `expected`).
    pub ids: Vec<NodeId>,
    /// The signed [`SessionEntry`] (postcard), sealed to the team for a team scope.
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
    /// [`session_item`] of the entry's record.
    pub session_item: ItemId,
    /// The signed share record, sealed to the team for a team scope.
    #[serde(with = "serde_bytes")]
    pub share: Vec<u8>,
    /// [`share_item`] of the share record.
    pub share_item: ItemId,
    /// The share's expiry and revocation, which the relay enforces.
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// A run of objects, plain or sealed to a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objects {
    /// Objects in chain order, each the bytes of a stored object.
    Plain(#[serde(with = "crate::wire_bytes")] Vec<Vec<u8>>),
    /// The same, sealed (SPEC.md §9.6) to `team` at some key epoch: the plaintext is
    /// `postcard(Vec<Vec<u8>>)`.
    Sealed {
        team: TeamId,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// The same, sealed with the stream's content key (SPEC.md §15.3 "Keyed batches",
    /// [`crate::batch_key`]): the plaintext is `postcard(Vec<Vec<u8>>)`. Follows a
    /// [`Response::ContentKey`] on the same stream.
    Keyed {
        nonce: [u8; crate::batch_key::NONCE_LEN],
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
    },
}

/// The server's frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A reconciliation message (see [`Request::Reconcile`]); `done` when the sender expects
    /// no reply.
    Reconcile {
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
        done: bool,
    },
    /// A session item: the signed entry, and the ids of its chain the server will send, root
    /// first: everything after the client's `have_head` when `from_head` is true (objects
    /// follow at once), or the whole chain otherwise (the server waits for
    /// [`Request::From`]).
    Session {
        entry: SessionEntry,
        ids: Vec<NodeId>,
        from_head: bool,
    },
    /// A share item: encoded signed share record.
    Share(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A manifest item: encoded signed manifest and its team.
    Manifest {
        team: TeamId,
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
    },
    /// Objects of a chain, in order.
    Objects(Objects),
    /// The end of a run of frames.
    End,
    /// The answer to a session lookup.
    Entry(Option<SessionEntry>),
    /// A push landed.
    Pushed { nodes: u64 },
    /// A push lost the compare-and-swap: the session is now at `current`.
    Conflict { current: Option<NodeId> },
    /// A join answer: `crate::join::JoinResponse` bytes.
    Join(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The request is not allowed or not understood; `reason` is for the user.
    Refused { reason: String },
    /// A relay's answer to [`Request::Hello`]: the registered teams the client is a current
    /// member of.
    Relay { teams: Vec<TeamId> },
    /// A relay's session item of a team: like [`Response::Session`], with the entry sealed.
    /// `ids` is always the whole chain; objects start at a deposit boundary at or before the
    /// first object the client lacks (the receiver aligns on the first object's id).
    SealedSession {
        team: TeamId,
        #[serde(with = "serde_bytes")]
        entry: Vec<u8>,
        ids: Vec<NodeId>,
        from_head: bool,
    },
    /// A relay's share item of a team: the signed share record, sealed.
    SealedShare {
        team: TeamId,
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// A request that changes the relay's state was applied.
    Accepted,
    /// A join request now waits at the relay for an admin's next sync.
    Queued,
    /// The join requests waiting for a team: who left each, and the request sealed to the
    /// inviter (only the inviter can open it; other admins skip it).
    Joins(Vec<(MemberId, Vec<u8>)>),
    /// Audit log entries (encoded `crate::audit::SignedAuditEntry`), each writer's in chain
    /// order: plain from a member's node, sealed to the team (`TSEAL1`, one entry each) from a
    /// relay.
    Audit(#[serde(with = "crate::wire_bytes")] Vec<Vec<u8>>),
    /// Signed tombstones (`crate::tombstone`), each with the session it is for.
    Tombstones(Vec<crate::tombstone::Published>),
    /// A relay's retention for the caller's teams, one line each (none: kept until removed).
    Retention(Vec<String>),
    /// The content key of the [`Objects::Keyed`] batches that follow on this stream, sealed
    /// (`TSEAL1`, SPEC.md §9.6) to `team`'s epoch key. One key serves a whole connection, so a
    /// receiver unwraps it once ([`crate::batch_key::KeyId`]).
    ContentKey {
        team: TeamId,
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
}

/// Entries one [`Request::AuditDeposit`] may carry (SPEC.md §18.3): a member's chain since its
/// last sync is a few hundred small entries; more waits for the next sync.
pub const MAX_AUDIT_DEPOSIT: usize = 4096;

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("a malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

/// Encodes `message` as one frame.
pub fn encode_frame<T: Serialize>(message: &T) -> Vec<u8> {
    encode_frame_into(message, Vec::new())
}

/// [`encode_frame`] into `buffer` (emptied first), so a sender can reuse one allocation for
/// frame after frame.
pub fn encode_frame_into<T: Serialize>(message: &T, mut buffer: Vec<u8>) -> Vec<u8> {
    // Encoded behind a placeholder head, patched after: a batch frame is about 1 MB, and
    // encoding it apart and copying it behind the head was a second copy of every byte sent.
    buffer.clear();
    buffer.extend_from_slice(&[0u8; FRAME_HEAD_LEN]);
    let mut out =
        postcard::to_extend(message, buffer).expect("postcard encoding to a Vec cannot fail");
    let len = (out.len() - FRAME_HEAD_LEN) as u32;
    out[..FRAME_HEAD_LEN].copy_from_slice(&len.to_le_bytes());
    out
}

/// The payload length a frame head announces, if acceptable.
pub fn frame_len(head: [u8; FRAME_HEAD_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame payload, refusing trailing bytes.
pub fn decode_payload<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, FrameError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(FrameError::Malformed {
            what,
            why: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(FrameError::Malformed {
            what,
            why: e.to_string(),
        }),
    }
}

/// Encodes a batch of objects for sealing.
pub fn encode_batch(objects: &[Vec<u8>]) -> Vec<u8> {
    // Sized up front (each length is a varint of at most 5 bytes): growing the Vec by
    // doubling copied a 1 MiB batch about twice more.
    let size = 5 + objects.iter().map(|o| o.len() + 5).sum::<usize>();
    postcard::to_extend(&BatchRef(objects), Vec::with_capacity(size))
        .expect("postcard encoding to a Vec cannot fail")
}

/// Decodes an opened sealed batch.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    decode_payload::<Batch>(bytes, "sealed object batch").map(|b| b.0)
}

/// Where each object of an encoded batch lies in it (`postcard(Vec<Vec<u8>>)`: a varint count,
/// then each object as a varint length and its bytes), without copying any: a receiver checks
/// and stores objects in place instead of allocating one buffer per object, which was a tenth
/// of a fetching node's CPU at ~1 KB objects. Accepts exactly what [`decode_batch`] accepts.
pub fn batch_spans(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>, FrameError> {
    let malformed = |why: &str| FrameError::Malformed {
        what: "object batch",
        why: why.to_string(),
    };
    let mut at = 0;
    let count = take_varint(bytes, &mut at).ok_or_else(|| malformed("a bad object count"))?;
    // Each object takes at least one byte (its length), which bounds what is reserved.
    let mut spans = Vec::with_capacity(count.min((bytes.len() - at) as u64) as usize);
    for _ in 0..count {
        let len = take_varint(bytes, &mut at).ok_or_else(|| malformed("a bad object length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| malformed("an object runs past the end of the batch"))?;
        spans.push(at..end);
        at = end;
    }
    if at != bytes.len() {
        return Err(malformed(&format!("{} trailing bytes", bytes.len() - at)));
    }
    Ok(spans)
}

/// Postcard's varint of a `usize` (LEB128, at most 10 bytes, no bits past 64), as its
/// decoder reads it.
fn take_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *bytes.get(*at + i)?;
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *at += i + 1;
            return Some(value);
        }
    }
    None
}

/// Postcard's variant indexes of [`Response::Objects`], [`Objects::Plain`] and
/// [`Objects::Keyed`], the first two bytes of a batch frame's payload (pinned by tests against
/// serde's encoding).
const OBJECTS_TAG: u8 = 4;
const PLAIN_TAG: u8 = 0;
const KEYED_TAG: u8 = 2;

/// The encoded batch of a frame payload that is `Response::Objects(Objects::Plain(..))`, to be
/// read with [`batch_spans`] in place; `None` for any other frame (decode it as usual).
pub fn plain_batch_of(payload: &[u8]) -> Option<&[u8]> {
    match payload {
        [OBJECTS_TAG, PLAIN_TAG, batch @ ..] => Some(batch),
        _ => None,
    }
}

/// The nonce and where the ciphertext lies, in a frame payload that is
/// `Response::Objects(Objects::Keyed { .. })`, for opening it in place
/// ([`crate::batch_key::ContentKey::open_in_place`]); `None` for any other frame, or one that
/// does not decode as that (decode it as usual, which names what is wrong).
pub fn keyed_batch_of(payload: &[u8]) -> Option<([u8; NONCE_LEN], std::ops::Range<usize>)> {
    let [OBJECTS_TAG, KEYED_TAG, rest @ ..] = payload else {
        return None;
    };
    let nonce: [u8; NONCE_LEN] = rest.get(..NONCE_LEN)?.try_into().ok()?;
    let mut at = 2 + NONCE_LEN;
    let len = usize::try_from(take_varint(payload, &mut at)?).ok()?;
    (payload.len().checked_sub(at)? == len).then_some((nonce, at..payload.len()))
}

/// Room kept in front of a [`BatchFrame`]'s objects for what goes before them (frame head,
/// tags, nonce, counts: at most 4 + 2 + 12 + 3 × 10 bytes).
const FRONT: usize = 64;

/// A batch frame built in place: objects are written once, into the buffer that is sent, and
/// the frame head, tags and count are written in front of them at the end (a sealed batch is
/// encrypted there too). The same bytes as [`encode_frame`] of `Response::Objects` of a list
/// (or its keyed form): building that list cost an allocation and a copy per object, and
/// encoding it a copy of every byte.
pub struct BatchFrame {
    buf: Vec<u8>,
    count: u64,
}

impl BatchFrame {
    /// An empty batch in `buf` (emptied first; a buffer kept from earlier frames).
    pub fn new(mut buf: Vec<u8>) -> BatchFrame {
        buf.clear();
        buf.resize(FRONT, 0);
        BatchFrame { buf, count: 0 }
    }

    /// Objects added.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the objects added so far, with their lengths.
    pub fn size(&self) -> usize {
        self.buf.len() - FRONT
    }

    /// Adds one object, given as the parts it is made of (one, or a spliced rewrite).
    pub fn push(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        put_varint(&mut self.buf, len as u64);
        parts.iter().for_each(|p| self.buf.extend_from_slice(p));
        self.count += 1;
    }

    /// The frame of `Response::Objects(Objects::Plain(..))`, head included.
    pub fn plain(&mut self) -> &[u8] {
        let mut front = vec![OBJECTS_TAG, PLAIN_TAG];
        put_varint(&mut front, self.count);
        let start = self.place_front(FRONT, &front);
        &self.buf[start..]
    }

    /// The frame of `Response::Objects(Objects::Keyed { .. })` sealing the batch under `key`
    /// as batch `index` of `session`'s stream (SPEC.md §15.3), head included.
    pub fn keyed(
        &mut self,
        key: &crate::batch_key::ContentKey,
        team: &TeamId,
        session: &SessionId,
        index: u64,
        nonce: &[u8; NONCE_LEN],
    ) -> &[u8] {
        // The plaintext is the count, then the objects: the count goes right before them.
        let mut count = Vec::new();
        put_varint(&mut count, self.count);
        let plain_at = FRONT - count.len();
        self.buf[plain_at..FRONT].copy_from_slice(&count);
        let tag = key.seal_in_place(team, session, index, nonce, &mut self.buf[plain_at..]);
        self.buf.extend_from_slice(&tag);
        let mut front = vec![OBJECTS_TAG, KEYED_TAG];
        front.extend_from_slice(nonce);
        put_varint(&mut front, (self.buf.len() - plain_at) as u64);
        let start = self.place_front(plain_at, &front);
        &self.buf[start..]
    }

    /// Writes the frame head and `front` to end at `at`; where the frame starts.
    fn place_front(&mut self, at: usize, front: &[u8]) -> usize {
        let payload = (self.buf.len() - at + front.len()) as u32;
        let start = at - front.len() - FRAME_HEAD_LEN;
        self.buf[start..start + FRAME_HEAD_LEN].copy_from_slice(&payload.to_le_bytes());
        self.buf[start + FRAME_HEAD_LEN..at].copy_from_slice(front);
        start
    }

    /// The buffer, for the next frame.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// Postcard's varint (LEB128).
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The plaintext of a sealed batch, `postcard(Vec<Vec<u8>>)`, each object one byte string.
#[derive(Deserialize)]
struct Batch(#[serde(with = "crate::wire_bytes")] Vec<Vec<u8>>);

#[derive(Serialize)]
struct BatchRef<'a>(#[serde(serialize_with = "crate::wire_bytes::serialize")] &'a [Vec<u8>]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_keep_their_wire_layout() {
        // SPEC.md §15.2: a byte string is a varint length then the bytes, and a list of them
        // a varint count then each; the bytes below are what tapes has always sent.
        let frame = encode_frame(&Response::Objects(Objects::Plain(vec![
            vec![7, 8, 9],
            vec![0xff; 200],
        ])));
        let mut expected = vec![0u8; 4];
        expected.extend_from_slice(&[4, 0, 2, 3, 7, 8, 9, 0xc8, 0x01]); // Objects, Plain, 2 objects
        expected.extend_from_slice(&[0xff; 200]);
        let body_len = (expected.len() - 4) as u32;
        expected[..4].copy_from_slice(&body_len.to_le_bytes());
        assert_eq!(frame, expected);
        let batch = encode_batch(&[vec![1], vec![2, 3]]);
        assert_eq!(batch, [2, 1, 1, 2, 2, 3]);
        // …which is what plain serde makes of a `Vec<Vec<u8>>`.
        let lists: Vec<Vec<u8>> = vec![vec![1], vec![2, 3]];
        assert_eq!(batch, postcard::to_stdvec(&lists).unwrap());
        assert_eq!(decode_batch(&batch).unwrap(), vec![vec![1], vec![2, 3]]);
        assert!(decode_batch(&[2, 1, 1, 5, 2]).is_err());
    }

    /// The in-place reading of a batch agrees with decoding it, on valid batches, on plain
    /// frames, and on garbage.
    #[test]
    fn batch_spans_read_what_decode_batch_reads() {
        let list = vec![vec![], vec![7u8; 300], vec![1, 2, 3]];
        let batch = encode_batch(&list);
        let spans = batch_spans(&batch).unwrap();
        let read: Vec<Vec<u8>> = spans.iter().map(|r| batch[r.clone()].to_vec()).collect();
        assert_eq!(read, list);
        let frame = encode_frame(&Response::Objects(Objects::Plain(list.clone())));
        assert_eq!(plain_batch_of(&frame[4..]), Some(&batch[..]));
        let other = encode_frame(&Response::End);
        assert_eq!(plain_batch_of(&other[4..]), None);
        let keyed = encode_frame(&Response::Objects(Objects::Keyed {
            nonce: [0; crate::batch_key::NONCE_LEN],
            ciphertext: batch.clone(),
        }));
        assert_eq!(plain_batch_of(&keyed[4..]), None);
        for bad in [
            &[2u8, 1, 1, 5, 2][..],
            &[1, 0, 9],
            &[0x80],
            &[],
            &[1, 0xff, 0xff, 0xff],
        ] {
            assert!(batch_spans(bad).is_err(), "{bad:?}");
            assert!(decode_batch(bad).is_err(), "{bad:?}");
        }
    }

    /// A batch frame built in place is byte for byte the frame of the list it holds, plain or
    /// keyed, and the keyed one opens in place to that list.
    #[test]
    fn batch_frames_built_in_place_are_the_frames_of_their_lists() {
        use crate::batch_key::ContentKey;
        let key = ContentKey::new(&[9; 32], b"wrapped").unwrap();
        let (team, session, nonce) = (TeamId([1; 32]), SessionId([2; 16]), [3u8; NONCE_LEN]);
        for list in [
            vec![],
            vec![vec![5u8; 200]],
            vec![vec![1], vec![], vec![7; 70_000]],
        ] {
            let mut frame = BatchFrame::new(vec![1, 2, 3]);
            for (i, object) in list.iter().enumerate() {
                // The last object in two parts, as a spliced rewrite gives it.
                if i + 1 == list.len() && !object.is_empty() {
                    frame.push(&[&object[..1], &object[1..]]);
                } else {
                    frame.push(&[object]);
                }
            }
            assert_eq!(frame.len(), list.len());
            let plain = encode_frame(&Response::Objects(Objects::Plain(list.clone())));
            assert_eq!(frame.plain(), &plain[..]);
            let mut frame = BatchFrame::new(frame.into_buffer());
            list.iter().for_each(|o| frame.push(&[o]));
            let keyed = frame.keyed(&key, &team, &session, 7, &nonce).to_vec();
            let ciphertext = key.seal(&team, &session, 7, &nonce, &encode_batch(&list));
            let expected = encode_frame(&Response::Objects(Objects::Keyed {
                nonce,
                ciphertext: ciphertext.clone(),
            }));
            assert_eq!(keyed, expected);
            let mut payload = keyed[FRAME_HEAD_LEN..].to_vec();
            let (got_nonce, range) = keyed_batch_of(&payload).unwrap();
            assert_eq!(
                (got_nonce, &payload[range.clone()]),
                (nonce, &ciphertext[..])
            );
            let opened = key
                .open_in_place(&team, &session, 7, &nonce, &mut payload[range.clone()])
                .unwrap();
            assert_eq!(decode_batch(opened).unwrap(), list);
            // Moved to another position, it does not open.
            let mut payload = keyed[FRAME_HEAD_LEN..].to_vec();
            assert!(key
                .open_in_place(&team, &session, 8, &nonce, &mut payload[range])
                .is_err());
        }
        assert_eq!(
            keyed_batch_of(&encode_frame(&Response::End)[FRAME_HEAD_LEN..]),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn batch_spans_agree_with_decode_batch_on_any_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            list in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..6),
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            let mut mutated = encode_batch(&list);
            if !mutated.is_empty() {
                let i = flip.0 % mutated.len();
                mutated[i] ^= flip.1;
            }
            for input in [bytes, encode_batch(&list), mutated] {
                let spans = batch_spans(&input)
                    .map(|s| s.iter().map(|r| input[r.clone()].to_vec()).collect::<Vec<_>>());
                proptest::prop_assert_eq!(spans.ok(), decode_batch(&input).ok());
            }
        }
    }

    #[test]
    fn frames_round_trip_and_refuse_garbage() {
        let request = Request::Fetch {
            item: NodeId([3; 32]),
            have_head: Some(NodeId([4; 32])),
        };
        let frame = encode_frame(&request);
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        let back: Request = decode_payload(&frame[4..], "request").unwrap();
        assert_eq!(back, request);
        let mut extra = frame[4..].to_vec();
        extra.push(0);
        assert!(decode_payload::<Request>(&extra, "request").is_err());
        assert!(decode_payload::<Request>(&[0xff, 0xff], "request").is_err());
        assert!(frame_len(((MAX_FRAME + 1) as u32).to_le_bytes()).is_err());
    }

    #[test]
    fn items_name_their_subject_and_change_with_content() {
        let session = SessionId([9; 16]);
        let a = session_item(&session, b"record one");
        let b = session_item(&session, b"record two");
        assert_ne!(a, b);
        assert_eq!(item_session(&a), session);
        assert_ne!(share_item(&session, b"record one"), a);
        let team = TeamId([5; 32]);
        assert_eq!(&manifest_item(&team, b"m").0[..16], &team.0[..16]);
        assert_eq!(
            item_kind(&manifest_item(&team, b"m")),
            Some(ItemKind::Manifest)
        );
        assert_eq!(item_kind(&a), Some(ItemKind::Session));
    }
}
