//! Conformance vectors for the privacy formats (SPEC.md §11.4, §18): the signed summary of a
//! metadata-only share (`protocol/vectors/summary.toml`) and audit log entries
//! (`protocol/vectors/audit.toml`), checked byte for byte: ids, signed messages, signatures and
//! encodings, plus what the chain check says of a chain with an entry removed, altered or
//! reordered.
//!
//! To add a vector, write its inputs and run once with `TAPES_BLESS_VECTORS=1` to fill in the
//! expected fields; review the diff: a changed existing vector is a breaking format change.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use tapes_protocol::audit::{check_chain, signature_message, AuditEntry, SignedAuditEntry};
use tapes_protocol::signed::{ShareRecord, SignedShare};
use tapes_protocol::summary::{
    attach, of_share_bytes, summary_message, ShareSummary, SignedSummary,
};

fn key(seed: &str) -> SigningKey {
    let bytes: [u8; 32] = hex::decode(seed)
        .expect("seed hex")
        .try_into()
        .expect("32-byte seed");
    SigningKey::from_bytes(&bytes)
}

fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("TAPES_BLESS_VECTORS").is_some()
}

#[derive(Debug, Serialize, Deserialize)]
struct SummaryFile {
    summary: Vec<SummaryVector>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SummaryVector {
    name: String,
    seed: String,
    /// The share record the summary travels with.
    share: String,
    json: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    signature: String,
    /// The bytes of the metadata-only share: signed share ‖ magic ‖ signed summary.
    #[serde(default)]
    share_bytes: String,
}

#[test]
fn summary_vectors() {
    let text = std::fs::read_to_string(path("summary.toml")).expect("read vectors");
    let mut file: SummaryFile = toml::from_str(&text).expect("vectors parse");
    assert!(file.summary.len() >= 2, "the vector file lost vectors");
    for v in &mut file.summary {
        let record: ShareRecord = serde_json::from_str(&v.share).expect("share json");
        let summary: ShareSummary = serde_json::from_str(&v.json).expect("summary json");
        let key = key(&v.seed);
        let share = SignedShare::sign(record, &key);
        let signed = SignedSummary::sign(summary.clone(), &key);
        let bytes = attach(&share.encode(), &signed);
        if bless() {
            v.message = hex::encode(summary_message(&summary));
            v.signature = hex::encode(&signed.signature);
            v.share_bytes = hex::encode(&bytes);
            continue;
        }
        assert_eq!(
            hex::encode(summary_message(&summary)),
            v.message,
            "{}",
            v.name
        );
        assert_eq!(hex::encode(&signed.signature), v.signature, "{}", v.name);
        assert_eq!(hex::encode(&bytes), v.share_bytes, "{}", v.name);
        let decoded = SignedShare::decode(&bytes).expect("a metadata-only share decodes");
        assert_eq!(decoded, share, "{}", v.name);
        assert_eq!(of_share_bytes(&bytes).unwrap(), Some(signed), "{}", v.name);
    }
    if bless() {
        std::fs::write(path("summary.toml"), toml::to_string(&file).unwrap()).unwrap();
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct AuditFile {
    entry: Vec<EntryVector>,
    chain: Vec<ChainVector>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryVector {
    name: String,
    seed: String,
    /// The entry, its `prev` left null: it is set to the id of entry `prev_of` before signing.
    json: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev_of: Option<String>,
    #[serde(default)]
    id: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    signature: String,
    #[serde(default)]
    encoded: String,
}

/// A chain made of the `entry` vectors named in `entries`, in that order (after `tamper`), and
/// what the chain check says of it.
#[derive(Debug, Serialize, Deserialize)]
struct ChainVector {
    name: String,
    entries: Vec<String>,
    /// `none`, or `actor_name` (the second entry's actor name changed after signing).
    #[serde(default)]
    tamper: String,
    #[serde(default)]
    expect: String,
}

#[test]
fn audit_vectors() {
    let text = std::fs::read_to_string(path("audit.toml")).expect("read vectors");
    let mut file: AuditFile = toml::from_str(&text).expect("vectors parse");
    assert!(
        file.entry.len() >= 3 && file.chain.len() >= 4,
        "the vector file lost vectors"
    );
    let mut signed = std::collections::HashMap::new();
    for v in &mut file.entry {
        let mut entry: AuditEntry = serde_json::from_str(&v.json).expect("entry json");
        if let Some(prev) = &v.prev_of {
            let p: &SignedAuditEntry = &signed[prev];
            entry.prev = Some(p.id());
        }
        let s = SignedAuditEntry::sign(entry.clone(), &key(&v.seed));
        signed.insert(v.name.clone(), s.clone());
        if bless() {
            v.id = entry.id().to_hex();
            v.message = hex::encode(signature_message(&entry.id()));
            v.signature = hex::encode(&s.signature);
            v.encoded = hex::encode(s.encode());
            continue;
        }
        assert_eq!(entry.id().to_hex(), v.id, "{}: id", v.name);
        assert_eq!(
            hex::encode(signature_message(&entry.id())),
            v.message,
            "{}",
            v.name
        );
        assert_eq!(
            hex::encode(&s.signature),
            v.signature,
            "{}: signature",
            v.name
        );
        assert_eq!(hex::encode(s.encode()), v.encoded, "{}: encoding", v.name);
        let decoded = SignedAuditEntry::decode(&hex::decode(&v.encoded).unwrap()).unwrap();
        assert_eq!(decoded, s, "{}", v.name);
        // Verifies exactly when the writer the entry names is the signer.
        let by_writer = entry.writer.0 == key(&v.seed).verifying_key().to_bytes();
        assert_eq!(decoded.verify(), by_writer, "{}: verify", v.name);
    }
    for v in &mut file.chain {
        let mut entries: Vec<SignedAuditEntry> =
            v.entries.iter().map(|n| signed[n].clone()).collect();
        if v.tamper == "actor_name" {
            entries[1].entry.actor_name = "mallory".into();
        }
        let got = match check_chain(&entries) {
            Ok(n) => format!("ok {n}"),
            Err(e) => e.to_string(),
        };
        if bless() {
            v.expect = got;
            continue;
        }
        assert_eq!(got, v.expect, "{}", v.name);
    }
    if bless() {
        std::fs::write(path("audit.toml"), toml::to_string(&file).unwrap()).unwrap();
    }
}
