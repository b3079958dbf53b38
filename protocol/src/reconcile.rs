//! Range-based set reconciliation (RBSR) over sets of 32-byte ids, sans-IO.
//!
//! Two peers each hold a set of [`NodeId`]s (or any 32-byte keys: ref keys work the same way)
//! and want to learn which ids the other has that they lack, exchanging bytes proportional to
//! the *difference* rather than to the size of the sets. This is the scheme of Aljoscha Meyer's
//! "Range-Based Set Reconciliation" (as used by negentropy), with one tapes-specific twist so
//! that *both* peers, not only the initiator, end up knowing both differences.
//!
//! # The protocol
//!
//! The id space `[0x00…00, end)` is ordered bytewise. A [`Message`] is a list of [`Item`]s
//! that covers the whole space in order: item *i* covers `[upper of item i-1, upper of item i)`
//! (the first starts at the all-zero id, the last ends at the end of the space, `upper: None`).
//! Each item says one of three things about its range:
//!
//! * [`Item::Skip`]: nothing (more) to do here.
//! * [`Item::Fingerprint`]: "my ids in this range hash to this [`Fingerprint`]".
//! * [`Item::IdList`]: "here are ids in this range" (see below for which ones).
//!
//! The reconciler processing an incoming item for range `r`:
//!
//! * `Skip` → `Skip`.
//! * `Fingerprint` equal to ours → `Skip`. Different: if we hold at most `leaf` ids in `r`
//!   we send them all as a *fresh* `IdList`; otherwise we split `r` into `split` parts of
//!   (nearly) equal size by our own ids and send one `Fingerprint` per part.
//! * A *fresh* `IdList` (ids `T`, full contents of the sender's set in `r`): with our ids `O`
//!   we now know both differences: `have = T \ O`, `need = O \ T`. We reply with an *answer*
//!   `IdList` carrying the symmetric difference `T Δ O` (or `Skip` if it is empty), from which
//!   the sender recovers both sides too: `have = D \ T`, `need = D ∩ T`.
//! * An *answer* `IdList`: we record the differences and reply `Skip`.
//!
//! Fresh and answer lists share a tag; a peer tells them apart by state: an `IdList` for exactly
//! a range that *we* sent a fresh `IdList` for in our previous message is an answer, anything
//! else is fresh. (An honest peer answers our fresh lists range for range, and only ever sends
//! fresh lists for sub-ranges of our `Fingerprint` ranges, which are disjoint from them.)
//!
//! A reply is only sent when the incoming message contained something that asks for one
//! (a `Fingerprint` or a fresh `IdList`); otherwise [`Step::reply`] is `None`. A peer is
//! [`Step::done`] once its outgoing message asks nothing of the other side. Skips that touch
//! are merged, so a settled message is a handful of bytes.
//!
//! # Termination and round trips
//!
//! Follow one range down the recursion. Every message on that path is either a *split* by its
//! sender, or a leaf (`Skip`, a fresh `IdList`, or an answer), after which the path ends within
//! one more message (a fresh list is answered; an answer or a skip needs no reply). A peer `X`
//! splits a range only when it holds more than `leaf` ids there, and splitting by index leaves
//! it at most `⌈c / split⌉` of its own ids per part; ranges only shrink along a path, so `X`'s
//! count never grows again. Hence `X` splits at most `k_X = ⌈log_split(n_X / leaf)⌉` times on a
//! path (0 if `n_X ≤ leaf`), and every path — hence the whole exchange, whose messages carry all
//! paths in parallel — is at most
//!
//! ```text
//! messages ≤ k_A + k_B + 2          round trips = ⌈messages / 2⌉
//! ```
//!
//! For two mostly-equal sets of `n` ids both peers' counts shrink at every split, so in practice
//! it is `⌈log_split(n / leaf)⌉ + 2` messages: with the defaults (`split = leaf = 16`) 100k ids
//! reconcile in 3 round trips, 1M in 3–4; identical sets in exactly one (the initiator's
//! fingerprints, the responder's single `Skip`). Bytes: each differing id costs one path, i.e.
//! about `split` fingerprints (~21 bytes each with prefix-compressed bounds) per level, plus
//! ~2×32 bytes in the leaf lists; settled ranges cost nothing once merged into skips.
//!
//! Against a hostile peer (who can always keep talking) [`Params::max_rounds`] bounds the work.
//!
//! # Fingerprints and their (known) weakness
//!
//! A range's fingerprint is `BLAKE3-derive-key("tapes 2026-11 reconcile fingerprint v1",
//! count_u64_le ‖ xor_of_ids)[..16]`. XOR makes it a group operation: a store can maintain it
//! incrementally (add and remove are the same operation) or via prefix sums, and computing it
//! for a range of an in-memory set is one pass with no hashing per id.
//!
//! XOR is *not* collision resistant against an adversary choosing set members: given ids one can
//! find a different subset with the same XOR and count by linear algebra over GF(2), so two
//! different sets can be made to look equal. That is acceptable here because:
//!
//! * The ids are BLAKE3 digests of canonical node bodies. To plant a colliding subset, an
//!   attacker needs *bodies* hashing to the ids that solve the linear system; ids they merely
//!   claim, without content, are worthless: every id learned through reconciliation is fetched
//!   and its content hashed and verified before anything is stored.
//! * A collision can only make a range look settled when it is not: the peers *miss* some ids
//!   this time (a delay: the next sync, with different set contents or split points, catches
//!   them, and ids are also reachable through parent links). It can never make a peer accept
//!   an id or content it should not — reconciliation only produces *candidates* to fetch.
//! * For honest peers, 16 bytes of BLAKE3 output over `(count, xor)` makes an accidental
//!   collision (~2⁻¹²⁸ per comparison) irrelevant.
//!
//! The "honest peers" case assumes *hash-like* ids (uniform, independent bits): XOR is linear,
//! so keys drawn from a small or structured space (say, ids that differ only in their last
//! byte, each range holding many of them) collide by construction. Node ids are BLAKE3 digests;
//! keys that are not (ref names, …) must be hashed into 32-byte ids before they enter an
//! [`IdSet`]. The tests pin this: clustered ids with long shared prefixes reconcile exactly as
//! long as their tails are random.
//!
//! # Wire format (version 1)
//!
//! ```text
//! u8  version = 1
//! u32 item count (≥ 1), little-endian
//! per item:
//!   u8 tag: 0 = Skip, 1 = Fingerprint, 2 = IdList
//!   bound: u8 n; n = 0 means "end of the id space", 1..=32 means the next n bytes are the
//!          bound's prefix, zero-padded to 32 bytes; the last prefix byte must be non-zero
//!   Fingerprint: 16 bytes
//!   IdList: u32 count, then count × 32-byte ids, strictly ascending, inside the item's range
//! ```
//!
//! The decoder is strict (one encoding per message): bounds strictly increase, only the last
//! item ends at the end of the space, adjacent `Skip`s must be merged, no trailing bytes.

