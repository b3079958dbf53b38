//! Range-based set reconciliation at 1,000,000 shared ids: round trips and bytes each way
//! (protocol properties) and time per round (this machine). Run with
//! `cargo bench -p tapes-protocol --bench reconcile`.

use std::time::{Duration, Instant};

use tapes_protocol::reconcile::{Message, Reconciler, SortedIds};
use tapes_protocol::NodeId;

const SHARED: u64 = 1_000_000;

fn ids(seed: u64, n: u64) -> Vec<NodeId> {
    (0..n)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(&seed.to_le_bytes());
            h.update(&i.to_le_bytes());
            NodeId(*h.finalize().as_bytes())
        })
        .collect()
}

struct Report {
    messages: usize,
    bytes_ab: usize,
    bytes_ba: usize,
    a_have: usize,
    a_need: usize,
    b_have: usize,
    b_need: usize,
    initiate: Duration,
    /// Encode + decode + respond, per message.
    per_message: Vec<(usize, Duration)>,
}

fn run(a: &SortedIds, b: &SortedIds) -> Report {
    let mut ra = Reconciler::new(a);
    let mut rb = Reconciler::new(b);
    let t = Instant::now();
    let mut msg = ra.initiate();
    let initiate = t.elapsed();
    let mut r = Report {
        messages: 0,
        bytes_ab: 0,
        bytes_ba: 0,
        a_have: 0,
        a_need: 0,
        b_have: 0,
        b_need: 0,
        initiate,
        per_message: Vec::new(),
    };
    let mut to_b = true;
    loop {
        let t = Instant::now();
        let bytes = msg.encode();
        r.messages += 1;
        if to_b {
            r.bytes_ab += bytes.len();
        } else {
            r.bytes_ba += bytes.len();
        }
        let decoded = Message::decode(&bytes).unwrap();
        let step = if to_b {
            rb.respond(&decoded).unwrap()
        } else {
            ra.respond(&decoded).unwrap()
        };
        r.per_message.push((bytes.len(), t.elapsed()));
        if to_b {
            r.b_have += step.have.len();
            r.b_need += step.need.len();
        } else {
            r.a_have += step.have.len();
            r.a_need += step.need.len();
        }
        match step.reply {
            None => break,
            Some(m) => msg = m,
        }
        to_b = !to_b;
    }
    r
}

fn main() {
    let t = Instant::now();
    let shared = ids(1, SHARED);
    let base = SortedIds::new(shared.clone());
    let with = |extra: &[NodeId]| {
        let mut v = shared.clone();
        v.extend_from_slice(extra);
        SortedIds::new(v)
    };
    let new10_a = ids(2, 10);
    let new10_b = ids(3, 10);
    let new1000 = ids(4, 1000);
    let scenarios: Vec<(&str, SortedIds, SortedIds)> = vec![
        ("no-op", base.clone(), base.clone()),
        ("10 new on B", base.clone(), with(&new10_b)),
        ("1,000 new on B", base.clone(), with(&new1000)),
        ("10 new on each side", with(&new10_a), with(&new10_b)),
    ];
    println!(
        "reconcile bench: {SHARED} shared ids (setup {:.2?}); A initiates; split = leaf = 16",
        t.elapsed()
    );
    for (name, a, b) in &scenarios {
        let r = run(a, b);
        let per: Vec<String> = r
            .per_message
            .iter()
            .enumerate()
            .map(|(i, (len, d))| {
                format!(
                    "{}{}:{}B/{:.2?}",
                    if i % 2 == 0 { "A→B" } else { "B→A" },
                    i / 2 + 1,
                    len,
                    d
                )
            })
            .collect();
        let total: Duration = r.initiate + r.per_message.iter().map(|(_, d)| *d).sum::<Duration>();
        println!(
            "{name:>20}: {} round trips ({} messages), A→B {} B, B→A {} B; \
             A learns have {} need {}, B learns have {} need {}; total {:.2?} \
             (initiate {:.2?}; per message {})",
            r.messages.div_ceil(2),
            r.messages,
            r.bytes_ab,
            r.bytes_ba,
            r.a_have,
            r.a_need,
            r.b_have,
            r.b_need,
            total,
            r.initiate,
            per.join(", ")
        );
    }
}
