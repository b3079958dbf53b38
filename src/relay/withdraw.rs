//! Summary deposits at a relay (SPEC.md §11.4, §16.3): a member's metadata-only share reaches
//! its teammates through the relay as the share record and its signed summary only, and when
//! the relay held the session's content for that scope (it was shared with its content
//! before), the summary replaces it: [`RelayState::withdraw_content`] removes the blobs the old record named and
//! gives their size back to the scope's usage, so the relay neither keeps nor serves them.
//!
//! The record itself is replaced first, by `RelayState::finish_summary` (one compare-and-swap),
//! so from then on nobody is served the content; a crash before `withdraw_content` ends leaves blobs
//! that no record names (never served) or usage not yet given back (it errs toward refusing),
//! as retention does (§16.14).

use std::collections::HashSet;

use tapes_protocol::sync::Scope;
use tapes_protocol::NodeId;

use super::state::{deposit_prefix, open_doc, Deposited, RelayState};
use super::RelayError;

impl RelayState {
    /// Removes the content `previous` (the record a summary just replaced under `key`) held:
    /// its blobs that no other record of `scope` names, and their size from the scope's usage.
    /// Returns the bytes withdrawn. (A method, so `state` calls it without importing this
    /// module.)
    pub(crate) fn withdraw_content(
        &self,
        scope: &Scope,
        key: &str,
        previous: &Deposited,
        now_ms: i64,
    ) -> Result<u64, RelayError> {
        let state = self;
        if previous.segments.is_empty() && previous.bytes == 0 {
            return Ok(0);
        }
        let mut kept: HashSet<NodeId> = HashSet::new();
        for (other, found) in state.backend().list(&deposit_prefix(scope))? {
            // The replaced record's own key now holds the summary, which names no blob.
            if other != key {
                let (d, _) = open_doc(&found)?;
                kept.extend(d.segments.iter().flat_map(|s| s.blobs.iter().copied()));
            }
        }
        let blobs: Vec<NodeId> = previous
            .segments
            .iter()
            .flat_map(|s| s.blobs.iter().copied())
            .filter(|b| !kept.contains(b))
            .collect();
        state.backend().delete_blobs(&blobs)?;
        let bytes = previous.bytes;
        state.change_usage(scope, now_ms, |usage| {
            usage.bytes = usage.bytes.saturating_sub(bytes);
            Ok(())
        })?;
        Ok(bytes)
    }
}