use crate::bytes::{put_u32, DecodeError, Reader};
use crate::id::NodeId;

/// Wire format version of [`Message`].
pub const VERSION: u8 = 1;
/// BLAKE3 derive-key context of [`Fingerprint`]s.
pub const FINGERPRINT_CONTEXT: &str = "tapes 2026-11 reconcile fingerprint v1";

const ZERO: NodeId = NodeId([0; 32]);

/// A half-open range of the id space: `lower` inclusive, `upper` exclusive (`None`: to the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    pub lower: NodeId,
    pub upper: Option<NodeId>,
}

impl Range {
    /// The whole id space.
    pub const FULL: Range = Range {
        lower: ZERO,
        upper: None,
    };

    pub fn contains(&self, id: &NodeId) -> bool {
        *id >= self.lower && self.upper.is_none_or(|u| *id < u)
    }
}

/// 16-byte digest of the ids in a range; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

/// Incremental fingerprint: XOR and count. Adding an id twice removes it again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FingerprintAcc {
    xor: [u8; 32],
    count: u64,
}

impl FingerprintAcc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, id: &NodeId) {
        for (x, b) in self.xor.iter_mut().zip(id.0.iter()) {
            *x ^= b;
        }
        self.count += 1;
    }

    /// Removes an id previously added.
    pub fn remove(&mut self, id: &NodeId) {
        for (x, b) in self.xor.iter_mut().zip(id.0.iter()) {
            *x ^= b;
        }
        self.count -= 1;
    }

    pub fn finish(&self) -> Fingerprint {
        let mut h = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
        h.update(&self.count.to_le_bytes());
        h.update(&self.xor);
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Fingerprint(fp)
    }
}

