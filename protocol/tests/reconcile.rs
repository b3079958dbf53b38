//! Range-based set reconciliation: protocol properties (correctness of both differences,
//! round trips and bytes as functions of the difference) and a strict, panic-free decoder.

use proptest::prelude::*;
use tapes_protocol::reconcile::{
    Item, Message, MessageError, Params, Reconciler, SortedIds, VERSION,
};
use tapes_protocol::NodeId;

fn id(seed: u64, i: u64) -> NodeId {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&i.to_le_bytes());
    NodeId(*h.finalize().as_bytes())
}

fn ids(seed: u64, n: u64) -> Vec<NodeId> {
    (0..n).map(|i| id(seed, i)).collect()
}

#[derive(Debug, Default)]
struct Outcome {
    /// Messages sent (both directions); a round trip is two.
    messages: usize,
    bytes_ab: usize,
    bytes_ba: usize,
    max_message: usize,
    a_have: Vec<NodeId>,
    a_need: Vec<NodeId>,
    b_have: Vec<NodeId>,
    b_need: Vec<NodeId>,
}

impl Outcome {
    fn round_trips(&self) -> usize {
        self.messages.div_ceil(2)
    }
}

/// Runs the exchange to completion through the wire encoding; A initiates.
fn run(a: &SortedIds, b: &SortedIds) -> Outcome {
    let mut ra = Reconciler::new(a);
    let mut rb = Reconciler::new(b);
    let mut out = Outcome::default();
    let mut msg = ra.initiate();
    let mut to_b = true;
    let mut a_done = false;
    let mut b_done = false;
    loop {
        let bytes = msg.encode();
        assert_eq!(bytes.len(), msg.encoded_len());
        out.messages += 1;
        out.max_message = out.max_message.max(bytes.len());
        if to_b {
            out.bytes_ab += bytes.len();
        } else {
            out.bytes_ba += bytes.len();
        }
        let decoded = Message::decode(&bytes).expect("own message decodes");
        assert_eq!(decoded, msg);
        let step = if to_b {
            rb.respond(&decoded).expect("respond")
        } else {
            ra.respond(&decoded).expect("respond")
        };
        if to_b {
            out.b_have.extend(step.have);
            out.b_need.extend(step.need);
            b_done = step.done;
        } else {
            out.a_have.extend(step.have);
            out.a_need.extend(step.need);
            a_done = step.done;
        }
        match step.reply {
            None => {
                // Both sides report done: the last receiver, and the sender of the last message.
                assert!(a_done && b_done, "exchange ended but a side is not done");
                break;
            }
            Some(m) => msg = m,
        }
        to_b = !to_b;
        assert!(out.messages < 200, "exchange does not terminate");
    }
    out
}

fn diff(x: &SortedIds, y: &SortedIds) -> Vec<NodeId> {
    x.as_slice()
        .iter()
        .filter(|i| !y.contains(i))
        .copied()
        .collect()
}

fn check(a: &SortedIds, b: &SortedIds, out: &Outcome) {
    let b_minus_a = diff(b, a);
    let a_minus_b = diff(a, b);
    let sorted = |v: &Vec<NodeId>| SortedIds::new(v.clone());
    assert_eq!(
        out.a_have.len(),
        sorted(&out.a_have).len(),
        "duplicate in have"
    );
    assert_eq!(sorted(&out.a_have).as_slice(), b_minus_a.as_slice());
    assert_eq!(sorted(&out.a_need).as_slice(), a_minus_b.as_slice());
    assert_eq!(sorted(&out.b_have).as_slice(), a_minus_b.as_slice());
    assert_eq!(sorted(&out.b_need).as_slice(), b_minus_a.as_slice());
}

