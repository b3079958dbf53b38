//! A session's family as a graph: the original, its branches and forks and theirs, each edge
//! saying who made it, when, and after which message (SPEC.md §10; the lineage fields of
//! [`crate::session::Lineage`] written by [`crate::session::lineage`]). `tapes log --graph`
//! draws it as text ([`LineageGraph::picture`]); the deck and the web page draw the same nodes
//! and edges.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;
use tapes_protocol::SessionId;

use super::{relative, ListingError, OriginKind, Snapshot};
use crate::session::pricing::PriceTable;
use crate::store::Store;

/// One session of the family.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphNode {
    pub id: SessionId,
    pub title: String,
    pub owner_name: String,
    pub mine: bool,
    pub messages: u64,
    pub started_ms: i64,
    /// When its record was made (for a branch or fork: when it was branched or forked).
    pub created_ms: i64,
    /// Distance from the root (0 for the root).
    pub depth: usize,
    /// The session asked about.
    pub focus: bool,
    /// Named by a child's lineage but not in this store.
    pub missing: bool,
}

/// A branch or fork: `child` shares the first `at` messages of `parent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphEdge {
    pub parent: SessionId,
    pub child: SessionId,
    pub kind: EdgeKind,
    pub at: u64,
    /// Who made it (the child's owner).
    pub who: String,
    pub when_ms: i64,
}

pub type EdgeKind = OriginKind;

/// A family of sessions, nodes in drawing order (depth first from the root, children oldest
/// first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineageGraph {
    pub root: SessionId,
    pub focus: SessionId,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

/// The lineage graph of session `id` (reads the store once; prefer
/// [`Snapshot::lineage`] when a snapshot is at hand).
pub fn lineage_graph(
    store: &Store,
    id: &SessionId,
    now_ms: i64,
) -> Result<LineageGraph, ListingError> {
    let snapshot = Snapshot::load(
        store,
        super::Facts::Summaries,
        &PriceTable::defaults(),
        now_ms,
    )?;
    snapshot.lineage(id)
}

impl Snapshot {
    /// The family of session `id`: everything sharing its root, and what descends from it.
    pub fn lineage(&self, id: &SessionId) -> Result<LineageGraph, ListingError> {
        let record = self
            .record(id)
            .ok_or_else(|| ListingError::Gone { id: id.short() })?;
        let root = record.lineage.root;
        // Members: same root, plus anything whose parent is a member (a family whose root
        // field disagrees still shows), plus parents named but absent.
        let mut members: HashSet<SessionId> = HashSet::from([*id, root]);
        for (sid, r) in &self.sessions {
            if r.lineage.root == root {
                members.insert(*sid);
            }
        }
        loop {
            let before = members.len();
            for (sid, r) in &self.sessions {
                if let Some(p) = r.lineage.parent {
                    if members.contains(&p) || members.contains(sid) {
                        members.insert(*sid);
                        members.insert(p);
                    }
                }
            }
            if members.len() == before {
                break;
            }
        }
        let mut children: BTreeMap<SessionId, Vec<(i64, SessionId)>> = BTreeMap::new();
        let mut edges = Vec::new();
        let mut has_parent = HashSet::new();
        for sid in &members {
            let Some(r) = self.record(sid) else { continue };
            let Some(parent) = r.lineage.parent else {
                continue;
            };
            if !members.contains(&parent) || parent == *sid {
                continue;
            }
            let kind = match self.record(&parent) {
                Some(p) if p.owner.or(self.me) == r.owner.or(self.me) => OriginKind::Branch,
                Some(_) => OriginKind::Fork,
                None => OriginKind::Copy,
            };
            children
                .entry(parent)
                .or_default()
                .push((r.created_ms, *sid));
            has_parent.insert(*sid);
            edges.push(GraphEdge {
                parent,
                child: *sid,
                kind,
                at: r.lineage.base_count,
                who: self.name_of(r.owner),
                when_ms: r.created_ms,
            });
        }
        for list in children.values_mut() {
            list.sort();
        }
        // Tops: sessions with no parent in the family (normally just the root), oldest first.
        let mut tops: Vec<(i64, SessionId)> = members
            .iter()
            .filter(|s| !has_parent.contains(*s))
            .map(|s| (self.record(s).map_or(i64::MIN, |r| r.created_ms), *s))
            .collect();
        tops.sort();
        let mut nodes = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<(SessionId, usize)> =
            tops.into_iter().rev().map(|(_, s)| (s, 0)).collect();
        while let Some((sid, depth)) = stack.pop() {
            if !seen.insert(sid) {
                continue;
            }
            nodes.push(self.graph_node(&sid, depth, id));
            if let Some(kids) = children.get(&sid) {
                for (_, kid) in kids.iter().rev() {
                    stack.push((*kid, depth + 1));
                }
            }
        }
        let order: HashMap<SessionId, usize> =
            nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        edges.sort_by_key(|e| order.get(&e.child).copied().unwrap_or(usize::MAX));
        Ok(LineageGraph {
            root,
            focus: *id,
            nodes,
            edges,
        })
    }

