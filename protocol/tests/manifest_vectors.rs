//! Conformance vectors for team manifests: `protocol/vectors/manifests.toml` (SPEC.md §9.1–9.2),
//! checked byte for byte.
//!
//! Each vector names the ed25519 secret seeds (hex) that sign it, in order, and may name an
//! earlier `prev_vector` it follows (its version − 1).
//!
//! - `success`: the manifest's fields. Its canonical encoding (hex), manifest id, team id, each
//!   signature and the whole signed encoding must come out exactly as given; the signed bytes must
//!   decode back to the same manifest; it must verify as a genesis (version 0) or as a successor
//!   of its `prev_vector`, and every chain of success vectors must apply from its genesis.
//! - `failure`: `signed` holds signed-manifest bytes that [`SignedManifest::decode`] must refuse,
//!   or — if they decode — that [`verify_successor`] (with a `prev_vector`) or [`verify_genesis`]
//!   must refuse; the refusal's message must contain `error`. When the vector also gives the
//!   manifest and signers, the bytes are that manifest signed and then damaged by the listed
//!   edits (`find`/`replace` hex, `xor_at = [offset, mask]`, `truncate`, `append` hex; negative
//!   offsets and truncations count from the end), and must still be exactly `signed`.
//!
//! Ids and signatures are recomputed here from the SPEC's definitions (BLAKE3 derive-key and
//! ed25519 over `prefix || id`), not only through the library, so the file pins the spec.
//!
//! To add a vector, write its manifest, signers and (for a failure) its edits and `error`, then
//! run once with `TAPES_BLESS_VECTORS=1` to fill in the expected fields (also a successor's
//! missing `team` and `prev`, from its `prev_vector`, and a failure's `signed`, from its manifest
//! and edits); review the diff: a changed existing vector is a breaking format change.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use tapes_protocol::manifest::{
    verify_genesis, verify_successor, Manifest, ManifestError, Member, SignedManifest, TeamRole,
    SIGNATURE_PREFIX,
};
use tapes_protocol::team_chain::{Applied, TeamChain};
use tapes_protocol::{ManifestId, MemberId, TeamId};

const ID_CONTEXT: &str = "tapes 2026-11 team manifest id v1";
const SIGNATURE_MESSAGE_PREFIX: &[u8] = b"tapes team manifest signature v1\0";