/// Module doc bound: messages <= k_A + k_B + 2 with k_X = ceil(log_split(n_X / leaf)).
fn message_bound(n_a: usize, n_b: usize) -> usize {
    let p = Params::default();
    let k = |n: usize| {
        let mut k = 0;
        let mut c = n;
        while c > p.leaf {
            c = c.div_ceil(p.split);
            k += 1;
        }
        k
    };
    k(n_a) + k(n_b) + 2
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_overlapping_sets_reconcile_exactly(
        shared in 0u64..1500, a_only in 0u64..500, b_only in 0u64..500, seed in any::<u64>(),
        swap in any::<bool>(),
    ) {
        let common = ids(seed, shared);
        let mut a = common.clone();
        a.extend(ids(seed ^ 0xa, a_only));
        let mut b = common;
        b.extend(ids(seed ^ 0xb, b_only));
        let (a, b) = if swap { (b, a) } else { (a, b) };
        let (a, b) = (SortedIds::new(a), SortedIds::new(b));
        let out = run(&a, &b);
        check(&a, &b, &out);
        prop_assert!(out.messages <= message_bound(a.len(), b.len()),
            "{} messages > bound {}", out.messages, message_bound(a.len(), b.len()));
    }

    /// Clustered ids (20-byte shared prefixes) stress the minimal bounds. The tails stay
    /// random: XOR fingerprints assume hash-like ids (see the module docs), and ids from a tiny
    /// space would collide by construction.
    #[test]
    fn clustered_sets_reconcile_exactly(
        a in prop::collection::vec((0u8..3, 0u8..3, any::<u16>()), 0..400),
        b in prop::collection::vec((0u8..3, 0u8..3, any::<u16>()), 0..400),
    ) {
        let mk = |v: &Vec<(u8, u8, u16)>| SortedIds::new(v.iter().map(|&(x, y, z)| {
            let tail = blake3::hash(&[x, y, z as u8, (z >> 8) as u8]);
            let mut id = [0u8; 32];
            id[0] = x;
            id[20] = y;
            id[21..].copy_from_slice(&tail.as_bytes()[..11]);
            NodeId(id)
        }).collect());
        let (a, b) = (mk(&a), mk(&b));
        let out = run(&a, &b);
        check(&a, &b, &out);
        prop_assert!(out.messages <= message_bound(a.len(), b.len()));
    }

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(msg) = Message::decode(&bytes) {
            // Strict: whatever decodes is canonical.
            prop_assert_eq!(msg.encode(), bytes);
        }
    }

    /// Arbitrary bytes after a valid header, to get past the version and count checks.
    #[test]
    fn decoder_never_panics_on_plausible_input(
        count in 0u32..6,
        body in prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(2u8), any::<u8>()], 0..400),
    ) {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&body);
        if let Ok(msg) = Message::decode(&bytes) {
            prop_assert_eq!(msg.encode(), bytes);
        }
    }
}

#[test]
fn empty_and_one_sided_sets() {
    let empty = SortedIds::default();
    let some = SortedIds::new(ids(1, 1000));
    for (a, b) in [(&empty, &empty), (&empty, &some), (&some, &empty)] {
        let out = run(a, b);
        check(a, b, &out);
        assert!(out.messages <= message_bound(a.len(), b.len()));
    }
}

/// Ids equal but for the last byte: bounds are full 32-byte prefixes.
#[test]
fn ids_differing_only_in_the_last_byte() {
    let mk = |bytes: &mut dyn Iterator<Item = u8>| {
        SortedIds::new(
            bytes
                .map(|b| {
                    let mut id = [0xab; 32];
                    id[31] = b;
                    NodeId(id)
                })
                .collect(),
        )
    };
    let a = mk(&mut (1..=100));
    let b = mk(&mut (1..=100).filter(|b| *b != 50).chain([150, 0]));
    for (x, y) in [(&a, &b), (&b, &a)] {
        let out = run(x, y);
        check(x, y, &out);
        assert_eq!(out.a_have.len() + out.a_need.len(), 3);
    }
}

#[test]
fn identical_sets_take_one_round_trip_under_1kb() {
    let a = SortedIds::new(ids(7, 100_000));
    let out = run(&a, &a.clone());
    check(&a, &a, &out);
    assert_eq!(out.messages, 2, "one round trip");
    assert!(out.bytes_ab < 1024, "{} bytes", out.bytes_ab);
    assert!(out.bytes_ba < 1024, "{} bytes", out.bytes_ba);
    assert!(out.a_have.is_empty() && out.a_need.is_empty());
}

#[test]
fn ten_new_ids_against_100k_shared() {
    let shared = ids(8, 100_000);
    let a = SortedIds::new(shared.clone());
    let mut b = shared;
    b.extend(ids(9, 10));
    let b = SortedIds::new(b);
    for (x, y) in [(&a, &b), (&b, &a)] {
        let out = run(x, y);
        check(x, y, &out);
        let total = out.bytes_ab + out.bytes_ba;
        eprintln!(
            "10 new / 100k: {} messages, {} round trips, {} + {} = {} bytes",
            out.messages,
            out.round_trips(),
            out.bytes_ab,
            out.bytes_ba,
            total
        );
        assert!(out.round_trips() <= 4, "{} round trips", out.round_trips());
        assert!(total < 16 * 1024, "{total} bytes");
    }
}

