//! Conformance vectors for signed records: `protocol/vectors/signed.toml` (SPEC.md §4.2, §10,
//! §11.1, §15.4), checked byte for byte, and the context strings SPEC.md names checked against
//! the code.
//!
//! - `record` vectors: a session record (as JSON) and its encoding; encode must give exactly
//!   those bytes and decode must read them back.
//! - `ref` vectors: a ref update signed with a fixed key: the message hash and the signature.
//! - `share` vectors: a share record signed with a fixed key: the message hash, the signature
//!   and the encoded `SignedShare`.
//! - `entry` vectors: a signed session entry and what `check_entry` says of it (`ok` or the
//!   error's text).
//!
//! To add a vector, write its inputs and run once with `TAPES_BLESS_VECTORS=1` to fill in the
//! expected fields; review the diff: a changed existing vector is a breaking format change.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use tapes_protocol::bundle::SessionEntry;
use tapes_protocol::record::SessionRecord;
use tapes_protocol::signed::{
    check_entry, ref_update_message, share_message, RefSignature, ShareRecord, SignedShare,
    REF_UPDATE_CONTEXT, SHARE_SIGNATURE_CONTEXT,
};
use tapes_protocol::{MemberId, NodeId, SessionId};

#[derive(Debug, Serialize, Deserialize)]
struct File {
    record: Vec<RecordVector>,
    #[serde(rename = "ref")]
    refs: Vec<RefVector>,
    share: Vec<ShareVector>,
    entry: Vec<EntryVector>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordVector {
    name: String,
    json: String,
    #[serde(default)]
    encoded: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefVector {
    name: String,
    /// The signing key's 32-byte seed.
    seed: String,
    session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<String>,
    /// The name of a `record` vector.
    record: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    signature: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ShareVector {
    name: String,
    seed: String,
    json: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    signature: String,
    #[serde(default)]
    encoded: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryVector {
    name: String,
    /// Who signs: the key seed.
    seed: String,
    session: String,
    record: String,
    /// `signature` as signed, `truncated` (63 bytes) or `flipped` (one bit changed).
    #[serde(default = "as_signed")]
    tamper: String,
    #[serde(default)]
    expect: String,
}

fn as_signed() -> String {
    "signature".into()
}

fn key(seed: &str) -> SigningKey {
    let bytes: [u8; 32] = hex::decode(seed)
        .expect("seed hex")
        .try_into()
        .expect("32-byte seed");
    SigningKey::from_bytes(&bytes)
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/signed.toml")
}

fn record_named(file: &[RecordVector], name: &str) -> SessionRecord {
    let v = file
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no record vector {name:?}"));
    serde_json::from_str(&v.json).unwrap_or_else(|e| panic!("{name}: record json: {e}"))
}

#[test]
fn signed_vectors() {
    let text = std::fs::read_to_string(path()).expect("read vectors");
    let mut file: File = toml::from_str(&text).expect("vectors parse");
    let bless = std::env::var_os("TAPES_BLESS_VECTORS").is_some();
    assert!(
        file.record.len() >= 2
            && file.refs.len() >= 2
            && file.share.len() >= 2
            && file.entry.len() >= 4,
        "the vector file lost vectors"
    );
    for v in &mut file.record {
        let record: SessionRecord = serde_json::from_str(&v.json).expect("record json");
        let bytes = record.encode();
        if bless {
            v.encoded = hex::encode(&bytes);
            continue;
        }
        assert_eq!(hex::encode(&bytes), v.encoded, "{}: encoding", v.name);
        let decoded = SessionRecord::decode(&bytes).expect("decodes");
        assert_eq!(decoded, record, "{}: decode round trip", v.name);
    }
    let records = std::mem::take(&mut file.record);
    for v in &mut file.refs {
        let record = record_named(&records, &v.record);
        let session = SessionId::from_slice(&hex::decode(&v.session).expect("session hex"))
            .expect("32 bytes");
        let expected = v
            .expected
            .as_deref()
            .map(|h| NodeId::from_slice(&hex::decode(h).expect("expected hex")).expect("32 bytes"));
        let message = ref_update_message(&session, expected.as_ref(), &record);
        let sig = RefSignature::sign(&key(&v.seed), &session, expected.as_ref(), &record);
        if bless {
            v.message = hex::encode(message);
            v.signature = hex::encode(sig.signature);
            continue;
        }
        assert_eq!(hex::encode(message), v.message, "{}: message", v.name);
        assert_eq!(
            hex::encode(sig.signature),
            v.signature,
            "{}: signature",
            v.name
        );
        assert!(
            sig.verify(&session, expected.as_ref(), &record),
            "{}",
            v.name
        );
        assert!(
            !sig.verify(&session, Some(&NodeId([9; 32])), &record),
            "{}: a signature for another expected head verifies",
            v.name
        );
    }
    for v in &mut file.share {
        let record: ShareRecord = serde_json::from_str(&v.json).expect("share json");
        let signed = SignedShare::sign(record.clone(), &key(&v.seed));
        if bless {
            v.message = hex::encode(share_message(&record));
            v.signature = hex::encode(&signed.signature);
            v.encoded = hex::encode(signed.encode());
            continue;
        }
        assert_eq!(
            hex::encode(share_message(&record)),
            v.message,
            "{}: message",
            v.name
        );
        assert_eq!(
            hex::encode(&signed.signature),
            v.signature,
            "{}: signature",
            v.name
        );
        assert_eq!(
            hex::encode(signed.encode()),
            v.encoded,
            "{}: encoding",
            v.name
        );
        let bytes = hex::decode(&v.encoded).expect("hex");
        let stored = SignedShare::decode_stored(&bytes).expect("decodes");
        assert_eq!(stored.record, record, "{}", v.name);
        // Verifies exactly when the sharer named in the record is the signer; `decode` (what
        // every path that stores a received share calls) refuses the others.
        let by_sharer = record.sharer == MemberId(key(&v.seed).verifying_key().to_bytes());
        assert_eq!(stored.verify(), by_sharer, "{}: verify", v.name);
        assert_eq!(
            SignedShare::decode(&bytes).is_ok(),
            by_sharer,
            "{}: decode",
            v.name
        );
    }
    for v in &mut file.entry {
        let record = record_named(&records, &v.record);
        let session = SessionId::from_slice(&hex::decode(&v.session).expect("session hex"))
            .expect("32 bytes");
        let signer = key(&v.seed);
        let mut signature = RefSignature::sign(&signer, &session, None, &record)
            .signature
            .to_vec();
        match v.tamper.as_str() {
            "signature" => {}
            "truncated" => {
                signature.pop();
            }
            "flipped" => signature[0] ^= 1,
            other => panic!("{}: unknown tamper {other:?}", v.name),
        }
        let entry = SessionEntry {
            id: session,
            record: record.encode(),
            signer: MemberId(signer.verifying_key().to_bytes()),
            signature,
        };
        let got = match check_entry(&entry) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        if bless {
            v.expect = got;
            continue;
        }
        assert_eq!(got, v.expect, "{}: check_entry", v.name);
    }
    file.record = records;
    if bless {
        std::fs::write(path(), toml::to_string(&file).expect("toml")).expect("write vectors");
    }
}

/// SPEC.md names the context strings; they must be the ones the code signs with.
#[test]
fn spec_names_the_signing_contexts() {
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../SPEC.md"),
    )
    .expect("read SPEC.md");
    for context in [REF_UPDATE_CONTEXT, SHARE_SIGNATURE_CONTEXT] {
        assert!(
            spec.contains(&format!("\"{context}\"")),
            "SPEC.md does not name the context {context:?}"
        );
    }
    assert!(
        spec.contains("protocol/vectors/signed.toml"),
        "SPEC.md does not point at the signed-record vectors"
    );
}
