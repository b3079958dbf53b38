//! Fuzz entry points for the protocol's decoders (SPEC.md §7 threat model: everything read
//! from a peer, a relay or a file is hostile).
//!
//! One function per decoder family, each taking arbitrary bytes and never panicking: the
//! `fuzz/` crate's libFuzzer targets call these, and `tests/it/fuzz_corpus.rs` replays every
//! corpus file through them under `cargo test`. The formats are those of SPEC.md §2.2–§2.5
//! (node bodies and stored objects), §9.1 and §9.4 (manifests, invites, joins), §12.1–§12.2
//! (bundles), §14 (reconciliation messages), §15.1–§15.2 (`tapes/sync/3` frames), §3.5
//! (tombstones), §11.4 (share summaries) and §18 (audit entries).
//!
//! Besides "does not panic", each checks what a strict decoder promises: whatever decodes
//! encodes back to the same value (and, for the canonical formats, the same bytes).

use crate::bundle::{self, kind, Header, SessionEntry, SignedRefs};
use crate::canonical;
use crate::join::{self, Invite, JoinRequest, JoinResponse};
use crate::manifest::{Manifest, SignedManifest};
use crate::reconcile::{Message, Params, Reconciler, SortedIds};
use crate::sync::{self, Request, Response};
use crate::team_chain::TeamChain;
use crate::{NodeId, StoredObject};
use std::sync::OnceLock;

/// `tapes/sync/3` (SPEC.md §15.1): `data` is a byte stream of frames as a peer would send
/// them; each frame is read the way `tapes::peer` reads it (head, limit, body) and decoded as
/// a request, a response and a sealed batch's plaintext.
pub fn sync_frames(data: &[u8]) {
    let mut rest = data;
    while rest.len() >= sync::FRAME_HEAD_LEN {
        let head = [rest[0], rest[1], rest[2], rest[3]];
        let Ok(len) = sync::frame_len(head) else {
            return;
        };
        let body = &rest[sync::FRAME_HEAD_LEN..];
        // A short stream ends the read; the body is whatever arrived.
        let body = &body[..len.min(body.len())];
        sync_message(body);
        rest = &rest[sync::FRAME_HEAD_LEN + body.len()..];
    }
    sync_message(rest);
}

/// One frame payload of `tapes/sync/3`, decoded as every message type the peers read.
pub fn sync_message(body: &[u8]) {
    if let Ok(request) = sync::decode_payload::<Request>(body, "request") {
        let frame = sync::encode_frame(&request);
        let back: Request = sync::decode_payload(&frame[sync::FRAME_HEAD_LEN..], "request")
            .expect("a request re-encodes to a decodable frame");
        assert_eq!(back, request);
        match &request {
            Request::Reconcile { first } => reconcile_message(first),
            Request::Join { request } => join_message(request),
            Request::Register { manifests } | Request::Manifests { manifests, .. } => {
                manifest_chain(manifests)
            }
            _ => {}
        }
    }
    if let Ok(response) = sync::decode_payload::<Response>(body, "response") {
        let frame = sync::encode_frame(&response);
        let back: Response = sync::decode_payload(&frame[sync::FRAME_HEAD_LEN..], "response")
            .expect("a response re-encodes to a decodable frame");
        assert_eq!(back, response);
        match &response {
            Response::Reconcile { message, .. } => reconcile_message(message),
            Response::Join(bytes) => join_message(bytes),
            Response::Manifest { manifest, .. } => signed_manifest(manifest),
            Response::Objects(crate::sync::Objects::Plain(objects)) => {
                for object in objects {
                    stored_object(object);
                }
            }
            _ => {}
        }
    }
    if let Ok(batch) = sync::decode_batch(body) {
        assert_eq!(sync::decode_batch(&sync::encode_batch(&batch)), Ok(batch));
    }
}

/// A reconciliation message (SPEC.md §14): decoded strictly, re-encoded to the same bytes,
/// then answered by a reconciler over a fixed set and the exchange played out to its end.
pub fn reconcile_message(data: &[u8]) {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    assert_eq!(
        message.encode(),
        data,
        "a decoded message re-encodes as read"
    );
    assert_eq!(message.encoded_len(), data.len());
    let params = Params {
        split: 4,
        leaf: 4,
        max_rounds: 32,
    };
    // Ours answers the hostile message; theirs is an honest peer continuing the exchange.
    static SETS: OnceLock<[SortedIds; 2]> = OnceLock::new();
    let [a, b] = SETS.get_or_init(|| [ids(48, 1), ids(40, 2)]);
    let mut ours = Reconciler::with_params(a, params);
    let mut theirs = Reconciler::with_params(b, params);
    let mut incoming = message;
    for round in 0.. {
        let side = if round % 2 == 0 {
            &mut ours
        } else {
            &mut theirs
        };
        let Ok(step) = side.respond(&incoming) else {
            return;
        };
        match step.reply {
            Some(reply) => {
                let bytes = reply.encode();
                incoming = Message::decode(&bytes).expect("our own reply decodes");
            }
            None => return,
        }
    }
}