#[test]
fn answers_and_skips_need_no_reply() {
    // A small set is sent as one list; the responder answers with the symmetric difference.
    let a = SortedIds::new(ids(3, 5));
    let mut b_ids = ids(3, 3);
    b_ids.extend(ids(4, 2));
    let b = SortedIds::new(b_ids);
    let mut ra = Reconciler::new(&a);
    let mut rb = Reconciler::new(&b);
    let open = ra.initiate();
    assert!(matches!(open.items(), [Item::IdList { upper: None, ids }] if ids.len() == 5));
    let step_b = rb.respond(&open).unwrap();
    assert!(step_b.done);
    assert_eq!(step_b.have.len(), 2);
    assert_eq!(step_b.need.len(), 2);
    let answer = step_b.reply.unwrap();
    let step_a = ra.respond(&answer).unwrap();
    assert!(step_a.reply.is_none() && step_a.done);
    assert_eq!(step_a.have, step_b.need);
    assert_eq!(step_a.need, step_b.have);
}

#[test]
fn hostile_peer_is_cut_off() {
    let a = SortedIds::new(ids(5, 100));
    let mut r = Reconciler::with_params(
        &a,
        Params {
            max_rounds: 3,
            ..Params::default()
        },
    );
    // A peer that keeps sending fresh (empty) lists gets answered, but only so often.
    let nag = Message::new(vec![Item::IdList {
        upper: None,
        ids: vec![],
    }])
    .unwrap();
    for _ in 0..3 {
        assert!(r.respond(&nag).unwrap().reply.is_some());
    }
    assert!(r.respond(&nag).is_err());
}

/// A message with every kind of item, for the malformed-input tests.
fn sample() -> Message {
    let a = SortedIds::new(ids(10, 300));
    let mut b = a.as_slice().to_vec();
    b.extend(ids(11, 3));
    let b = SortedIds::new(b);
    let mut ra = Reconciler::new(&a);
    let mut rb = Reconciler::new(&b);
    let mut msg = ra.initiate();
    let mut to_b = true;
    loop {
        let has = |t: fn(&Item) -> bool| msg.items().iter().any(t);
        if has(|i| matches!(i, Item::Skip { .. })) && has(|i| matches!(i, Item::Fingerprint { .. }))
        {
            return msg;
        }
        let step = if to_b {
            rb.respond(&msg).unwrap()
        } else {
            ra.respond(&msg).unwrap()
        };
        msg = step.reply.expect("sample has fingerprints and skips");
        to_b = !to_b;
    }
}

#[test]
fn truncated_messages_are_refused_at_every_offset() {
    let mut msgs = vec![sample()];
    msgs.push(
        Message::new(vec![
            Item::Fingerprint {
                upper: Some(id(1, 1)),
                fp: [7; 16],
            },
            Item::IdList {
                upper: None,
                ids: vec![NodeId([0xff; 32])],
            },
        ])
        .unwrap(),
    );
    for msg in msgs {
        let bytes = msg.encode();
        assert_eq!(Message::decode(&bytes).unwrap(), msg);
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "accepted a message cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Message::decode(&long).is_err(), "accepted trailing bytes");
    }
}

fn bound(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.push(0),
        Some(p) => {
            out.push(p.len() as u8);
            out.extend_from_slice(p);
        }
    }
}

/// (tag, bound prefix or `None` for the end, payload)
type RawItem<'a> = (u8, Option<&'a [u8]>, &'a [u8]);

fn raw(items: &[RawItem]) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (tag, b, payload) in items {
        out.push(*tag);
        bound(&mut out, *b);
        out.extend_from_slice(payload);
    }
    out
}