/// The fingerprint of a list of (distinct) ids.
pub fn fingerprint_of<'a>(ids: impl IntoIterator<Item = &'a NodeId>) -> Fingerprint {
    let mut acc = FingerprintAcc::new();
    for id in ids {
        acc.add(id);
    }
    acc.finish()
}

/// The shortest bound `s` (fewest non-zero-padded bytes) with `a < s <= b`. Requires `a < b`.
pub fn separator(a: &NodeId, b: &NodeId) -> NodeId {
    debug_assert!(a < b);
    let k =
        a.0.iter()
            .zip(b.0.iter())
            .take_while(|(x, y)| x == y)
            .count();
    let mut s = [0u8; 32];
    let k = k.min(31);
    s[..=k].copy_from_slice(&b.0[..=k]);
    NodeId(s)
}

/// A set of ids the reconciler can query by range.
///
/// Contract for `split_points`: strictly increasing bounds, each strictly inside the range
/// (`lower < p < upper`), cutting the set's ids in the range into at most `parts` pieces of
/// roughly equal size; at least one point when the range holds two or more ids. The reconciler
/// drops points that break this and falls back to an id list, so a bad implementation costs
/// bytes, not termination.
pub trait IdSet {
    fn len_in(&self, range: &Range) -> usize;
    fn fingerprint(&self, range: &Range) -> Fingerprint;
    /// Appends the ids in `range`, ascending.
    fn ids_in(&self, range: &Range, out: &mut Vec<NodeId>);
    fn split_points(&self, range: &Range, parts: usize) -> Vec<NodeId>;
}

impl<T: IdSet + ?Sized> IdSet for &T {
    fn len_in(&self, range: &Range) -> usize {
        (**self).len_in(range)
    }
    fn fingerprint(&self, range: &Range) -> Fingerprint {
        (**self).fingerprint(range)
    }
    fn ids_in(&self, range: &Range, out: &mut Vec<NodeId>) {
        (**self).ids_in(range, out)
    }
    fn split_points(&self, range: &Range, parts: usize) -> Vec<NodeId> {
        (**self).split_points(range, parts)
    }
}

/// An in-memory, sorted, deduplicated id set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortedIds(Vec<NodeId>);

impl SortedIds {
    /// Sorts and deduplicates.
    pub fn new(mut ids: Vec<NodeId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        SortedIds(ids)
    }

    pub fn as_slice(&self) -> &[NodeId] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        self.0.binary_search(id).is_ok()
    }

    /// Inserts an id, keeping the set sorted; returns false if it was present.
    pub fn insert(&mut self, id: NodeId) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, id);
                true
            }
        }
    }

    fn slice(&self, range: &Range) -> &[NodeId] {
        let start = self.0.partition_point(|x| *x < range.lower);
        let end = match range.upper {
            None => self.0.len(),
            Some(u) => self.0.partition_point(|x| *x < u),
        };
        &self.0[start..end.max(start)]
    }
}

impl FromIterator<NodeId> for SortedIds {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> Self {
        SortedIds::new(iter.into_iter().collect())
    }
}

impl IdSet for SortedIds {
    fn len_in(&self, range: &Range) -> usize {
        self.slice(range).len()
    }

    fn fingerprint(&self, range: &Range) -> Fingerprint {
        fingerprint_of(self.slice(range))
    }

    fn ids_in(&self, range: &Range, out: &mut Vec<NodeId>) {
        out.extend_from_slice(self.slice(range));
    }

    fn split_points(&self, range: &Range, parts: usize) -> Vec<NodeId> {
        let s = self.slice(range);
        let c = s.len();
        let parts = parts.max(1);
        let mut points = Vec::with_capacity(parts);
        let mut last = 0;
        for i in 1..parts {
            let idx = i * c / parts;
            if idx == 0 || idx >= c || idx == last {
                continue;
            }
            last = idx;
            points.push(separator(&s[idx - 1], &s[idx]));
        }
        points
    }
}

/// One range of a [`Message`]; the range starts where the previous item's ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Skip {
        upper: Option<NodeId>,
    },
    Fingerprint {
        upper: Option<NodeId>,
        fp: [u8; 16],
    },
    IdList {
        upper: Option<NodeId>,
        ids: Vec<NodeId>,
    },
}

impl Item {
    pub fn upper(&self) -> Option<NodeId> {
        match self {
            Item::Skip { upper } | Item::Fingerprint { upper, .. } | Item::IdList { upper, .. } => {
                *upper
            }
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Item::Skip { .. } => TAG_SKIP,
            Item::Fingerprint { .. } => TAG_FINGERPRINT,
            Item::IdList { .. } => TAG_ID_LIST,
        }
    }
}

