//! Conformance vectors for signed tombstones: `protocol/vectors/tombstones.toml` (SPEC.md
//! §3.5). Each vector pins the signed message, the signature and the encoding; decoding the
//! encoding verifies, a tombstone checked against another session or another owner is refused.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use tapes_protocol::tombstone::{SignedTombstone, Tombstone, TombstoneError};
use tapes_protocol::{MemberId, NodeId, SessionId};

#[derive(Debug, Serialize, Deserialize)]
struct File {
    tombstone: Vec<Vector>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Vector {
    name: String,
    seed: String,
    session: String,
    head: String,
    removed_ms: i64,
    message: String,
    signature: String,
    encoded: String,
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/tombstones.toml")
}

#[test]
fn tombstone_vectors() {
    let text = std::fs::read_to_string(path()).expect("read vectors");
    let mut file: File = toml::from_str(&text).expect("vectors parse");
    let bless = std::env::var_os("TAPES_BLESS_VECTORS").is_some();
    assert!(file.tombstone.len() >= 2, "the vector file lost vectors");
    for v in &mut file.tombstone {
        let seed: [u8; 32] = hex::decode(&v.seed).expect("seed").try_into().expect("32");
        let key = SigningKey::from_bytes(&seed);
        let session: SessionId = v.session.parse().expect("session id");
        let head: NodeId = v.head.parse().expect("head");
        let signed = Tombstone::sign(&key, session, head, v.removed_ms);
        if bless {
            v.message = hex::encode(signed.tombstone.message());
            v.signature = hex::encode(signed.signature);
            v.encoded = hex::encode(signed.encode());
            continue;
        }
        assert_eq!(
            hex::encode(signed.tombstone.message()),
            v.message,
            "{}: message",
            v.name
        );
        assert_eq!(
            hex::encode(signed.signature),
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
        let decoded = SignedTombstone::decode(&hex::decode(&v.encoded).expect("hex"))
            .expect("a vector decodes");
        assert_eq!(decoded, signed, "{}: round trip", v.name);
        let owner = MemberId(key.verifying_key().to_bytes());
        decoded
            .check(&session, &owner)
            .expect("the owner's tombstone checks");
        assert!(matches!(
            decoded.check(&SessionId([0xee; 16]), &owner),
            Err(TombstoneError::OtherSession { .. })
        ));
        assert!(matches!(
            decoded.check(&session, &MemberId([0xee; 32])),
            Err(TombstoneError::NotOwner { .. })
        ));
    }
    if bless {
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let body = toml::to_string(&file).expect("serialize vectors");
        std::fs::write(path(), format!("{header}\n{body}")).expect("write vectors");
    }
}

#[test]
fn the_spec_names_the_vector_file_and_context() {
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../SPEC.md"),
    )
    .expect("read SPEC.md");
    assert!(spec.contains("protocol/vectors/tombstones.toml"));
    assert!(spec.contains(tapes_protocol::tombstone::TOMBSTONE_CONTEXT));
}