/// `n` ids derived from `salt`, spread over the id space.
fn ids(n: u32, salt: u8) -> SortedIds {
    SortedIds::new(
        (0..n)
            .map(|i| {
                let mut h = blake3::Hasher::new();
                h.update(&[salt]);
                h.update(&i.to_le_bytes());
                NodeId(*h.finalize().as_bytes())
            })
            .collect(),
    )
}

/// A bundle held in memory (SPEC.md §12.1): parsed as read, then again with the trailer's
/// checksum recomputed, so mutations get past the checksum to the frames behind it; every
/// frame's payload is decoded by its kind.
pub fn bundle_bytes(data: &[u8]) {
    bundle_parsed(data);
    if data.len() > 32 {
        let mut fixed = data.to_vec();
        let end = fixed.len() - 32;
        let sum = bundle::checksum_of(&fixed[..end]);
        fixed[end..].copy_from_slice(&sum);
        bundle_parsed(&fixed);
    }
    // The prelude and frame heads as the incremental reader sees them.
    if let Some(fixed) = data.get(..bundle::PRELUDE_LEN) {
        let mut prelude = [0u8; bundle::PRELUDE_LEN];
        prelude.copy_from_slice(fixed);
        let _ = bundle::decode_prelude(&prelude);
    }
    for head in data.chunks_exact(bundle::FRAME_HEAD_LEN) {
        let _ = bundle::decode_frame_head(head[0], [head[1], head[2], head[3], head[4]], 0);
    }
    let _ = bundle::split_frames(data);
}

fn bundle_parsed(data: &[u8]) {
    let Ok((header, frames)) = bundle::parse(data) else {
        return;
    };
    assert_eq!(Header::decode(&header.encode()), Ok(header.clone()));
    let header_len = match bundle::decode_prelude(
        data[..bundle::PRELUDE_LEN]
            .try_into()
            .expect("parse checked the prelude"),
    ) {
        Ok(len) => len,
        Err(e) => panic!("parse accepted a prelude decode_prelude refuses: {e}"),
    };
    let header_bytes = &data[bundle::PRELUDE_LEN..bundle::PRELUDE_LEN + header_len];
    for (k, payload) in frames {
        bundle_frame(k, payload, &header, header_bytes);
    }
}

/// One top-level bundle frame's payload, decoded as its kind says.
pub fn bundle_frame(k: u8, payload: &[u8], header: &Header, header_bytes: &[u8]) {
    match k {
        kind::TEAM => signed_manifest(payload),
        kind::OBJECT => {
            if let Ok((id, object)) = bundle::decode_object(payload) {
                let _ = StoredObject::verify(&id, object);
                stored_object(object);
            }
        }
        kind::SESSION => {
            if let Ok(entry) = SessionEntry::decode(payload) {
                assert_eq!(SessionEntry::decode(&entry.encode()), Ok(entry));
            }
        }
        kind::REFS => {
            if let Ok(refs) = SignedRefs::decode(payload) {
                let _ = refs.verify(&header.creator, header_bytes);
                assert_eq!(SignedRefs::decode(&refs.encode()), Ok(refs));
            }
        }
        // A sealed frame's plaintext needs the team's key: `tapes::fuzz_targets` opens it.
        _ => {}
    }
}

/// A stored object (SPEC.md §2.5) and the canonical body inside it (§2.2): a body that decodes
/// re-encodes to the same bytes, so it has exactly one id.
pub fn stored_object(data: &[u8]) {
    if let Ok(node) = StoredObject::decode(data) {
        let again = StoredObject::encode(&node);
        assert_eq!(StoredObject::decode(&again.bytes).as_ref(), Ok(&node));
        assert!(StoredObject::verify(&node.id(), data).is_ok());
    }
    let _ = StoredObject::meta_of(data);
    let _ = StoredObject::parent_of(data);
    node_body(data);
    if data.len() > 5 {
        node_body(&data[5..]);
    }
}