const TAG_SKIP: u8 = 0;
const TAG_FINGERPRINT: u8 = 1;
const TAG_ID_LIST: u8 = 2;

/// Why a [`Message`] is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("a reconcile message needs at least one item")]
    Empty,
    #[error("item {0}: bounds must strictly increase")]
    Unordered(usize),
    #[error("item {0}: only the last item may, and it must, end at the end of the id space")]
    End(usize),
    #[error("item {0}: adjacent Skip items must be merged")]
    AdjacentSkips(usize),
    #[error("item {0}: ids must be strictly ascending and inside the item's range")]
    Ids(usize),
    #[error("bound at offset {0} is not minimally encoded (length over 32 or trailing zero)")]
    Bound(usize),
}

/// Why [`Reconciler::respond`] refused to go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error("peer kept reconciling past {0} rounds")]
    TooManyRounds(usize),
}

/// A reconciliation message: items covering the whole id space, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    items: Vec<Item>,
}

impl Message {
    /// Checks the invariants (see the module docs) and wraps `items`.
    pub fn new(items: Vec<Item>) -> Result<Self, MessageError> {
        validate(&items)?;
        Ok(Message { items })
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    pub fn into_items(self) -> Vec<Item> {
        self.items
    }

    /// Each item with the range it covers.
    pub fn ranges(&self) -> impl Iterator<Item = (Range, &Item)> {
        let mut lower = ZERO;
        self.items.iter().map(move |item| {
            let range = Range {
                lower,
                upper: item.upper(),
            };
            if let Some(u) = item.upper() {
                lower = u;
            }
            (range, item)
        })
    }

    /// True when every range is skipped: the sender found no difference anywhere, so the
    /// receiver learns nothing and owes no answer (what a peer in sync answers an opening of
    /// fingerprints). A receiver may then end without looking at its own set.
    pub fn is_settled(&self) -> bool {
        self.items.iter().all(|i| matches!(i, Item::Skip { .. }))
    }

    /// True when the message asks nothing of its receiver except possibly answers to lists.
    fn has_fingerprints(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(i, Item::Fingerprint { .. }))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(VERSION);
        put_u32(&mut out, self.items.len());
        for item in &self.items {
            out.push(item.tag());
            put_bound(&mut out, item.upper());
            match item {
                Item::Skip { .. } => {}
                Item::Fingerprint { fp, .. } => out.extend_from_slice(fp),
                Item::IdList { ids, .. } => {
                    put_u32(&mut out, ids.len());
                    for id in ids {
                        out.extend_from_slice(&id.0);
                    }
                }
            }
        }
        out
    }

    pub fn encoded_len(&self) -> usize {
        5 + self
            .items
            .iter()
            .map(|item| {
                2 + item.upper().map_or(0, |u| bound_len(&u))
                    + match item {
                        Item::Skip { .. } => 0,
                        Item::Fingerprint { .. } => 16,
                        Item::IdList { ids, .. } => 4 + 32 * ids.len(),
                    }
            })
            .sum::<usize>()
    }

    /// Strict decoder: never panics, never allocates more than the input could hold.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::FormatVersion(version).into());
        }
        let count = r.u32()?;
        // Every item is at least 2 bytes: refuse counts the input cannot hold before allocating.
        r.need(count.saturating_mul(2))?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = r.tag("reconcile item", &[TAG_SKIP, TAG_FINGERPRINT, TAG_ID_LIST])?;
            let upper = read_bound(&mut r)?;
            items.push(match tag {
                TAG_SKIP => Item::Skip { upper },
                TAG_FINGERPRINT => Item::Fingerprint {
                    upper,
                    fp: r.array()?,
                },
                _ => {
                    let n = r.u32()?;
                    r.need(n.saturating_mul(32))?;
                    let mut ids = Vec::with_capacity(n);
                    for _ in 0..n {
                        ids.push(NodeId(r.array()?));
                    }
                    Item::IdList { upper, ids }
                }
            });
        }
        r.finish()?;
        Message::new(items)
    }
}

fn bound_len(id: &NodeId) -> usize {
    32 - id.0.iter().rev().take_while(|b| **b == 0).count()
}

