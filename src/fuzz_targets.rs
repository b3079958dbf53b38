//! Fuzz entry points for the decoders the library owns (SPEC.md §7 threat model: every byte
//! that comes from a peer, a relay, a bundle or an agent's file is hostile).
//!
//! One function per decoder, each taking arbitrary bytes and never panicking: the `fuzz/`
//! crate's libFuzzer targets call these, and `tests/it/fuzz_corpus.rs` replays every file of
//! `fuzz/corpus/<target>/` through them under `cargo test`. The protocol's own decoders
//! (`tapes/sync/3` frames, reconciliation, manifests, joins, bundle frames) have theirs in
//! `tapes_protocol::fuzz_targets`, re-exported here. The formats: session records (SPEC.md
//! §3.2), share records (§11.1), team-sealed content (§9.6), bundle files as `bundle verify`
//! and `bundle import` read them (§12.1–§12.4), pack files and indexes (§4, the layout in
//! `store::backend::pack`) and the importers' transcripts (§8).
//!
//! Not part of the API: hidden from the docs, kept public only for the fuzz crate and tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::identity::{Identity, Profile};
use crate::import::{self, detect::SourceFormat};
use crate::session::SessionRecord;
use crate::share::SignedShare;
use crate::store::backend::pack::{self, PackRecord};
use crate::store::Store;
use crate::sync::bundle;
use crate::team::keyring::Sealed;

pub use tapes_protocol::fuzz_targets::*;

/// A throwaway identity that exists only for fuzzing: the `bundle_file` seeds were made with
/// it (sealed to it, signed by it), so mutated seeds get past opening and signature checks to
/// the decoders behind them. It guards nothing.
const FUZZ_NODE_SEED: &str = "bf9805c466d738ff00ad0ea58ffb199a04ca224086b851330239e44b0f03f034";
const FUZZ_AGE_KEY: &str =
    "AGE-SECRET-KEY-10SSXWHF0R7CPSRD0LCLNXARJZDCZ5SXZWE5889YFEWZW2S3C6WYS9TW5P7";

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// A scratch directory for this process, made once (the fuzzers run one input at a time).
fn scratch() -> &'static Path {
    SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tapes-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("the temporary directory is writable");
        dir
    })
}

/// Removes this process's scratch directory, if one was made (the replay test calls it last).
pub fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

fn fuzz_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(FUZZ_NODE_SEED, &mut seed).expect("a constant");
        Identity::from_parts(
            ed25519_dalek::SigningKey::from_bytes(&seed),
            FUZZ_AGE_KEY.parse().expect("a constant"),
            Profile {
                name: "fuzz".into(),
                email: None,
            },
        )
    })
}

fn fuzz_store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| Store::open(&scratch().join("store")).expect("a fresh store opens"))
}

/// A session ref's record (SPEC.md §3.2), as it arrives in a bundle or a session frame.
pub fn session_record(data: &[u8]) {
    if let Ok(record) = SessionRecord::decode(data) {
        let again = SessionRecord::decode(&record.encode()).expect("a record re-encodes");
        assert_eq!(again, record);
    }
}

/// A signed share record (SPEC.md §11.1), and team-sealed content (§9.6) around one.
pub fn share_record(data: &[u8]) {
    if let Ok(share) = SignedShare::decode_stored(data) {
        let _ = share.verify();
        let _ = share.is_live(0);
        let again = SignedShare::decode_stored(&share.encode()).expect("a share re-encodes");
        assert_eq!(again, share);
    }
    let _ = SignedShare::decode(data);
    if let Ok(sealed) = Sealed::decode(data) {
        assert_eq!(sealed.encode(), data);
    }
}

/// A bundle file (SPEC.md §12.1), checked as `tapes bundle verify` and `tapes bundle import`
/// check it before writing anything: once as read, once with the trailer's checksum made to
/// match (so mutations reach the end of the walk and the final checks).
pub fn bundle_file(data: &[u8]) {
    let path = scratch().join("fuzz.tape");
    let identity = fuzz_identity();
    let store = fuzz_store();
    for fixed in [false, true] {
        let mut bytes = data.to_vec();
        if fixed {
            if bytes.len() <= 32 {
                return;
            }
            let end = bytes.len() - 32;
            let sum = tapes_protocol::bundle::checksum_of(&bytes[..end]);
            bytes[end..].copy_from_slice(&sum);
        }
        if fs::write(&path, &bytes).is_err() {
            return;
        }
        let _ = bundle::verify(store, Some(identity), &path, &mut |_| {});
    }
    bundle_bytes(data);
}

/// A pack and its index (SPEC.md §4; layout in `store::backend::pack`) as a store finds them
/// on disk when salvaging: `data` is `idx_len u32le || index || pack`. The index's trailing
/// checksum is made to match, so mutations reach the fanout and entries behind it; every
/// entry is then looked up and read.
pub fn pack_files(data: &[u8]) {
    const NAME: &str = "0123456789abcdef0123456789abcdef";
    let _ = PackRecord::decode(NAME.as_bytes(), data);
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let idx_len = (u32::from_le_bytes(*head) as usize).min(rest.len());
    let (idx, pack_bytes) = rest.split_at(idx_len);
    let mut idx = idx.to_vec();
    if idx.len() >= 32 {
        let end = idx.len() - 32;
        let sum = *blake3::hash(&idx[..end]).as_bytes();
        idx[end..].copy_from_slice(&sum);
    }
    let dir = scratch().join("pack");
    let _ = fs::remove_dir_all(&dir);
    if fs::create_dir_all(&dir).is_err()
        || fs::write(dir.join(format!("{NAME}.idx")), &idx).is_err()
        || fs::write(dir.join(format!("{NAME}.pack")), pack_bytes).is_err()
    {
        return;
    }
    for (_, opened) in pack::open_unregistered(&dir) {
        let Ok(pack) = opened else {
            continue;
        };
        let mut cursor = 0;
        for i in 0..pack.len() {
            let id = pack.id_at(i);
            let _ = pack.object_at(i);
            let _ = pack.get(&id);
            let _ = pack.find_sorted(&mut cursor, &id);
        }
        let _ = pack.find(&tapes_protocol::NodeId([0xff; 32]));
        let _ = pack.verify_index();
        let _ = pack.disk_size();
    }
}

fn transcript(data: &[u8], name: &str, format: SourceFormat) {
    let dir = scratch().join("transcripts").join("chats");
    if fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join(name);
    if fs::write(&path, data).is_err() {
        return;
    }
    let _ = import::parse_file(&path, format);
}

/// A Claude Code transcript (JSONL, SPEC.md §8).
pub fn import_claude(data: &[u8]) {
    transcript(data, "0a8c9b1e-fuzz.jsonl", SourceFormat::Claude);
}

/// A Codex rollout (JSONL, SPEC.md §8).
pub fn import_codex(data: &[u8]) {
    transcript(
        data,
        "rollout-2026-12-06T18-53-45-01a24cb4-7a6d-7a52-8f86-baf1fc318cc1.jsonl",
        SourceFormat::Codex,
    );
}

/// A Gemini CLI session, both the chat JSON document and the JSONL log (SPEC.md §8).
pub fn import_gemini(data: &[u8]) {
    transcript(
        data,
        "session-2026-12-06T18-53-fuzz.json",
        SourceFormat::GeminiChat,
    );
    transcript(
        data,
        "session-2026-12-06T18-53-fuzz.jsonl",
        SourceFormat::GeminiLog,
    );
}

/// A messages JSON document (SPEC.md §8).
pub fn import_messages_json(data: &[u8]) {
    transcript(data, "messages.json", SourceFormat::MessagesJson);
}
