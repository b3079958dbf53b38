//! The fetch writer (SPEC.md §15.3, §15.4): verified objects from every fetch stream go to
//! one thread that streams them into a staged pack and commits about every
//! [`WRITE_BATCH_BYTES`], moving each session's ref only after its nodes are durable (group
//! commit). The queue in front of it is bounded in bytes, so a fetch holds about
//! [`QUEUE_BYTES`] however fast the network and however slow the disk.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use tapes_protocol::bundle::SessionEntry;
use tapes_protocol::MemberId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::receive::{apply_sessions, SessionApplied, Verified};
use super::PeerError;
use crate::session::SessionRecord;
use crate::store::backend::Staging;
use crate::store::Store;

/// Bytes of verified objects the writer stages (into one pack) before committing and flushing
/// them and moving the refs of the sessions they complete. Each commit checks its objects
/// against every older pack and each new session's first id is looked up in every pack, so
/// fewer, larger packs cost less: 64 MiB instead of 32 took those checks from 6.2 % to 3.5 % of
/// a fetching node's CPU (1 GB, ~1 KB nodes, `cargo bench --bench sync`). Memory does not
/// follow, as the objects stream to disk as they are staged.
const WRITE_BATCH_BYTES: usize = 64 << 20;

/// Verified bytes waiting for the writer at most: a fetch then holds about this much, the
/// writer's pack buffers and one batch per stream, however much it fetches and however slow the
/// disk is.
const QUEUE_BYTES: usize = 8 << 20;
/// The queue budget is counted in KiB (semaphore permits are u32).
const QUEUE_UNITS: usize = QUEUE_BYTES >> 10;

/// The sending side of the writer: a channel bounded in bytes (a semaphore of [`QUEUE_UNITS`]
/// permits held by each queued batch), so that waiting for room is an await, not a blocked
/// runtime thread.
#[derive(Clone)]
pub(super) struct WriterTx {
    tx: Sender<WriteMsg>,
    budget: Arc<Semaphore>,
}

fn writer_stopped() -> PeerError {
    PeerError::Store(crate::store::StoreError::Storage(
        crate::store::backend::StorageError::Backend("the store writer stopped".into()),
    ))
}

impl WriterTx {
    /// Queues a verified batch, waiting while the queue holds [`QUEUE_BYTES`].
    pub(super) async fn objects(&self, batch: Verified) -> Result<(), PeerError> {
        let bytes = batch.size();
        let units = (bytes >> 10).clamp(1, QUEUE_UNITS) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| writer_stopped())?;
        self.tx
            .send(WriteMsg::Objects(batch, permit))
            .map_err(|_| writer_stopped())
    }

    pub(super) fn send(&self, msg: WriteMsg) -> Result<(), PeerError> {
        self.tx.send(msg).map_err(|_| writer_stopped())
    }
}

/// Messages to the writer thread.
pub(super) enum WriteMsg {
    /// A verified batch and its share of the queue budget (returned once it is staged).
    Objects(Verified, OwnedSemaphorePermit),
    /// All objects of this session were sent before this message.
    Ref {
        entry: Box<SessionEntry>,
        record: Box<SessionRecord>,
    },
}

#[derive(Default)]
pub(super) struct WriteOutcome {
    pub(super) new: usize,
    pub(super) updated: usize,
    pub(super) kept: Vec<String>,
}

/// The group-commit writer: objects streamed into a staged pack (so they are on their way to
/// disk as they come, not gathered in memory), committed and flushed about every
/// [`WRITE_BATCH_BYTES`] before the refs of the sessions the batch completes.
pub(super) struct Writer {
    tx: Option<WriterTx>,
    handle: std::thread::JoinHandle<Result<WriteOutcome, crate::store::StoreError>>,
}

impl Writer {
    pub(super) fn start(store: Arc<Store>, me: MemberId) -> Writer {
        Self::spawn(store, me, false)
    }

    pub(super) fn spawn(store: Arc<Store>, me: MemberId, own: bool) -> Writer {
        let (tx, rx) = channel();
        let budget = Arc::new(Semaphore::new(QUEUE_UNITS));
        let closer = budget.clone();
        let handle = std::thread::spawn(move || {
            let result = write_loop(&store, &me, own, rx);
            // Wakes senders waiting for room: the writer is gone.
            closer.close();
            result
        });
        Writer {
            tx: Some(WriterTx { tx, budget }),
            handle,
        }
    }

    pub(super) fn sender(&self) -> WriterTx {
        self.tx.clone().expect("the writer is running")
    }

    pub(super) fn finish(mut self) -> Result<WriteOutcome, crate::store::StoreError> {
        drop(self.tx.take());
        self.handle.join().unwrap_or_else(|_| {
            Err(crate::store::StoreError::Storage(
                crate::store::backend::StorageError::Backend("the store writer panicked".into()),
            ))
        })
    }
}

fn write_loop(
    store: &Store,
    me: &MemberId,
    own: bool,
    rx: Receiver<WriteMsg>,
) -> Result<WriteOutcome, crate::store::StoreError> {
    let mut outcome = WriteOutcome::default();
    let mut staging: Option<Box<dyn Staging + '_>> = None;
    let mut bytes = 0usize;
    let mut refs: Vec<(Box<SessionEntry>, Box<SessionRecord>)> = Vec::new();
    let flush = |staging: &mut Option<Box<dyn Staging + '_>>,
                 refs: &mut Vec<(Box<SessionEntry>, Box<SessionRecord>)>,
                 outcome: &mut WriteOutcome|
     -> Result<(), crate::store::StoreError> {
        if let Some(staged) = staging.take() {
            staged.commit()?;
        }
        store.storage().flush()?;
        let me_for_check = if own { MemberId([0; 32]) } else { *me };
        let group: Vec<(&SessionEntry, &SessionRecord)> =
            refs.iter().map(|(e, r)| (&**e, &**r)).collect();
        let applied = apply_sessions(store, &me_for_check, &group)?;
        for ((entry, _), applied) in refs.drain(..).zip(applied) {
            match applied {
                SessionApplied::New => outcome.new += 1,
                SessionApplied::Updated => outcome.updated += 1,
                SessionApplied::Unchanged => {}
                SessionApplied::Kept => outcome.kept.push(entry.id.short()),
            }
        }
        // One flush makes the whole group's refs durable.
        store.storage().flush()?;
        Ok(())
    };
    for msg in rx {
        match msg {
            WriteMsg::Objects(batch, permit) => {
                let stage = match &mut staging {
                    Some(stage) => stage,
                    None => staging.insert(store.storage().stage()?),
                };
                for (id, object) in batch.iter() {
                    stage.add(id, object)?;
                    bytes += object.len();
                }
                // The frame it arrived in goes back to the frame reader.
                super::frames::give_back(batch.into_buffer());
                drop(permit);
                if bytes >= WRITE_BATCH_BYTES {
                    flush(&mut staging, &mut refs, &mut outcome)?;
                    bytes = 0;
                }
            }
            WriteMsg::Ref { entry, record } => refs.push((entry, record)),
        }
    }
    flush(&mut staging, &mut refs, &mut outcome)?;
    Ok(outcome)
}
