//! probe
use std::process::Command;
use std::time::Instant;
use tapes::sample::{self, Shape};
use tapes_protocol::SessionId;

#[test]
fn probe() {
    let n: usize = std::env::var("PROBE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let mut expected = Vec::new();
    for i in 0..n {
        let s = sample::session(7, i, Shape::default());
        std::fs::write(dir.join(format!("{i:06}.jsonl")), sample::claude_jsonl(&s)).unwrap();
        expected.push((SessionId::derive("claude", &s.source_id), s.messages.len()));
    }
    eprintln!("generated {n} in {:?}", t.elapsed());
    let home = tmp.path().join("home");
    for round in 0..2 {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tapes")).arg("import").arg(&dir).env("TAPES_HOME", &home).output().unwrap();
        eprintln!("import {round}: {:?} {:?} {}", t.elapsed(), out.status, String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or(""));
    }
    let store = tapes::store::Store::open(&home.join("store")).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), n);
    let t = Instant::now();
    for (id, m) in &expected {
        let r = store.session(id).unwrap().expect("session present");
        assert_eq!(r.summary.messages as usize, *m);
        assert_eq!(store.chain(&r.head).unwrap().len(), *m);
    }
    eprintln!("chains {:?}", t.elapsed());
    eprintln!("objects {} ; messages per session {}", store.storage().object_count(), expected[0].1);
    let t = Instant::now();
    let rep = tapes::fsck::fsck(&store, |_| {}).unwrap();
    eprintln!("fsck {:?} clean={}", t.elapsed(), rep.is_clean());
    for p in rep.problems.iter().take(5) { eprintln!("problem: {p}"); }
    eprintln!("problems: {}", rep.problems.len());
}
