use std::time::Instant;
use tapes::sample::{self, Shape};
fn main() {
    let n = 20000;
    let t = Instant::now();
    let sessions: Vec<_> = (0..n).map(|i| sample::session(7, i, Shape::default())).collect();
    println!("generate {:?}", t.elapsed());
    let t = Instant::now();
    let mut objs = Vec::new();
    for s in &sessions { for (_, o) in tapes::ingest::build_chain(s) { objs.push(o); } }
    println!("chain+encode {:?} ({} objs)", t.elapsed(), objs.len());
    let dir = tempfile::tempdir().unwrap();
    let st = tapes::storage::SledStorage::open(&dir.path().join("db")).unwrap();
    use tapes::storage::Storage;
    let t = Instant::now();
    for chunk in objs.chunks(50000) { st.put_objects(chunk).unwrap(); }
    println!("put {:?}", t.elapsed());
    let t = Instant::now();
    st.flush().unwrap();
    println!("flush {:?}", t.elapsed());
}
