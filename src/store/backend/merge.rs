//! Merging sorted object sources (sled's tree and every pack) into one stream in id order, each
//! id once. Used by `objects()` (fsck, reconciliation) and `object_count()`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tapes_protocol::NodeId;

use super::StorageError;

/// One source: items in strictly increasing id order.
pub type Source<'a, T> = Box<dyn Iterator<Item = Result<(NodeId, T), StorageError>> + 'a>;

/// A k-way merge of [`Source`]s that yields each id once (the first source's value wins when
/// several hold it: objects are immutable, so they hold the same bytes unless one is damaged,
/// which fsck then finds when it reads that source's copy through the id lookup).
pub struct Merge<'a, T> {
    sources: Vec<Source<'a, T>>,
    heads: Vec<Option<T>>,
    heap: BinaryHeap<Reverse<(NodeId, usize)>>,
    /// Sources whose next item has not been read yet; read before the next item is chosen, so
    /// the heap always holds the head of every source that has one.
    pending: Vec<usize>,
}

impl<'a, T> Merge<'a, T> {
    pub fn new(sources: Vec<Source<'a, T>>) -> Self {
        let n = sources.len();
        Merge {
            heads: (0..n).map(|_| None).collect(),
            heap: BinaryHeap::with_capacity(n),
            pending: (0..n).rev().collect(),
            sources,
        }
    }
}

impl<T> Iterator for Merge<'_, T> {
    type Item = Result<(NodeId, T), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(i) = self.pending.pop() {
            match self.sources[i].next() {
                Some(Ok((id, value))) => {
                    self.heads[i] = Some(value);
                    self.heap.push(Reverse((id, i)));
                }
                // Hand the error over; the source is read again on the next call.
                Some(Err(e)) => {
                    self.pending.push(i);
                    return Some(Err(e));
                }
                None => {}
            }
        }
        let Reverse((id, i)) = self.heap.pop()?;
        let value = self.heads[i].take()?;
        self.pending.push(i);
        while let Some(Reverse((next, j))) = self.heap.peek().copied() {
            if next != id {
                break;
            }
            self.heap.pop();
            self.heads[j] = None;
            self.pending.push(j);
        }
        Some(Ok((id, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(ids: &[u8]) -> Source<'static, u8> {
        let items: Vec<_> = ids.iter().map(|&b| Ok((NodeId([b; 32]), b))).collect();
        Box::new(items.into_iter())
    }

    #[test]
    fn merges_in_order_and_yields_each_id_once() {
        let merged: Vec<u8> = Merge::new(vec![
            source(&[1, 4, 9]),
            source(&[]),
            source(&[2, 4, 5, 9]),
            source(&[0, 9]),
        ])
        .map(|r| r.unwrap().1)
        .collect();
        assert_eq!(merged, vec![0, 1, 2, 4, 5, 9]);
    }

    #[test]
    fn an_error_is_handed_over_and_the_rest_still_comes() {
        let failing: Source<'static, u8> = Box::new(
            vec![
                Ok((NodeId([3; 32]), 3)),
                Err(StorageError::Backend("bad".into())),
                Ok((NodeId([7; 32]), 7)),
            ]
            .into_iter(),
        );
        let items: Vec<_> = Merge::new(vec![failing, source(&[5])]).collect();
        assert_eq!(items.len(), 4);
        assert!(items[1].is_err());
        let ok: Vec<u8> = items
            .into_iter()
            .filter_map(|r| r.ok())
            .map(|r| r.1)
            .collect();
        assert_eq!(ok, vec![3, 5, 7]);
    }
}
