//! Receiving a chain (SPEC.md §15.4): objects arrive root first, each must hash to the id the
//! sender announced and link to the one before it. [`ChainCheck`] is that running check; the
//! peer client, the relay client and the bundle reader feed it bytes and store only what it
//! returns.

use crate::{NodeId, StoredObject};

/// The running check of one chain being received.
pub struct ChainCheck {
    ids: Vec<NodeId>,
    next: usize,
    parent: Option<NodeId>,
    /// A relay sends whole deposits, so its first object may come before `next`: the check
    /// then starts at that object (found by its parent link), never after `next`.
    align: bool,
}

impl ChainCheck {
    /// Objects are expected from `ids[start]` on; the first one's parent must be `parent`.
    pub fn new(ids: Vec<NodeId>, start: usize, parent: Option<NodeId>) -> ChainCheck {
        ChainCheck {
            ids,
            next: start,
            parent,
            align: false,
        }
    }

    /// Accepts a first object at or before `start` (what a relay sends, SPEC.md §16.4).
    pub fn aligning(mut self) -> ChainCheck {
        self.align = true;
        self
    }

    fn align_on(&mut self, bytes: &[u8]) -> Result<(), (String, String)> {
        self.align = false;
        let parent = StoredObject::parent_of(bytes)
            .map_err(|e| ("an object".to_string(), format!("it does not decode ({e})")))?;
        let at = match parent {
            None => 0,
            Some(parent) => match self.ids[..self.next.min(self.ids.len())]
                .iter()
                .position(|id| *id == parent)
            {
                Some(i) => i + 1,
                None if Some(parent) == self.parent => self.next,
                None => {
                    return Err((
                        "an object".into(),
                        "it does not continue the announced chain".into(),
                    ))
                }
            },
        };
        if at > self.next {
            return Err(("an object".into(), "it skips part of the chain".into()));
        }
        self.next = at;
        self.parent = parent;
        Ok(())
    }

    /// Checks the next object of the chain.
    pub fn check(&mut self, bytes: Vec<u8>) -> Result<StoredObject, (String, String)> {
        let id = self.check_in_place(&bytes)?;
        Ok(StoredObject { id, bytes })
    }

    /// [`ChainCheck::check`] of bytes the caller keeps where they are (a batch read in place):
    /// the id they were checked to have.
    pub fn check_in_place(&mut self, bytes: &[u8]) -> Result<NodeId, (String, String)> {
        if self.align {
            self.align_on(bytes)?;
        }
        let Some(expected) = self.ids.get(self.next).copied() else {
            return Err(("an object".into(), "more objects than announced".into()));
        };
        let parent = StoredObject::verify_link(&expected, bytes).map_err(|e| {
            (
                expected.short(),
                format!("its id does not match its bytes ({e})"),
            )
        })?;
        if parent != self.parent {
            return Err((
                expected.short(),
                "its parent is not the node before it".into(),
            ));
        }
        self.parent = Some(expected);
        self.next += 1;
        Ok(expected)
    }

    /// Checks only that the next object's bytes hash to the announced id (the caller checks
    /// the links, as `transfer::pull` does).
    pub fn check_id_only(&mut self, bytes: Vec<u8>) -> Result<StoredObject, (String, String)> {
        let Some(expected) = self.ids.get(self.next).copied() else {
            return Err(("an object".into(), "more objects than announced".into()));
        };
        StoredObject::verify(&expected, &bytes).map_err(|e| {
            (
                expected.short(),
                format!("its id does not match its bytes ({e})"),
            )
        })?;
        self.next += 1;
        Ok(StoredObject {
            id: expected,
            bytes,
        })
    }

    pub fn is_complete(&self) -> bool {
        self.next == self.ids.len()
    }
}