fn put_bound(out: &mut Vec<u8>, bound: Option<NodeId>) {
    match bound {
        None => out.push(0),
        Some(id) => {
            // Never the zero id: validation requires every bound to exceed the previous one.
            let n = bound_len(&id);
            out.push(n as u8);
            out.extend_from_slice(&id.0[..n]);
        }
    }
}

fn read_bound(r: &mut Reader<'_>) -> Result<Option<NodeId>, MessageError> {
    let offset = r.pos;
    let n = r.u8()? as usize;
    if n == 0 {
        return Ok(None);
    }
    if n > 32 {
        return Err(MessageError::Bound(offset));
    }
    let prefix = r.take(n)?;
    if prefix[n - 1] == 0 {
        return Err(MessageError::Bound(offset));
    }
    let mut id = [0u8; 32];
    id[..n].copy_from_slice(prefix);
    Ok(Some(NodeId(id)))
}

fn validate(items: &[Item]) -> Result<(), MessageError> {
    if items.is_empty() {
        return Err(MessageError::Empty);
    }
    let mut lower = ZERO;
    let last = items.len() - 1;
    for (i, item) in items.iter().enumerate() {
        let upper = item.upper();
        match upper {
            None if i != last => return Err(MessageError::End(i)),
            Some(_) if i == last => return Err(MessageError::End(i)),
            Some(u) if u <= lower => return Err(MessageError::Unordered(i)),
            _ => {}
        }
        if i > 0 && matches!(item, Item::Skip { .. }) && matches!(items[i - 1], Item::Skip { .. }) {
            return Err(MessageError::AdjacentSkips(i));
        }
        if let Item::IdList { ids, .. } = item {
            let range = Range { lower, upper };
            let ordered = ids.windows(2).all(|w| w[0] < w[1]);
            let inside = ids.first().is_none_or(|f| range.contains(f))
                && ids.last().is_none_or(|l| range.contains(l));
            if !ordered || !inside {
                return Err(MessageError::Ids(i));
            }
        }
        if let Some(u) = upper {
            lower = u;
        }
    }
    Ok(())
}

/// Builds a reply, merging adjacent skips.
#[derive(Default)]
struct Builder {
    items: Vec<Item>,
}

impl Builder {
    fn skip(&mut self, upper: Option<NodeId>) {
        if let Some(Item::Skip { upper: last }) = self.items.last_mut() {
            *last = upper;
        } else {
            self.items.push(Item::Skip { upper });
        }
    }

    fn push(&mut self, item: Item) {
        match item {
            Item::Skip { upper } => self.skip(upper),
            item => self.items.push(item),
        }
    }

    fn finish(self) -> Message {
        debug_assert_eq!(validate(&self.items), Ok(()));
        Message { items: self.items }
    }
}

/// Tuning knobs. Peers need not agree on them: each side splits and lists by its own choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// How many parts a differing range is split into (`B`); at least 2.
    pub split: usize,
    /// A differing range with at most this many of our ids is sent as an id list; at least 1.
    pub leaf: usize,
    /// `respond` fails after this many calls (bounds the work a hostile peer can cause).
    pub max_rounds: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            split: 16,
            leaf: 16,
            max_rounds: 64,
        }
    }
}

/// What one incoming message taught us, and what to send back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The message to send back; `None` when the incoming message asked for nothing.
    pub reply: Option<Message>,
    /// Ids the other side has that we lack (learned in this step), ascending.
    pub have: Vec<NodeId>,
    /// Ids we have that the other side lacks (learned in this step), ascending.
    pub need: Vec<NodeId>,
    /// Nothing is outstanding on our side: after sending `reply` (if any) we expect no reply.
    pub done: bool,
}

/// The RBSR state machine for one peer of one exchange.
#[derive(Debug, Clone)]
pub struct Reconciler<S: IdSet> {
    set: S,
    params: Params,
    /// Ranges we sent fresh id lists for in our last message, ascending.
    pending: Vec<Range>,
    rounds: usize,
}

impl<S: IdSet> Reconciler<S> {
    pub fn new(set: S) -> Self {
        Self::with_params(set, Params::default())
    }

    pub fn with_params(set: S, params: Params) -> Self {
        let params = Params {
            split: params.split.max(2),
            leaf: params.leaf.max(1),
            max_rounds: params.max_rounds,
        };
        Reconciler {
            set,
            params,
            pending: Vec::new(),
            rounds: 0,
        }
    }

    pub fn set(&self) -> &S {
        &self.set
    }

    pub fn into_set(self) -> S {
        self.set
    }

