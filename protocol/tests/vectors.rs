//! Conformance vectors: `protocol/vectors/*.toml`, checked byte for byte.
//!
//! `node_ids.toml`: each `success` vector gives a node body, its canonical encoding (hex) and
//! its id; the encoder must produce exactly those bytes, the decoder must read them back to the
//! same body, and BLAKE3 must give the id. Each `failure` vector gives bytes the decoder must
//! refuse, and the error it must name. Another implementation of tapes can run the same files.
//!
//! To add a vector, write its `body` (or its `canonical` bytes for a failure) and run with
//! `TAPES_BLESS_VECTORS=1` once to fill in the expected fields; review the diff before
//! committing: a changed existing vector is a breaking format change.

use serde::{Deserialize, Serialize};
use tapes_protocol::canonical::{decode_body, encode_body, node_id_of_bytes};
use tapes_protocol::NodeBody;

#[derive(Debug, Serialize, Deserialize)]
struct File {
    vector: Vec<Vector>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Vector {
    name: String,
    expect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<NodeBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canonical: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// For failures: a substring of the decoder's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/node_ids.toml")
}

#[test]
fn node_id_vectors() {
    let text = std::fs::read_to_string(path()).expect("read vectors");
    let mut file: File = toml::from_str(&text).expect("vectors parse");
    let bless = std::env::var_os("TAPES_BLESS_VECTORS").is_some();
    assert!(file.vector.len() >= 10, "the vector file lost vectors");
    for v in &mut file.vector {
        match v.expect.as_str() {
            "success" => {
                let body = v
                    .body
                    .as_ref()
                    .unwrap_or_else(|| panic!("{}: success needs a body", v.name));
                let bytes = encode_body(body);
                let id = node_id_of_bytes(&bytes).to_hex();
                if bless {
                    v.canonical = Some(hex::encode(&bytes));
                    v.id = Some(id);
                    continue;
                }
                assert_eq!(
                    Some(hex::encode(&bytes)),
                    v.canonical,
                    "{}: canonical bytes",
                    v.name
                );
                assert_eq!(Some(id), v.id, "{}: id", v.name);
                let decoded =
                    decode_body(&bytes).unwrap_or_else(|e| panic!("{}: decode: {e}", v.name));
                assert_eq!(
                    encode_body(&decoded),
                    bytes,
                    "{}: decode/encode round trip",
                    v.name
                );
            }
            "failure" => {
                let raw = v
                    .canonical
                    .as_deref()
                    .unwrap_or_else(|| panic!("{}: failure needs bytes", v.name));
                let bytes =
                    hex::decode(raw).unwrap_or_else(|_| panic!("{}: canonical is not hex", v.name));
                let err = decode_body(&bytes)
                    .err()
                    .unwrap_or_else(|| panic!("{}: decoded but must fail", v.name));
                if bless && v.error.is_none() {
                    v.error = Some(err.to_string());
                    continue;
                }
                let want = v.error.as_deref().unwrap_or_default();
                assert!(
                    err.to_string().contains(want),
                    "{}: error `{err}` does not name `{want}`",
                    v.name
                );
            }
            other => panic!("{}: expect must be success or failure, not {other}", v.name),
        }
    }
    if bless {
        std::fs::write(path(), toml::to_string(&file).expect("serialize")).expect("write vectors");
    }
}