#[test]
fn malformed_messages_are_refused() {
    let fp = [1u8; 16];
    let ok = raw(&[(1, Some(&[0x80]), &fp), (0, None, &[])]);
    assert!(Message::decode(&ok).is_ok());

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty input", vec![]),
        ("bad version", {
            let mut v = ok.clone();
            v[0] = 2;
            v
        }),
        ("no items", raw(&[])),
        ("unknown tag", raw(&[(3, None, &[])])),
        (
            "unordered bounds",
            raw(&[
                (1, Some(&[0x80]), &fp),
                (1, Some(&[0x40]), &fp),
                (0, None, &[]),
            ]),
        ),
        (
            "equal bounds",
            raw(&[
                (1, Some(&[0x80]), &fp),
                (1, Some(&[0x80]), &fp),
                (0, None, &[]),
            ]),
        ),
        ("open end", raw(&[(1, Some(&[0x80]), &fp)])),
        ("early end", raw(&[(1, None, &fp), (0, None, &[])])),
        (
            "adjacent skips",
            raw(&[(0, Some(&[0x80]), &[]), (0, None, &[])]),
        ),
        (
            "non-minimal bound",
            raw(&[(1, Some(&[0x80, 0]), &fp), (0, None, &[])]),
        ),
        (
            "bound over 32 bytes",
            raw(&[(1, Some(&[1; 33]), &fp), (0, None, &[])]),
        ),
        ("huge item count", {
            let mut v = vec![VERSION];
            v.extend_from_slice(&u32::MAX.to_le_bytes());
            v.extend_from_slice(&[0, 0]);
            v
        }),
        ("huge id count", {
            let mut payload = u32::MAX.to_le_bytes().to_vec();
            payload.extend_from_slice(&[0xff; 32]);
            raw(&[(2, None, &payload)])
        }),
        ("unsorted ids", {
            let mut payload = 2u32.to_le_bytes().to_vec();
            payload.extend_from_slice(&[0xff; 32]);
            payload.extend_from_slice(&[0xfe; 32]);
            raw(&[(2, None, &payload)])
        }),
        ("duplicate ids", {
            let mut payload = 2u32.to_le_bytes().to_vec();
            payload.extend_from_slice(&[0xfe; 32]);
            payload.extend_from_slice(&[0xfe; 32]);
            raw(&[(2, None, &payload)])
        }),
        ("id outside its range", {
            let mut payload = 1u32.to_le_bytes().to_vec();
            payload.extend_from_slice(&[0x90; 32]);
            raw(&[(2, Some(&[0x80]), &payload), (0, None, &[])])
        }),
    ];
    for (what, bytes) in cases {
        assert!(Message::decode(&bytes).is_err(), "accepted: {what}");
    }
    assert!(matches!(
        Message::decode(&raw(&[
            (1, Some(&[0x80]), &fp),
            (1, Some(&[0x40]), &fp),
            (0, None, &[])
        ])),
        Err(MessageError::Unordered(1))
    ));
    // The constructor enforces the same invariants as the decoder.
    assert_eq!(Message::new(vec![]), Err(MessageError::Empty));
    assert!(Message::new(vec![
        Item::Skip {
            upper: Some(NodeId([0; 32]))
        },
        Item::Fingerprint { upper: None, fp }
    ])
    .is_err());
}

/// The answer of a peer in sync to an opening of fingerprints is settled (every range
/// skipped), so the opener may end without its set; any difference, however small, is not.
#[test]
fn an_answer_in_sync_is_settled_and_one_difference_is_not() {
    let set = SortedIds::new(ids(7, 5_000));
    let mut opener = Reconciler::new(&set);
    let opening = opener.initiate();
    let mut same = Reconciler::new(&set);
    let answer = same
        .respond(&opening)
        .unwrap()
        .reply
        .expect("fingerprints are answered");
    assert!(answer.is_settled(), "{answer:?}");
    let step = opener.respond(&answer).unwrap();
    assert!(step.have.is_empty() && step.need.is_empty() && step.reply.is_none());

    let mut one_more = ids(7, 5_000);
    one_more.push(id(8, 0));
    let other = SortedIds::new(one_more);
    let answer = Reconciler::new(&other)
        .respond(&opening)
        .unwrap()
        .reply
        .unwrap();
    assert!(!answer.is_settled());
    // A short set opens with its id list, which is never answered as settled by a peer that
    // has something the opener lacks.
    let short = SortedIds::new(ids(9, 3));
    let opening = Reconciler::new(&short).initiate();
    let mut more = ids(9, 3);
    more.push(id(9, 99));
    let answer = Reconciler::new(&SortedIds::new(more))
        .respond(&opening)
        .unwrap()
        .reply;
    assert!(answer.is_some_and(|a| !a.is_settled()));
}