#[derive(Debug, Serialize, Deserialize)]
struct File {
    vector: Vec<Vector>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Vector {
    name: String,
    expect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev_vector: Option<String>,
    /// ed25519 secret seeds, hex.
    #[serde(default)]
    signers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    find: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xor_at: Option<(i64, u8)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    truncate: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    append: Option<String>,
    /// For failures: a substring of the refusal's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The manifest's canonical bytes, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canonical: Option<String>,
    /// The manifest id, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// The team id, hex (the id of version 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    team_id: Option<String>,
    /// One hex signature per signer, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signatures: Option<Vec<String>>,
    /// The signed manifest as stored and sent, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest: Option<ManifestFields>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<String>,
    name: String,
    created_ms: i64,
    epoch: u64,
    epoch_recipient: String,
    /// Opaque here (age ciphertext in practice), hex.
    keyring: String,
    members: Vec<MemberFields>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemberFields {
    id: String,
    age_recipient: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    role: String,
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/manifests.toml")
}

fn unhex(what: &str, text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_else(|_| panic!("{what}: `{text}` is not hex"))
}

fn id32(what: &str, text: &str) -> [u8; 32] {
    <[u8; 32]>::try_from(unhex(what, text)).unwrap_or_else(|_| panic!("{what}: not 32 bytes"))
}

fn key(what: &str, seed: &str) -> SigningKey {
    SigningKey::from_bytes(&id32(what, seed))
}

/// The manifest a vector describes, members in the order written (not sorted: a vector may be
/// about unsorted members).
fn manifest_of(name: &str, f: &ManifestFields) -> Manifest {
    let members = f
        .members
        .iter()
        .map(|m| Member {
            id: MemberId(id32(name, &m.id)),
            age_recipient: m.age_recipient.clone(),
            name: m.name.clone(),
            email: m.email.clone(),
            role: TeamRole::parse(&m.role).unwrap_or_else(|| panic!("{name}: role {}", m.role)),
        })
        .collect();
    Manifest {
        team: f.team.as_deref().map(|t| TeamId(id32(name, t))),
        version: f.version,
        prev: f.prev.as_deref().map(|p| ManifestId(id32(name, p))),
        name: f.name.clone(),
        members,
        created_ms: f.created_ms,
        epoch: f.epoch,
        epoch_recipient: f.epoch_recipient.clone(),
        keyring: unhex(name, &f.keyring),
    }
}

/// The manifest id by SPEC.md §9.1, computed independently of the library.
fn spec_id(canonical: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(ID_CONTEXT);
    h.update(canonical);
    *h.finalize().as_bytes()
}

fn signed_of(v: &Vector, manifest: Manifest) -> SignedManifest {
    let signatures = v
        .signers
        .iter()
        .map(|seed| manifest.sign(&key(&v.name, seed)))
        .collect();
    SignedManifest {
        manifest,
        signatures,
    }
}

fn at(len: usize, offset: i64) -> usize {
    if offset < 0 {
        len.checked_sub(offset.unsigned_abs() as usize)
            .expect("offset before the start")
    } else {
        offset as usize
    }
}

/// Applies a failure vector's edits to signed bytes.
fn damage(v: &Vector, mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(find) = &v.find {
        let find = unhex(&v.name, find);
        let replace = unhex(
            &v.name,
            v.replace
                .as_deref()
                .unwrap_or_else(|| panic!("{}: find without replace", v.name)),
        );
        let pos = bytes
            .windows(find.len())
            .position(|w| w == find.as_slice())
            .unwrap_or_else(|| panic!("{}: `find` bytes do not occur", v.name));
        bytes.splice(pos..pos + find.len(), replace);
    }
    if let Some((offset, mask)) = v.xor_at {
        let i = at(bytes.len(), offset);
        bytes[i] ^= mask;
    }
    if let Some(n) = v.truncate {
        let keep = at(bytes.len(), n);
        bytes.truncate(keep);
    }
    if let Some(extra) = &v.append {
        bytes.extend(unhex(&v.name, extra));
    }
    bytes
}

/// Fills a successor's `team` and `prev` from its `prev_vector` when absent (bless only).
fn fill_links(v: &mut Vector, known: &BTreeMap<String, SignedManifest>) {
    let Some(prev_name) = v.prev_vector.clone() else {
        return;
    };
    let prev = known
        .get(&prev_name)
        .unwrap_or_else(|| panic!("{}: no earlier success vector `{prev_name}`", v.name));
    if let Some(m) = v.manifest.as_mut() {
        if m.version > 0 {
            m.team
                .get_or_insert_with(|| prev.manifest.team_id().to_hex());
            m.prev.get_or_insert_with(|| prev.id().to_hex());
        }
    }
}

fn check_success(
    v: &mut Vector,
    bless: bool,
    known: &BTreeMap<String, SignedManifest>,
) -> SignedManifest {
    let name = v.name.clone();
    let fields = v
        .manifest
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: success needs a manifest"));
    let manifest = manifest_of(&name, fields);
    assert!(!v.signers.is_empty(), "{name}: a success vector is signed");
    let canonical = manifest.encode();
    let id = manifest.id();
    assert_eq!(
        id.0,
        spec_id(&canonical),
        "{name}: the library's id is not SPEC's BLAKE3 derive-key"
    );
    let signed = signed_of(v, manifest.clone());
    let signatures: Vec<String> = signed
        .signatures
        .iter()
        .map(|s| hex::encode(s.signature))
        .collect();
    let team_id = manifest.team_id().to_hex();
    let encoded = signed.encode();
    if bless {
        v.canonical = Some(hex::encode(&canonical));
        v.id = Some(id.to_hex());
        v.team_id = Some(team_id.clone());
        v.signatures = Some(signatures.clone());
        v.signed = Some(hex::encode(&encoded));
    }
    assert_eq!(
        v.canonical.as_deref(),
        Some(hex::encode(&canonical).as_str()),
        "{name}: canonical bytes"
    );
    assert_eq!(
        v.id.as_deref(),
        Some(id.to_hex().as_str()),
        "{name}: manifest id"
    );
    assert_eq!(
        v.team_id.as_deref(),
        Some(team_id.as_str()),
        "{name}: team id"
    );
    assert_eq!(
        v.signatures.as_ref(),
        Some(&signatures),
        "{name}: signatures"
    );
    assert_eq!(
        v.signed.as_deref(),
        Some(hex::encode(&encoded).as_str()),
        "{name}: signed encoding"
    );

    // Each signature is ed25519 by the seed's public key over SPEC's message.
    let mut message = SIGNATURE_MESSAGE_PREFIX.to_vec();
    assert_eq!(SIGNATURE_PREFIX, SIGNATURE_MESSAGE_PREFIX);
    message.extend_from_slice(&id.0);
    for (seed, s) in v.signers.iter().zip(&signed.signatures) {
        let public = key(&name, seed).verifying_key();
        assert_eq!(
            s.signer.0,
            public.to_bytes(),
            "{name}: signer id is the public key"
        );
        VerifyingKey::from_bytes(&s.signer.0)
            .unwrap()
            .verify_strict(&message, &Signature::from_bytes(&s.signature))
            .unwrap_or_else(|e| {
                panic!("{name}: signature does not verify over SPEC's message: {e}")
            });
    }
    // The bytes decode back to exactly this.
    let decoded =
        SignedManifest::decode(&encoded).unwrap_or_else(|e| panic!("{name}: decode: {e}"));
    assert_eq!(decoded, signed, "{name}: signed decode");
    assert_eq!(
        Manifest::decode(&canonical).unwrap(),
        manifest,
        "{name}: manifest decode"
    );
    // And it verifies where it stands.
    match (&v.prev_vector, manifest.version) {
        (None, 0) => {
            verify_genesis(&signed).unwrap_or_else(|e| panic!("{name}: genesis refused: {e}"))
        }
        (Some(p), _) => {
            let prev = known
                .get(p)
                .unwrap_or_else(|| panic!("{name}: no earlier success vector `{p}`"));
            verify_successor(prev, &signed)
                .unwrap_or_else(|e| panic!("{name}: refused after `{p}`: {e}"));
            assert_eq!(
                manifest.team_id(),
                prev.manifest.team_id(),
                "{name}: team id carries over"
            );
        }
        (None, version) => panic!("{name}: version {version} needs a prev_vector"),
    }
    signed
}

/// Checks a failure vector; returns the refusal's message.
fn check_failure(
    v: &mut Vector,
    bless: bool,
    known: &BTreeMap<String, SignedManifest>,
    links: &BTreeMap<String, Option<String>>,
) -> String {
    let name = v.name.clone();
    let rebuilt = v
        .manifest
        .as_ref()
        .map(|f| damage(v, signed_of(v, manifest_of(&name, f)).encode()));
    if let (true, Some(rebuilt)) = (bless, &rebuilt) {
        v.signed = Some(hex::encode(rebuilt));
    }
    let raw = v
        .signed
        .as_deref()
        .unwrap_or_else(|| panic!("{name}: failure needs `signed` bytes"));
    let bytes = unhex(&name, raw);
    if let Some(rebuilt) = rebuilt {
        assert_eq!(
            hex::encode(rebuilt),
            raw,
            "{name}: the manifest and edits no longer give these bytes"
        );
    }
    let refusal: ManifestError = match SignedManifest::decode(&bytes) {
        Err(e) => e,
        Ok(decoded) => {
            let verdict = match &v.prev_vector {
                Some(p) => {
                    let prev = known
                        .get(p)
                        .unwrap_or_else(|| panic!("{name}: no earlier success vector `{p}`"));
                    let verdict = verify_successor(prev, &decoded);
                    // The chain state machine refuses it too, on top of the prev vector's chain.
                    let mut chain = chain_to(p, known, links);
                    assert!(
                        chain.apply(decoded.clone()).is_err(),
                        "{name}: the team chain accepted it"
                    );
                    verdict
                }
                None => verify_genesis(&decoded),
            };
            verdict
                .err()
                .unwrap_or_else(|| panic!("{name}: decoded and verified, but must be refused"))
        }
    };
    let text = refusal.to_string();
    if bless && v.error.is_none() {
        v.error = Some(text.clone());
    }
    let want = v
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("{name}: failure needs an `error`"));
    assert!(
        text.contains(want),
        "{name}: error `{text}` does not name `{want}`"
    );
    text
}

/// The chain of success vectors ending at `last`, applied from its genesis.
fn chain_to(
    last: &str,
    known: &BTreeMap<String, SignedManifest>,
    links: &BTreeMap<String, Option<String>>,
) -> TeamChain {
    let mut names = vec![last.to_string()];
    while let Some(Some(prev)) = links.get(names.last().unwrap()) {
        names.push(prev.clone());
    }
    names.reverse();
    let mut versions = names.iter().map(|n| known[n].clone());
    let mut chain =
        TeamChain::new(versions.next().unwrap()).unwrap_or_else(|e| panic!("{last}: genesis: {e}"));
    for v in versions {
        assert_eq!(
            chain
                .apply(v)
                .unwrap_or_else(|e| panic!("{last}: chain: {e}")),
            Applied::Appended
        );
    }
    chain
}

#[test]
fn manifest_vectors() {
    let text = std::fs::read_to_string(path()).expect("read vectors");
    let mut file: File = toml::from_str(&text).expect("vectors parse");
    let bless = std::env::var_os("TAPES_BLESS_VECTORS").is_some();
    let successes = file.vector.iter().filter(|v| v.expect == "success").count();
    let failures = file.vector.iter().filter(|v| v.expect == "failure").count();
    assert!(
        successes >= 5 && failures >= 20,
        "the vector file lost vectors ({successes} / {failures})"
    );
    let mut names = std::collections::BTreeSet::new();
    for v in &file.vector {
        assert!(
            names.insert(v.name.clone()),
            "two vectors are named `{}`",
            v.name
        );
    }
    // Vector name → its prev_vector, for walking chains back to their genesis.
    let links: BTreeMap<String, Option<String>> = file
        .vector
        .iter()
        .map(|v| (v.name.clone(), v.prev_vector.clone()))
        .collect();

    let mut known: BTreeMap<String, SignedManifest> = BTreeMap::new();
    let mut refusals = Vec::new();
    for v in &mut file.vector {
        if bless {
            fill_links(v, &known);
        }
        match v.expect.as_str() {
            "success" => {
                let signed = check_success(v, bless, &known);
                known.insert(v.name.clone(), signed);
            }
            "failure" => refusals.push(check_failure(v, bless, &known, &links)),
            other => panic!("{}: expect must be success or failure, not {other}", v.name),
        }
    }
    // Every chain of success vectors applies from its genesis.
    for name in known.keys() {
        let chain = chain_to(name, &known, &links);
        assert_eq!(chain.head(), &known[name]);
    }
    // The failures cover every kind of refusal SPEC §9.2 names.
    for kind in [
        "does not verify",
        "carries no signature",
        "does not decode",
        "not sorted",
        "without an owner",
        "not a member of version",
        "a plain member of version",
        "unknown previous manifest",
        "belongs to team",
        "only an owner of version",
        "without rotating the team key",
        "key epoch goes back",
    ] {
        assert!(
            refusals.iter().any(|r| r.contains(kind)),
            "no failure vector is refused for `{kind}`"
        );
    }
    if bless {
        std::fs::write(path(), toml::to_string(&file).expect("serialize")).expect("write vectors");
    }
}