/// A canonical node body on its own (SPEC.md §2.2).
pub fn node_body(data: &[u8]) {
    if let Ok(body) = canonical::decode_body(data) {
        assert_eq!(canonical::encode_body(&body), data, "the decoder is strict");
    }
}

/// A team manifest (SPEC.md §9.1), bare or signed.
pub fn manifest_bytes(data: &[u8]) {
    if let Ok(manifest) = Manifest::decode(data) {
        assert_eq!(manifest.encode(), data, "the manifest decoder is strict");
        let _ = manifest.id();
    }
    signed_manifest(data);
}

fn signed_manifest(data: &[u8]) {
    if let Ok(signed) = SignedManifest::decode(data) {
        assert_eq!(
            SignedManifest::decode(&signed.encode()).as_ref(),
            Ok(&signed)
        );
        let _ = TeamChain::new(signed);
    }
}

/// A chain of signed manifests as a relay registration or a join answer carries it (SPEC.md
/// §9.3): every version decoded, then applied in order to a chain.
pub fn manifest_chain(manifests: &[Vec<u8>]) {
    let mut chain: Option<TeamChain> = None;
    for bytes in manifests {
        let Ok(signed) = SignedManifest::decode(bytes) else {
            return;
        };
        match chain.as_mut() {
            None => match TeamChain::new(signed) {
                Ok(c) => chain = Some(c),
                Err(_) => return,
            },
            Some(c) => {
                if c.apply(signed).is_err() {
                    return;
                }
            }
        }
    }
    if let Some(c) = chain {
        let _ = c.rotation_owed();
        let _ = TeamChain::from_versions(c.versions().to_vec(), None);
    }
}

/// Manifests framed for the fuzzer: `data` is a postcard list of byte strings (the layout a
/// join answer or a relay registration uses, SPEC.md §15.2), each a signed manifest.
pub fn team_chain(data: &[u8]) {
    if let Ok(list) = sync::decode_batch(data) {
        manifest_chain(&list);
    }
    manifest_bytes(data);
}

/// The join exchange (SPEC.md §9.4): invites, join requests and their answers.
pub fn join_message(data: &[u8]) {
    if let Ok(invite) = Invite::decode(data) {
        assert_eq!(Invite::decode(&invite.encode()).as_ref(), Ok(&invite));
    }
    if let Ok(request) = join::decode::<JoinRequest>(data) {
        let _ = request.verify();
        assert_eq!(join::decode(&join::encode(&request)).as_ref(), Ok(&request));
    }
    if let Ok(response) = join::decode::<JoinResponse>(data) {
        assert_eq!(
            join::decode(&join::encode(&response)).as_ref(),
            Ok(&response)
        );
        if let JoinResponse::Accepted { manifests } = response {
            manifest_chain(&manifests);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_take_garbage() {
        for data in [&[][..], &[0], &[1, 0, 0, 0, 0], &[0xff; 64]] {
            sync_frames(data);
            reconcile_message(data);
            bundle_bytes(data);
            stored_object(data);
            manifest_bytes(data);
            team_chain(data);
            join_message(data);
        }
    }
}

/// What peers and relays exchange about privacy (SPEC.md §3.5, §11.4, §18): a signed
/// tombstone, an audit entry, and share bytes with a signed summary after them. Each decodes
/// strictly and re-encodes to the same bytes; checks on what decoded never panic.
pub fn privacy_records(data: &[u8]) {
    if let Ok(entry) = crate::audit::SignedAuditEntry::decode(data) {
        assert_eq!(
            entry.encode(),
            data,
            "an audit entry re-encodes to its bytes"
        );
        let _ = entry.verify();
        let _ = entry.check_after(None);
        let _ = entry.check_after(Some(&entry));
        let _ = crate::audit::check_chain(std::slice::from_ref(&entry));
    }
    if let Ok(tombstone) = crate::tombstone::SignedTombstone::decode(data) {
        assert_eq!(
            tombstone.encode(),
            data,
            "a tombstone re-encodes to its bytes"
        );
        let _ = tombstone.check(&tombstone.tombstone.session, &tombstone.tombstone.owner);
    }
    if let Ok(Some(summary)) = crate::summary::of_share_bytes(data) {
        let _ = summary.verify();
        let again =
            crate::summary::SignedSummary::decode(&summary.encode()).expect("a summary re-encodes");
        assert_eq!(again, summary);
    }
}