    fn graph_node(&self, sid: &SessionId, depth: usize, focus: &SessionId) -> GraphNode {
        match self.row(sid) {
            Some(row) => GraphNode {
                id: *sid,
                title: row.title,
                owner_name: row.owner_name,
                mine: row.mine,
                messages: row.messages,
                started_ms: row.started_ms,
                created_ms: self.record(sid).map_or(row.started_ms, |r| r.created_ms),
                depth,
                focus: sid == focus,
                missing: false,
            },
            None => GraphNode {
                id: *sid,
                title: "(not in this store)".into(),
                owner_name: String::new(),
                mine: false,
                messages: 0,
                started_ms: 0,
                created_ms: 0,
                depth,
                focus: sid == focus,
                missing: true,
            },
        }
    }
}

impl LineageGraph {
    /// The edge that made `child`.
    pub fn edge_to(&self, child: &SessionId) -> Option<&GraphEdge> {
        self.edges.iter().find(|e| e.child == *child)
    }

    /// The family as a text tree, one line per session, cut to `width` columns:
    ///
    /// ```text
    /// ● 3f2a1b0c9d8e  Fix the auth flow · you · 24 messages · started 2026-02-14
    /// ├─● 9a8b7c6d5e4f  branch at #5 by you, 3d ago · Try plan B · 12 messages  ◀
    /// │ └─● 1234abcd5678  fork at #7 by alice, 2h ago · Try plan B · 9 messages
    /// └─● 5678abcd1234  fork at #3 by bob, 2026-01-02 · … · 4 messages
    /// ```
    pub fn picture(&self, now_ms: i64, width: Option<usize>) -> String {
        let mut out = String::new();
        // Whether the node at each depth is the last child of its parent (for the rails).
        let mut last_at_depth: Vec<bool> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let is_last = !self.nodes[i + 1..]
                .iter()
                .take_while(|n| n.depth >= node.depth)
                .any(|n| n.depth == node.depth);
            last_at_depth.truncate(node.depth);
            let mut line = String::new();
            if node.depth > 0 {
                for &last in &last_at_depth[1..] {
                    line.push_str(if last { "  " } else { "│ " });
                }
                line.push_str(if is_last { "└─" } else { "├─" });
            }
            last_at_depth.push(is_last);
            line.push_str(if node.missing { "○ " } else { "● " });
            let _ = write!(line, "{}  ", node.id.short());
            let mut facts = Vec::new();
            if let Some(edge) = self.edge_to(&node.id) {
                facts.push(format!(
                    "{} at #{} by {}, {}",
                    edge.kind.as_str(),
                    edge.at,
                    edge.who,
                    relative(edge.when_ms, now_ms)
                ));
            }
            facts.push(node.title.clone());
            if !node.missing {
                if node.depth == 0 {
                    facts.push(node.owner_name.clone());
                }
                facts.push(crate::views::render::plural(
                    node.messages as usize,
                    "message",
                ));
                if node.depth == 0 {
                    facts.push(format!(
                        "started {}",
                        crate::views::stats::day(node.started_ms)
                    ));
                }
            }
            let marker = if node.focus { "  ◀" } else { "" };
            let text = facts.join(" · ");
            let budget =
                width.map(|w| w.saturating_sub(line.chars().count() + marker.chars().count()));
            line.push_str(&match budget {
                Some(b) => crate::views::table::cut(&text, b.max(1)),
                None => text,
            });
            line.push_str(marker);
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}
