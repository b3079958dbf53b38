//! Conformance vectors for keyed batches (SPEC.md §15.3): `protocol/vectors/batch_key.toml`
//! pins the key id of a wrapped content key and the ciphertext of a batch byte for byte, so
//! another implementation seals and opens exactly as this one does; the contexts SPEC.md
//! names are checked against the code.

use serde::Deserialize;
use tapes_protocol::batch_key::{ContentKey, KeyId, BATCH_AAD_PREFIX, KEY_ID_CONTEXT};
use tapes_protocol::{SessionId, TeamId};

#[derive(Deserialize)]
struct File {
    batch: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    key: String,
    wrapped: String,
    key_id: String,
    team: String,
    session: String,
    index: u64,
    nonce: String,
    plaintext: String,
    ciphertext: String,
}

fn bytes<const N: usize>(hex_text: &str) -> [u8; N] {
    hex::decode(hex_text)
        .expect("hex")
        .try_into()
        .expect("length")
}

#[test]
fn keyed_batches_match_the_vectors() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/batch_key.toml");
    let file: File = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(!file.batch.is_empty());
    for v in &file.batch {
        let wrapped = hex::decode(&v.wrapped).unwrap();
        let key = ContentKey::new(&hex::decode(&v.key).unwrap(), &wrapped).unwrap();
        assert_eq!(
            hex::encode(KeyId::of_wrapped(&wrapped).0),
            v.key_id,
            "{}",
            v.name
        );
        assert_eq!(key.id().0, bytes::<16>(&v.key_id), "{}", v.name);
        let (team, session) = (TeamId(bytes(&v.team)), SessionId(bytes(&v.session)));
        let nonce = bytes::<12>(&v.nonce);
        let plaintext = hex::decode(&v.plaintext).unwrap();
        let sealed = key.seal(&team, &session, v.index, &nonce, &plaintext);
        assert_eq!(hex::encode(&sealed), v.ciphertext, "{}: ciphertext", v.name);
        let opened = key.open(&team, &session, v.index, &nonce, &sealed).unwrap();
        assert_eq!(opened, plaintext, "{}", v.name);
        assert!(key
            .open(&team, &session, v.index + 1, &nonce, &sealed)
            .is_err());
    }
}

#[test]
fn spec_names_the_batch_contexts() {
    let spec = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../SPEC.md"),
    )
    .unwrap();
    let prefix = std::str::from_utf8(BATCH_AAD_PREFIX).unwrap();
    for context in [KEY_ID_CONTEXT, prefix] {
        assert!(
            spec.contains(&format!("\"{context}\"")),
            "SPEC.md does not name {context:?}"
        );
    }
    assert!(spec.contains("protocol/vectors/batch_key.toml"));
}