    /// How many messages this side has processed.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// The opening message: the whole space treated as differing (a list if our set is small,
    /// otherwise `split` fingerprints), which saves the round trip a single fingerprint would.
    pub fn initiate(&mut self) -> Message {
        self.pending.clear();
        let mut out = Builder::default();
        self.differing(Range::FULL, &mut out);
        out.finish()
    }

    pub fn respond(&mut self, msg: &Message) -> Result<Step, ReconcileError> {
        self.rounds += 1;
        if self.rounds > self.params.max_rounds {
            return Err(ReconcileError::TooManyRounds(self.params.max_rounds));
        }
        let pending = std::mem::take(&mut self.pending);
        let mut out = Builder::default();
        let mut asked = false;
        let mut have = Vec::new();
        let mut need = Vec::new();
        let mut ours = Vec::new();
        for (range, item) in msg.ranges() {
            match item {
                Item::Skip { upper } => out.skip(*upper),
                Item::Fingerprint { upper, fp } => {
                    asked = true;
                    if self.set.fingerprint(&range).0 == *fp {
                        out.skip(*upper);
                    } else {
                        self.differing(range, &mut out);
                    }
                }
                Item::IdList { upper, ids } => {
                    ours.clear();
                    self.set.ids_in(&range, &mut ours);
                    let is_answer = pending
                        .binary_search_by(|p| p.lower.cmp(&range.lower))
                        .is_ok_and(|i| pending[i] == range);
                    if is_answer {
                        // `ids` is the symmetric difference of the two sides.
                        for id in ids {
                            if ours.binary_search(id).is_ok() {
                                need.push(*id);
                            } else {
                                have.push(*id);
                            }
                        }
                        out.skip(*upper);
                    } else {
                        asked = true;
                        let diff = merge_diff(ids, &ours, &mut have, &mut need);
                        if diff.is_empty() {
                            out.skip(*upper);
                        } else {
                            out.push(Item::IdList {
                                upper: *upper,
                                ids: diff,
                            });
                        }
                    }
                }
            }
        }
        let reply = asked.then(|| out.finish());
        let done = self.pending.is_empty() && reply.as_ref().is_none_or(|m| !m.has_fingerprints());
        if reply.is_none() {
            self.pending.clear();
        }
        Ok(Step {
            reply,
            have,
            need,
            done,
        })
    }

    /// Emits items for a range whose fingerprints differ (or that opens the exchange).
    fn differing(&mut self, range: Range, out: &mut Builder) {
        let n = self.set.len_in(&range);
        let mut points = if n <= self.params.leaf {
            Vec::new()
        } else {
            self.set.split_points(&range, self.params.split)
        };
        // Defend against an IdSet breaking the split contract.
        let mut lower = range.lower;
        points.retain(|p| {
            let ok = *p > lower && range.upper.is_none_or(|u| *p < u);
            if ok {
                lower = *p;
            }
            ok
        });
        if points.is_empty() {
            let mut ids = Vec::with_capacity(n);
            self.set.ids_in(&range, &mut ids);
            out.push(Item::IdList {
                upper: range.upper,
                ids,
            });
            self.pending.push(range);
            return;
        }
        let mut lower = range.lower;
        for upper in points.into_iter().map(Some).chain([range.upper]) {
            let sub = Range { lower, upper };
            out.push(Item::Fingerprint {
                upper,
                fp: self.set.fingerprint(&sub).0,
            });
            if let Some(u) = upper {
                lower = u;
            }
        }
    }
}

/// Merges two ascending lists: pushes `theirs \ ours` to `have`, `ours \ theirs` to `need`,
/// and returns the symmetric difference, ascending.
fn merge_diff(
    theirs: &[NodeId],
    ours: &[NodeId],
    have: &mut Vec<NodeId>,
    need: &mut Vec<NodeId>,
) -> Vec<NodeId> {
    let mut diff = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < theirs.len() || j < ours.len() {
        match (theirs.get(i), ours.get(j)) {
            (Some(t), Some(o)) if t == o => {
                i += 1;
                j += 1;
            }
            (Some(t), o) if o.is_none_or(|o| t < o) => {
                have.push(*t);
                diff.push(*t);
                i += 1;
            }
            (_, Some(o)) => {
                need.push(*o);
                diff.push(*o);
                j += 1;
            }
            (_, None) => unreachable!("loop condition"),
        }
    }
    diff
}
