//! Writes a session as the canonical transcript JSON (SPEC.md §17.2): the document `tapes
//! export --format json` writes for that one session (`format: "tape-bundle"`, its nodes with
//! ids, parents, blocks and meta), as `<dir>/<session id>.tapes.json`. It is for reading and for
//! tools that take a transcript; it stays on this machine (a checkout is not an export, so the
//! secret gate does not apply, and paths are kept).

use serde_json::json;

use super::{Render, Rendered, ResumeError};

pub fn render(req: &Render) -> Result<Rendered, ResumeError> {
    let chain: Vec<(tapes_protocol::NodeId, tapes_protocol::Node)> =
        req.nodes.iter().map(|n| (n.id(), n.clone())).collect();
    let prices = crate::pricing::PriceTable::defaults();
    let session = crate::export::object_of(&req.session, req.record, &chain, &prices);
    let sessions = serde_json::to_string(&json!([session])).map_err(|e| ResumeError::Render {
        what: "file".into(),
        why: e.to_string(),
    })?;
    let sum = blake3::Hasher::new_derive_key(crate::export::EXPORT_CHECKSUM_CONTEXT)
        .update(sessions.as_bytes())
        .finalize();
    let exported_at = super::timestamp(req.now_ms);
    let text = format!(
        "{{\"version\":1,\"format\":\"tape-bundle\",\"exported_at\":{},\"exported_by\":\"tapes checkout\",\"filter\":{{}},\"sessions\":{sessions},\"checksum\":\"blake3:{}\"}}\n",
        json!(exported_at),
        hex::encode(sum.as_bytes())
    );
    Ok(Rendered {
        path: req.cwd.join(format!("{}.tapes.json", req.session.to_hex())),
        bytes: text.into_bytes(),
        ends: (1..=req.nodes.len() as u32).collect(),
        extra: Vec::new(),
    })
}
