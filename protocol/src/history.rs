//! How two histories of one session relate (SPEC §3.4, "A ref only moves forward").
//!
//! A session's history is its chain of node ids, root first. Because every id commits to its
//! parent, two chains share exactly a prefix, and that prefix decides what may happen to a
//! session ref when a copy arrives (an import of an old backup, a fetch, a push, a bundle):
//!
//! - the copy is the same history: nothing to do;
//! - the copy extends the ref's history: the ref may move forward to it;
//! - the copy is a prefix of the ref's history (an older copy): nothing to do, "already have";
//! - the two diverge after a common prefix: the ref must not move; the copy may only be kept
//!   as a session of its own, branched from the ref's session at the divergence point.
//!
//! Pure functions over id lists; callers read the chains.

use crate::NodeId;

/// What a copy's history is to the history a ref holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Both end at the same node.
    Same,
    /// The copy contains the whole held history and more: `new` nodes after it.
    Extends { new: usize },
    /// The copy is a proper prefix of the held history (`of` nodes long).
    Older { of: usize },
    /// Both share the first `common` nodes (possibly none), then differ.
    Diverged { common: usize },
}

impl Relation {
    /// True when a ref holding `held` may be set to the copy: the same or a longer history.
    pub fn moves_forward(self) -> bool {
        matches!(self, Relation::Same | Relation::Extends { .. })
    }
}

/// Relates the copy `copy` to the held history `held` (both root first).
pub fn relate(held: &[NodeId], copy: &[NodeId]) -> Relation {
    let common = held
        .iter()
        .zip(copy.iter())
        .take_while(|(a, b)| a == b)
        .count();
    match (common == held.len(), common == copy.len()) {
        (true, true) => Relation::Same,
        (true, false) => Relation::Extends {
            new: copy.len() - common,
        },
        (false, true) => Relation::Older { of: held.len() },
        (false, false) => Relation::Diverged { common },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: &[u8]) -> Vec<NodeId> {
        n.iter().map(|b| NodeId([*b; 32])).collect()
    }

    #[test]
    fn every_relation() {
        assert_eq!(relate(&ids(&[1, 2]), &ids(&[1, 2])), Relation::Same);
        assert_eq!(
            relate(&ids(&[1, 2]), &ids(&[1, 2, 3])),
            Relation::Extends { new: 1 }
        );
        assert_eq!(
            relate(&ids(&[1, 2, 3]), &ids(&[1, 2])),
            Relation::Older { of: 3 }
        );
        assert_eq!(
            relate(&ids(&[1, 2, 3]), &ids(&[1, 4])),
            Relation::Diverged { common: 1 }
        );
        assert_eq!(
            relate(&ids(&[1]), &ids(&[5])),
            Relation::Diverged { common: 0 }
        );
        assert!(Relation::Extends { new: 1 }.moves_forward());
        assert!(!Relation::Older { of: 3 }.moves_forward());
        assert!(!Relation::Diverged { common: 0 }.moves_forward());
    }
}
