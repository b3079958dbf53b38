//! Writes a session as the canonical transcript JSON (SPEC.md §17.2): the document `tapes
//! export --format json` writes for that one session (`format: "tape-bundle"`, its nodes with
//! ids, parents, blocks and meta), as `<dir>/<session id>.tapes.json`. It is for reading and for
//! tools that take a transcript; it stays on this machine (a checkout is not an export, so the
//! secret gate does not apply, and paths are kept).

use super::{Render, Rendered, ResumeError};

pub fn render(req: &Render) -> Result<Rendered, ResumeError> {
    let chain: Vec<(tapes_protocol::NodeId, tapes_protocol::Node)> =
        req.nodes.iter().map(|n| (n.id(), n.clone())).collect();
    let prices = crate::session::pricing::PriceTable::defaults();
    let session = crate::views::export::object_of(&req.session, req.record, &chain, &prices);
    let mut bytes = Vec::new();
    let written = (|| {
        let mut doc = crate::views::export::JsonDocument::start(
            &mut bytes,
            req.now_ms,
            "tapes checkout",
            &Default::default(),
        )?;
        doc.session(&session)?;
        doc.finish()
    })();
    written.map_err(|e| ResumeError::Render {
        what: "file".into(),
        why: e.to_string(),
    })?;
    Ok(Rendered {
        path: req.cwd.join(format!("{}.tapes.json", req.session.to_hex())),
        bytes,
        ends: (1..=req.nodes.len() as u32).collect(),
        extra: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ParsedSession;

    #[test]
    fn the_file_is_the_export_document_of_that_one_session() {
        let parsed: ParsedSession = crate::session::sample::session(7, 0, Default::default());
        let nodes = crate::import::ingest::build_nodes(&parsed);
        let record = crate::resume::test_record("claude", Some("t"));
        let session = tapes_protocol::SessionId([3; 16]);
        let rendered = render(&Render {
            nodes: &nodes,
            record: &record,
            session,
            agent_session_id: "x",
            parent_agent_session_id: None,
            cwd: std::path::Path::new("/work/p"),
            now_ms: 0,
        })
        .expect("render");
        assert!(rendered
            .path
            .ends_with(format!("{}.tapes.json", session.to_hex())));
        let doc: serde_json::Value = serde_json::from_slice(&rendered.bytes).expect("JSON");
        assert_eq!(doc["format"], "tape-bundle");
        assert_eq!(doc["sessions"][0]["id"], session.to_hex());
        assert_eq!(
            doc["sessions"][0]["nodes"].as_array().map(Vec::len),
            Some(nodes.len())
        );
        assert!(doc["checksum"]
            .as_str()
            .is_some_and(|c| c.starts_with("blake3:")));
    }
}
