//! Sharing the store between processes (SPEC.md §6.1).
//!
//! sled lets one process at a time open a store. The process that gets it, the *holder*, serves
//! the store to the others on a Unix socket beside the database, `<store>/tapes.sock`; every
//! other process sends each [`Storage`] call there. When the holder lets go (it exits, or drops
//! its store), its clients run the open procedure again: one of them gets the lock and becomes
//! the new holder, the others its clients. This module owns the open procedure, the holder's
//! server, the wire between the two, the client's connection pool, and that failover.
//! [`SharedStorage`] is the one backend a [`crate::store::Store`] uses, whichever side it is on.
//!
//! The holder makes every write a client sends durable before it answers, so a client never
//! has to remember what it wrote: what it was told is written survives the holder, and what it
//! was not told about it sends again (objects are content-addressed; a compare-and-swap that
//! already landed is recognized, `already_applied`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};
use tapes_protocol::{NodeId, StoredObject};

use super::{RefUpdate, SledStorage, Staging, Storage, StorageError, Written};

/// The holder's socket, in the store directory.
pub const SOCKET_NAME: &str = "tapes.sock";
/// Longest socket path the kernel takes: `sun_path` holds 108 bytes with the closing NUL on
/// Linux. A holder whose socket path would be longer serves nothing; its would-be clients wait
/// for the lock instead.
const MAX_SOCKET_PATH: usize = 107;
/// Bumped whenever [`Request`] or [`Reply`] changes. A client and a holder of different versions
/// do not talk: the client waits for the lock as if the holder did not serve.
const WIRE_VERSION: u32 = 1;
/// How often a waiting process tries the lock and the socket again: short next to a command's
/// run time, and a sled open attempt that fails on the lock costs well under a millisecond.
const POLL: Duration = Duration::from_millis(50);
/// A wait longer than this is announced on stderr: past it a user notices the pause.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(1);
/// How long a process waits for a store whose holder does not answer (still starting, an older
/// tapes, a path too long for a socket, or stuck) before giving up with
/// [`StorageError::Locked`]. Long enough for a short command to finish and hand over; a holder
/// that answers is never waited for.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// Open failures other than the lock that are retried before they count: a store that another
/// process is creating right now can be seen half made (sled writes its config file after it
/// takes the lock). A damaged store still fails after these few polls.
const OPEN_ERROR_RETRIES: u32 = 3;
/// Largest frame either side reads: far above any request or reply tapes sends (listings come
/// in chunks of [`CHUNK_BYTES`], writes in parts of [`PUT_PART_BYTES`]), low enough that a
/// damaged length cannot make the reader allocate gigabytes.
const MAX_FRAME: usize = 1 << 30;
/// A listing is sent in chunks of about this many bytes: large enough that the frames cost
/// nothing next to the data, small enough that neither side holds much of it at once.
const CHUNK_BYTES: usize = 4 << 20;
/// A client's `put_objects` is sent in parts of about this size, so an import batch of hundreds
/// of megabytes is not copied whole into one frame on both sides. Each part is still large
/// enough to become one pack (`PACK_MIN_BYTES` is 4 MiB).
const PUT_PART_BYTES: usize = 64 << 20;
/// A client's staging sends what it holds every this many bytes, so a fetch of gigabytes is
/// never buffered whole; objects are unreachable until a ref names them (SPEC.md §6), so
/// writing them before the commit is harmless.
const STAGE_SEND_BYTES: usize = 8 << 20;
/// Connections a client keeps open for its next requests: a command rarely has more than a
/// listing and a lookup in flight at once.
const IDLE_CONNECTIONS: usize = 4;

/// The store in `path` as this process sees it: held here (and served to the others), or held
/// by another process and reached through its socket. Which one can change once, from remote
/// to local, when the holder goes away (failover).
pub struct SharedStorage {
    path: PathBuf,
    socket: PathBuf,
    /// Set when this process holds the store; never unset while this value lives.
    local: OnceLock<Holder>,
    /// Connections to the holder that are free for the next request.
    idle: Mutex<Vec<Conn>>,
    /// Held while running the open procedure, so one thread at a time takes the lock or dials.
    connecting: Mutex<()>,
}

/// This process holds the store: sled is open here and served to other processes.
struct Holder {
    /// Dropped first (fields drop in order): the server stops before the storage goes.
    _server: Option<Server>,
    storage: Arc<SledStorage>,
}

impl Holder {
    fn start(path: &Path, storage: SledStorage) -> Holder {
        let storage = Arc::new(storage);
        let served: Arc<dyn Storage> = storage.clone();
        Holder {
            _server: Server::start(path, served),
            storage,
        }
    }
}

/// Where one call goes.
enum Route<'a> {
    Local(&'a SledStorage),
    Remote(Conn),
}

/// What the open procedure got.
enum Acquired {
    Lock(Box<SledStorage>),
    Holder(Conn),
}

impl SharedStorage {
    /// Opens the store in `path` (creating it if needed): takes sled's lock if it is free and
    /// serves the store, or connects to the process that holds it. Waits while neither works,
    /// saying so on stderr after a second, and gives up after a minute.
    pub fn open(path: &Path) -> Result<SharedStorage, StorageError> {
        let shared = SharedStorage {
            path: path.to_path_buf(),
            socket: path.join(SOCKET_NAME),
            local: OnceLock::new(),
            idle: Mutex::new(Vec::new()),
            connecting: Mutex::new(()),
        };
        let conn = match shared.connect()? {
            Route::Local(_) => None,
            Route::Remote(conn) => Some(conn),
        };
        if let Some(conn) = conn {
            shared.release(conn);
        }
        Ok(shared)
    }

    /// True when this process holds the store (and serves it to others).
    pub fn is_holder(&self) -> bool {
        self.local.get().is_some()
    }

    fn route(&self) -> Result<Route<'_>, StorageError> {
        if let Some(holder) = self.local.get() {
            return Ok(Route::Local(&holder.storage));
        }
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(Route::Remote(conn)),
            None => self.connect(),
        }
    }

    /// The open procedure (SPEC.md §6.1), once per thread at a time.
    fn connect(&self) -> Result<Route<'_>, StorageError> {
        let _one = self
            .connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(holder) = self.local.get() {
            return Ok(Route::Local(&holder.storage));
        }
        match acquire(&self.path, &self.socket)? {
            Acquired::Lock(storage) => {
                tracing::debug!(store = %self.path.display(), "holding the store");
                let holder = Holder::start(&self.path, *storage);
                Ok(Route::Local(
                    &self.local.get_or_init(move || holder).storage,
                ))
            }
            Acquired::Holder(conn) => Ok(Route::Remote(conn)),
        }
    }

    fn release(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// After a lost connection the idle ones most likely went to the same holder: dropped.
    fn forget_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn locked(&self) -> StorageError {
        StorageError::Locked {
            path: self.path.display().to_string(),
        }
    }

    /// One call: `local` on the store if this process holds it, else `request` to the holder,
    /// whose reply `answer` turns into the result. A lost connection runs the open procedure
    /// again and sends the request again. Returns the result and whether the request was sent
    /// more than once (its first sending may have taken effect).
    fn call<T>(
        &self,
        request: &Request<'_>,
        local: impl Fn(&SledStorage) -> Result<T, StorageError>,
        answer: impl Fn(Reply) -> Option<T>,
    ) -> (Result<T, StorageError>, bool) {
        let mut retry = Retry::default();
        loop {
            let mut conn = match self.route() {
                Ok(Route::Local(storage)) => return (local(storage), retry.resent()),
                Ok(Route::Remote(conn)) => conn,
                Err(e) => return (Err(e), retry.resent()),
            };
            match conn.send(request).and_then(|()| conn.receive()) {
                Ok(Reply::Error(e)) => {
                    self.release(conn);
                    return (Err(e.into()), retry.resent());
                }
                Ok(reply) => {
                    self.release(conn);
                    let result = answer(reply).ok_or_else(|| unexpected_reply(request.name()));
                    return (result, retry.resent());
                }
                Err(e) => {
                    if let Err(e) = retry.lost(self, e) {
                        return (Err(e), true);
                    }
                }
            }
        }
    }

    /// The entries of a listing after `after`, from wherever the store is now.
    fn start(&self, listing: &Listing, after: Option<Vec<u8>>) -> Result<Source<'_>, StorageError> {
        let mut retry = Retry::default();
        loop {
            let mut conn = match self.route()? {
                Route::Local(storage) => {
                    return Ok(Source::Local(entries(storage, listing, after)))
                }
                Route::Remote(conn) => conn,
            };
            let after_bytes = after.as_deref().map(Bytes::new);
            let request = match listing {
                Listing::Objects => Request::Objects { after: after_bytes },
                Listing::Refs(prefix) => Request::Refs {
                    prefix: Bytes::new(prefix),
                    after: after_bytes,
                },
            };
            match conn.send(&request) {
                Ok(()) => {
                    return Ok(Source::Remote {
                        conn,
                        chunk: Vec::new().into_iter(),
                    })
                }
                Err(e) => retry.lost(self, e)?,
            }
        }
    }

    fn listing(&self, listing: Listing) -> Stream<'_> {
        Stream {
            shared: self,
            listing,
            source: Source::NotStarted,
            after: None,
            yielded_errors: 0,
            skip_errors: 0,
            retry: Retry::default(),
        }
    }
}

/// Takes sled's lock if it is free, else connects to the holder; waits while neither works.
fn acquire(path: &Path, socket: &Path) -> Result<Acquired, StorageError> {
    let started = Instant::now();
    let mut said = false;
    let mut open_errors = 0;
    loop {
        match SledStorage::try_open(path) {
            Ok(Some(storage)) => return Ok(Acquired::Lock(Box::new(storage))),
            Ok(None) => {}
            Err(e) => {
                open_errors += 1;
                if open_errors > OPEN_ERROR_RETRIES {
                    return Err(e);
                }
            }
        }
        match Conn::dial(socket) {
            Ok(conn) => {
                tracing::debug!(socket = %socket.display(), "using the store through the process that holds it");
                return Ok(Acquired::Holder(conn));
            }
            Err(e) => {
                tracing::debug!(socket = %socket.display(), error = %e, "the store is held and its socket does not answer yet")
            }
        }
        let waited = started.elapsed();
        if waited >= GIVE_UP_AFTER {
            return Err(StorageError::Locked {
                path: path.display().to_string(),
            });
        }
        if waited >= SAY_WAITING_AFTER && !said {
            eprintln!(
                "waiting for another tapes process to let go of the store at {}…",
                path.display()
            );
            said = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Bookkeeping for one operation whose connection was lost: paces the retries and gives up
/// after [`GIVE_UP_AFTER`] of failures.
#[derive(Default)]
struct Retry {
    first_loss: Option<Instant>,
    losses: u32,
}

impl Retry {
    fn resent(&self) -> bool {
        self.losses > 0
    }

    /// Records a lost connection; an error ends the operation.
    fn lost(&mut self, shared: &SharedStorage, e: io::Error) -> Result<(), StorageError> {
        if e.kind() == io::ErrorKind::InvalidData {
            return Err(StorageError::Backend(format!(
                "the tapes process holding the store at {} sent something this tapes cannot read ({e}); stop the other tapes process or upgrade both to the same version",
                shared.path.display()
            )));
        }
        tracing::debug!(store = %shared.path.display(), error = %e, "lost the connection to the process holding the store; opening it again");
        shared.forget_idle();
        let first = *self.first_loss.get_or_insert_with(Instant::now);
        if first.elapsed() >= GIVE_UP_AFTER {
            return Err(shared.locked());
        }
        if self.losses > 0 {
            std::thread::sleep(POLL);
        }
        self.losses += 1;
        Ok(())
    }
}

/// True when every update's ref holds exactly its new value (`None`: absent). A ref update
/// sent again after a lost connection that then fails its compare-and-swap landed the first
/// time if this holds: the store is as the caller wanted it.
fn already_applied(
    updates: &[RefUpdate],
    get_ref: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StorageError>,
) -> Result<bool, StorageError> {
    for update in updates {
        if get_ref(&update.key)? != update.new {
            return Ok(false);
        }
    }
    Ok(true)
}

fn unexpected_reply(request: &str) -> StorageError {
    StorageError::Backend(format!(
        "the tapes process holding the store answered a {request} request with something else; stop it and retry (both should be the same tapes version)"
    ))
}

impl Storage for SharedStorage {
    fn chain_reader(&self) -> Box<dyn super::ChainReader + '_> {
        match self.local.get() {
            Some(holder) => holder.storage.chain_reader(),
            // Through the holder each object is a request of its own.
            None => Box::new(super::EachOnItsOwn(self)),
        }
    }

    fn get_object(&self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError> {
        self.call(
            &Request::GetObject(*id),
            |s| s.get_object(id),
            |reply| match reply {
                Reply::Bytes(bytes) => Some(bytes.map(ByteBuf::into_vec)),
                _ => None,
            },
        )
        .0
    }

    fn contains_object(&self, id: &NodeId) -> Result<bool, StorageError> {
        self.call(
            &Request::ContainsObject(*id),
            |s| s.contains_object(id),
            |reply| match reply {
                Reply::Bool(b) => Some(b),
                _ => None,
            },
        )
        .0
    }

    fn put_objects(&self, objects: &[StoredObject]) -> Result<Written, StorageError> {
        if let Some(holder) = self.local.get() {
            return holder.storage.put_objects(objects);
        }
        let mut total = Written::default();
        for part in parts(objects, PUT_PART_BYTES) {
            let request = Request::PutObjects(part.iter().map(WireObject::from).collect());
            let written = self
                .call(
                    &request,
                    |s| s.put_objects(part),
                    |reply| match reply {
                        Reply::Written { objects, bytes } => Some(Written {
                            objects: objects as usize,
                            bytes: bytes as usize,
                        }),
                        _ => None,
                    },
                )
                .0?;
            total.objects += written.objects;
            total.bytes += written.bytes;
        }
        Ok(total)
    }

    fn stage(&self) -> Result<Box<dyn Staging + '_>, StorageError> {
        if let Some(holder) = self.local.get() {
            return holder.storage.stage();
        }
        Ok(Box::new(SentStaging {
            storage: self,
            pending: Vec::new(),
            pending_bytes: 0,
            written: Written::default(),
        }))
    }

    fn objects(&self) -> Box<dyn Iterator<Item = Result<(NodeId, Vec<u8>), StorageError>> + '_> {
        if let Some(holder) = self.local.get() {
            return holder.storage.objects();
        }
        Box::new(self.listing(Listing::Objects).map(|entry| {
            let (key, bytes) = entry?;
            let id = NodeId::from_slice(&key).ok_or_else(|| {
                StorageError::Backend(format!("object id of {} bytes, not 32", key.len()))
            })?;
            Ok((id, bytes))
        }))
    }

    fn object_count(&self) -> usize {
        let (count, _) = self.call(
            &Request::ObjectCount,
            |s| Ok(s.object_count()),
            |reply| match reply {
                Reply::Number(n) => Some(n as usize),
                _ => None,
            },
        );
        // The trait has no error here; a store nobody can reach holds nothing we can count.
        count.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not count the objects in the store");
            0
        })
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.call(
            &Request::GetRef(Bytes::new(key)),
            |s| s.get_ref(key),
            |reply| match reply {
                Reply::Bytes(bytes) => Some(bytes.map(ByteBuf::into_vec)),
                _ => None,
            },
        )
        .0
    }

    fn update_refs(&self, updates: &[RefUpdate]) -> Result<(), StorageError> {
        let request = Request::UpdateRefs(updates.iter().map(WireRefUpdate::from).collect());
        let (result, resent) = self.call(
            &request,
            |s| s.update_refs(updates),
            |reply| matches!(reply, Reply::Done).then_some(()),
        );
        match result {
            Err(conflict @ StorageError::Conflict { .. }) if resent => {
                if already_applied(updates, |key| self.get_ref(key))? {
                    tracing::debug!("a ref update sent again had landed the first time");
                    Ok(())
                } else {
                    Err(conflict)
                }
            }
            other => other,
        }
    }

    fn refs(
        &self,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + '_> {
        if let Some(holder) = self.local.get() {
            return holder.storage.refs(prefix);
        }
        Box::new(self.listing(Listing::Refs(prefix.to_vec())))
    }

    fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.call(
            &Request::GetSetting(key),
            |s| s.get_setting(key),
            |reply| match reply {
                Reply::Bytes(bytes) => Some(bytes.map(ByteBuf::into_vec)),
                _ => None,
            },
        )
        .0
    }

    fn set_setting(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.call(
            &Request::SetSetting {
                key,
                value: Bytes::new(value),
            },
            |s| s.set_setting(key, value),
            |reply| matches!(reply, Reply::Done).then_some(()),
        )
        .0
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.call(
            &Request::Flush,
            |s| s.flush(),
            |reply| matches!(reply, Reply::Done).then_some(()),
        )
        .0
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.call(
            &Request::SizeOnDisk,
            |s| s.size_on_disk(),
            |reply| match reply {
                Reply::Number(n) => Some(n),
                _ => None,
            },
        )
        .0
    }
    fn remove_objects(&self, ids: &[NodeId]) -> Result<Written, StorageError> {
        self.call(
            &Request::RemoveObjects(ids.to_vec()),
            |s| s.remove_objects(ids),
            |reply| match reply {
                Reply::Written { objects, bytes } => Some(Written {
                    objects: objects as usize,
                    bytes: bytes as usize,
                }),
                _ => None,
            },
        )
        .0
    }
}

/// `objects` cut into consecutive parts of about `limit` bytes (at least one object each).
fn parts(objects: &[StoredObject], limit: usize) -> Vec<&[StoredObject]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, object) in objects.iter().enumerate() {
        bytes += object.bytes.len();
        if bytes >= limit {
            parts.push(&objects[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < objects.len() {
        parts.push(&objects[start..]);
    }
    parts
}

/// A client's staging: objects are sent to the holder every [`STAGE_SEND_BYTES`], and whatever
/// is left on commit. Dropping it leaves what was already sent in the store, unreachable.
struct SentStaging<'s> {
    storage: &'s SharedStorage,
    pending: Vec<StoredObject>,
    pending_bytes: usize,
    written: Written,
}

impl SentStaging<'_> {
    fn send(&mut self) -> Result<(), StorageError> {
        let written = self.storage.put_objects(&self.pending)?;
        self.written.objects += written.objects;
        self.written.bytes += written.bytes;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}

impl Staging for SentStaging<'_> {
    fn add(&mut self, id: &NodeId, bytes: &[u8]) -> Result<(), StorageError> {
        self.pending.push(StoredObject {
            id: *id,
            bytes: bytes.to_vec(),
        });
        self.pending_bytes += bytes.len();
        if self.pending_bytes >= STAGE_SEND_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<Written, StorageError> {
        self.send()?;
        Ok(self.written)
    }
}

// ---- Listings -------------------------------------------------------------------------------

/// What a listing lists. Both are in key order (object ids, ref keys), which is what lets a
/// listing resume after the last key it yielded.
enum Listing {
    Objects,
    Refs(Vec<u8>),
}

type Entries<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + 'a>;

/// The entries of `listing` whose key comes after `after`; errors are kept where they fall.
fn entries<'a>(storage: &'a dyn Storage, listing: &Listing, after: Option<Vec<u8>>) -> Entries<'a> {
    let all: Entries<'a> = match listing {
        Listing::Objects => Box::new(
            storage
                .objects()
                .map(|entry| entry.map(|(id, bytes)| (id.as_bytes().to_vec(), bytes))),
        ),
        Listing::Refs(prefix) => storage.refs(prefix),
    };
    match after {
        None => all,
        Some(after) => Box::new(all.filter(move |entry| match entry {
            Ok((key, _)) => *key > after,
            Err(_) => true,
        })),
    }
}

/// A listing read from the holder, chunk by chunk. It keeps its connection until the end
/// (then the connection goes back to the pool) or until it is dropped (then the connection is
/// closed: the holder stops sending). A lost connection resumes the listing after the last key
/// yielded, from the new holder or from this process; errors the listing yielded before are
/// skipped when the resumed one repeats them.
struct Stream<'a> {
    shared: &'a SharedStorage,
    listing: Listing,
    source: Source<'a>,
    after: Option<Vec<u8>>,
    yielded_errors: usize,
    skip_errors: usize,
    retry: Retry,
}

type WireEntry = Result<(ByteBuf, ByteBuf), WireError>;

enum Source<'a> {
    NotStarted,
    Local(Entries<'a>),
    Remote {
        conn: Conn,
        chunk: std::vec::IntoIter<WireEntry>,
    },
    Finished,
}

impl Iterator for Stream<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match &mut self.source {
                Source::Finished => return None,
                Source::NotStarted => {
                    match self.shared.start(&self.listing, self.after.clone()) {
                        Ok(source) => self.source = source,
                        Err(e) => {
                            self.source = Source::Finished;
                            return Some(Err(e));
                        }
                    }
                    continue;
                }
                Source::Local(entries) => match entries.next() {
                    Some(entry) => entry,
                    None => {
                        self.source = Source::Finished;
                        return None;
                    }
                },
                Source::Remote { conn, chunk } => match chunk.next() {
                    Some(entry) => entry
                        .map(|(key, value)| (key.into_vec(), value.into_vec()))
                        .map_err(StorageError::from),
                    None => match conn.receive() {
                        Ok(Reply::Items(items)) => {
                            *chunk = items.into_iter();
                            self.retry = Retry::default();
                            continue;
                        }
                        Ok(Reply::End) => {
                            let finished = std::mem::replace(&mut self.source, Source::Finished);
                            if let Source::Remote { conn, .. } = finished {
                                self.shared.release(conn);
                            }
                            return None;
                        }
                        Ok(Reply::Error(e)) => {
                            self.source = Source::Finished;
                            return Some(Err(e.into()));
                        }
                        Ok(_) => {
                            self.source = Source::Finished;
                            return Some(Err(unexpected_reply("listing")));
                        }
                        Err(e) => {
                            if let Err(e) = self.retry.lost(self.shared, e) {
                                self.source = Source::Finished;
                                return Some(Err(e));
                            }
                            self.skip_errors = self.yielded_errors;
                            self.source = Source::NotStarted;
                            continue;
                        }
                    },
                },
            };
            match entry {
                Err(_) if self.skip_errors > 0 => self.skip_errors -= 1,
                Err(e) => {
                    self.yielded_errors += 1;
                    return Some(Err(e));
                }
                Ok((key, value)) => {
                    self.after = Some(key.clone());
                    return Some(Ok((key, value)));
                }
            }
        }
    }
}

// ---- The wire -------------------------------------------------------------------------------

/// A call from a client: one per [`Storage`] method, plus the greeting that opens every
/// connection. Frames are `u32le length || postcard`.
#[derive(Debug, Serialize, Deserialize)]
enum Request<'a> {
    Hello {
        version: u32,
    },
    GetObject(NodeId),
    ContainsObject(NodeId),
    PutObjects(#[serde(borrow)] Vec<WireObject<'a>>),
    /// Answered by [`Reply::Items`] chunks, then [`Reply::End`].
    Objects {
        #[serde(borrow)]
        after: Option<&'a Bytes>,
    },
    ObjectCount,
    GetRef(#[serde(borrow)] &'a Bytes),
    UpdateRefs(#[serde(borrow)] Vec<WireRefUpdate<'a>>),
    /// Answered by [`Reply::Items`] chunks, then [`Reply::End`].
    Refs {
        #[serde(borrow)]
        prefix: &'a Bytes,
        #[serde(borrow)]
        after: Option<&'a Bytes>,
    },
    GetSetting(&'a str),
    SetSetting {
        key: &'a str,
        #[serde(borrow)]
        value: &'a Bytes,
    },
    Flush,
    SizeOnDisk,
    /// Garbage collection (`store::gc`); answered by [`Reply::Written`] (what was removed).
    RemoveObjects(Vec<NodeId>),
}

impl Request<'_> {
    fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::GetObject(_) => "get_object",
            Request::ContainsObject(_) => "contains_object",
            Request::PutObjects(_) => "put_objects",
            Request::Objects { .. } => "objects",
            Request::ObjectCount => "object_count",
            Request::GetRef(_) => "get_ref",
            Request::UpdateRefs(_) => "update_refs",
            Request::Refs { .. } => "refs",
            Request::GetSetting(_) => "get_setting",
            Request::SetSetting { .. } => "set_setting",
            Request::Flush => "flush",
            Request::SizeOnDisk => "size_on_disk",
            Request::RemoveObjects(_) => "remove_objects",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WireObject<'a> {
    id: NodeId,
    #[serde(borrow)]
    bytes: &'a Bytes,
}

impl<'a> From<&'a StoredObject> for WireObject<'a> {
    fn from(object: &'a StoredObject) -> Self {
        WireObject {
            id: object.id,
            bytes: Bytes::new(&object.bytes),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WireRefUpdate<'a> {
    #[serde(borrow)]
    key: &'a Bytes,
    #[serde(borrow)]
    expected: Option<&'a Bytes>,
    #[serde(borrow)]
    new: Option<&'a Bytes>,
}

impl<'a> From<&'a RefUpdate> for WireRefUpdate<'a> {
    fn from(update: &'a RefUpdate) -> Self {
        WireRefUpdate {
            key: Bytes::new(&update.key),
            expected: update.expected.as_deref().map(Bytes::new),
            new: update.new.as_deref().map(Bytes::new),
        }
    }
}

/// The holder's answer to one [`Request`].
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Hello {
        version: u32,
    },
    Bytes(Option<ByteBuf>),
    Bool(bool),
    Written {
        objects: u64,
        bytes: u64,
    },
    Number(u64),
    Done,
    /// A chunk of a listing: entries in key order (object ids for `Objects`), or errors where
    /// the listing met them.
    Items(Vec<WireEntry>),
    End,
    Error(WireError),
}

/// A [`StorageError`] on the wire; it comes back out as the same variant.
#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    Backend(String),
    Conflict {
        key: String,
        current: Option<ByteBuf>,
    },
    Locked {
        path: String,
    },
}

impl From<&StorageError> for WireError {
    fn from(e: &StorageError) -> Self {
        match e {
            StorageError::Backend(message) => WireError::Backend(message.clone()),
            StorageError::Conflict { key, current } => WireError::Conflict {
                key: key.clone(),
                current: current.clone().map(ByteBuf::from),
            },
            StorageError::Locked { path } => WireError::Locked { path: path.clone() },
        }
    }
}

impl From<WireError> for StorageError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Backend(message) => StorageError::Backend(message),
            WireError::Conflict { key, current } => StorageError::Conflict {
                key,
                current: current.map(ByteBuf::into_vec),
            },
            WireError::Locked { path } => StorageError::Locked { path },
        }
    }
}

/// Writes one frame. std sends on Unix sockets with `MSG_NOSIGNAL`, so a peer that hung up is
/// an `EPIPE` error here, not a SIGPIPE, although `main` restores SIGPIPE's default action.
fn write_frame(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    let frame = postcard::to_extend(value, vec![0u8; 4])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, above the limit of {MAX_FRAME}"),
        ));
    }
    let mut frame = frame;
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    out.write_all(&frame)
}

fn read_frame(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, above the limit of {MAX_FRAME}"),
        ));
    }
    // Memory follows the bytes that arrive, never the announced length: a peer on the socket
    // that announces 1 GiB and sends nothing costs nothing (a `vec![0; len]` would commit it).
    let mut frame = Vec::new();
    input.take(len as u64).read_to_end(&mut frame)?;
    if frame.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the connection ended inside a frame ({} of {len} bytes)",
                frame.len()
            ),
        ));
    }
    Ok(frame)
}

/// A client's connection to the holder.
struct Conn {
    stream: UnixStream,
}

impl Conn {
    /// Connects and greets; a holder of another wire version counts as not answering.
    fn dial(socket: &Path) -> io::Result<Conn> {
        let stream = UnixStream::connect(socket)?;
        let mut conn = Conn { stream };
        conn.send(&Request::Hello {
            version: WIRE_VERSION,
        })?;
        match conn.receive()? {
            Reply::Hello {
                version: WIRE_VERSION,
            } => Ok(conn),
            other => Err(io::Error::other(format!(
                "the holder greets with {other:?}, not wire version {WIRE_VERSION}"
            ))),
        }
    }

    fn send(&mut self, request: &Request<'_>) -> io::Result<()> {
        write_frame(&mut self.stream, request)
    }

    fn receive(&mut self) -> io::Result<Reply> {
        let frame = read_frame(&mut self.stream)?;
        postcard::from_bytes(&frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

// ---- The holder's server --------------------------------------------------------------------

/// The holder's socket server: an accept thread and a thread per connection. Dropping it stops
/// the accepting, removes the socket, closes every connection, so clients fail over at once, and
/// then waits until no connection thread is left: a request that was being carried out finishes
/// first (a write is applied *and flushed*), so the store is never let go of with a write that
/// readers may have seen but that is not durable (SPEC.md §6.1, "Letting go").
struct Server {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    /// A handle on each open connection, to close it on drop.
    connections: Arc<Mutex<HashMap<u64, UnixStream>>>,
    /// Connection threads still running (or about to be started).
    active: Arc<Active>,
}

/// A count of running connection threads that [`Server::drop`] can wait to reach zero.
#[derive(Default)]
struct Active {
    count: Mutex<usize>,
    zero: Condvar,
}

impl Active {
    /// Counts one connection thread until the returned guard is dropped.
    fn enter(self: &Arc<Self>) -> ActiveGuard {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        ActiveGuard(self.clone())
    }

    /// Blocks until every counted connection thread has ended.
    fn wait_for_none(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            count = self
                .zero
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// One counted connection thread; dropping it (the thread ended, or never started) uncounts it.
struct ActiveGuard(Arc<Active>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count -= 1;
        if *count == 0 {
            self.0.zero.notify_all();
        }
    }
}

impl Server {
    /// Serves `storage` on `<store>/tapes.sock`; `None` (logged) if that cannot be done, in
    /// which case other processes wait for the lock.
    fn start(store: &Path, storage: Arc<dyn Storage>) -> Option<Server> {
        use std::os::unix::fs::PermissionsExt;
        let socket = store.join(SOCKET_NAME);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            tracing::debug!(socket = %socket.display(), "the socket path is too long for a Unix socket; other processes will wait for the lock instead");
            return None;
        }
        // We hold the lock, so a socket file left here is a dead holder's.
        let _ = std::fs::remove_file(&socket);
        let listener = match UnixListener::bind(&socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(socket = %socket.display(), error = %e, "cannot serve the store; other processes will wait for the lock instead");
                return None;
            }
        };
        // Only this user may talk to the store (the bind used the umask).
        if let Err(e) = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)) {
            tracing::debug!(socket = %socket.display(), error = %e, "cannot make the socket private; not serving the store");
            let _ = std::fs::remove_file(&socket);
            return None;
        }
        match Server::run(listener, socket.clone(), storage) {
            Ok(server) => {
                tracing::debug!(socket = %socket.display(), "serving the store to other tapes processes");
                Some(server)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot start the store's server thread");
                let _ = std::fs::remove_file(&socket);
                None
            }
        }
    }

    fn run(
        listener: UnixListener,
        socket: PathBuf,
        storage: Arc<dyn Storage>,
    ) -> io::Result<Server> {
        let server = Server {
            socket,
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(HashMap::new())),
            active: Arc::new(Active::default()),
        };
        let (stop, connections, active) = (
            server.stop.clone(),
            server.connections.clone(),
            server.active.clone(),
        );
        std::thread::Builder::new()
            .name("tapes-store-server".into())
            .spawn(move || accept_loop(listener, storage, stop, connections, active))?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag and ends.
        let _ = UnixStream::connect(&self.socket);
        let _ = std::fs::remove_file(&self.socket);
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for stream in connections.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // A connection thread may be carrying out a request: sled has applied a client's ref
        // update, other clients may already have listed it, and its flush is still running.
        // Letting go now (the process exits right after, killing that thread) would lose a
        // write that readers saw, and the next holder would show fewer sessions than they did.
        // The shut-down sockets end every other thread at its next read or write.
        let started = Instant::now();
        self.active.wait_for_none();
        tracing::debug!(
            socket = %self.socket.display(),
            waited_ms = started.elapsed().as_millis() as u64,
            "stopped serving the store"
        );
    }
}

fn accept_loop(
    listener: UnixListener,
    storage: Arc<dyn Storage>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<HashMap<u64, UnixStream>>>,
    active: Arc<Active>,
) {
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) if stop.load(Ordering::SeqCst) => {
                tracing::debug!(error = %e, "accept failed while stopping");
                break;
            }
            Err(e) => {
                // Out of file descriptors, most likely: the client retries.
                tracing::debug!(error = %e, "cannot accept a connection to the store");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        // Counted and registered before the flag is read, so that `Server::drop` either waits
        // for and closes this connection or this loop sees the flag. A connection that cannot
        // be registered could not be closed on drop, so it is not served: the client retries.
        let guard = active.enter();
        match stream.try_clone() {
            Ok(handle) => {
                connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, handle);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot keep a handle on a store connection; closing it");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
        }
        if stop.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            break;
        }
        let (storage, stop, connections) = (storage.clone(), stop.clone(), connections.clone());
        let spawned = std::thread::Builder::new()
            .name("tapes-store-conn".into())
            .spawn(move || {
                serve_connection(stream, storage.as_ref(), &stop);
                connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                drop(guard);
            });
        if let Err(e) = spawned {
            // The stream went with the closure and is closed: the client retries.
            tracing::debug!(error = %e, "cannot start a thread for a store connection");
        }
    }
}

/// Answers one client until it hangs up or the server stops.
fn serve_connection(mut stream: UnixStream, storage: &dyn Storage, stop: &AtomicBool) {
    loop {
        let Ok(frame) = read_frame(&mut stream) else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let request: Request<'_> = match postcard::from_bytes(&frame) {
            Ok(request) => request,
            Err(e) => {
                let error = WireError::Backend(format!(
                    "the tapes process holding the store cannot read a request ({e}); use the same tapes version for both"
                ));
                let _ = write_frame(&mut stream, &Reply::Error(error));
                return;
            }
        };
        if let Err(e) = answer(storage, request, &mut stream) {
            tracing::debug!(error = %e, "a store client went away");
            return;
        }
    }
}

/// Carries out one request and sends its reply. Writes are flushed before they are answered:
/// a client never has to remember what it sent (see the module doc).
fn answer(storage: &dyn Storage, request: Request<'_>, out: &mut UnixStream) -> io::Result<()> {
    fn reply<T>(result: Result<T, StorageError>, ok: impl FnOnce(T) -> Reply) -> Reply {
        match result {
            Ok(value) => ok(value),
            Err(e) => Reply::Error(WireError::from(&e)),
        }
    }
    let done = |()| Reply::Done;
    let bytes = |value: Option<Vec<u8>>| Reply::Bytes(value.map(ByteBuf::from));
    let reply = match request {
        Request::Hello { .. } => Reply::Hello {
            version: WIRE_VERSION,
        },
        Request::GetObject(id) => reply(storage.get_object(&id), bytes),
        Request::ContainsObject(id) => reply(storage.contains_object(&id), Reply::Bool),
        Request::PutObjects(objects) => {
            let objects: Vec<StoredObject> = objects
                .into_iter()
                .map(|o| StoredObject {
                    id: o.id,
                    bytes: o.bytes.to_vec(),
                })
                .collect();
            let written = storage.put_objects(&objects).and_then(|written| {
                if written.objects > 0 {
                    storage.flush()?;
                }
                Ok(written)
            });
            reply(written, |w| Reply::Written {
                objects: w.objects as u64,
                bytes: w.bytes as u64,
            })
        }
        Request::Objects { after } => {
            let after = after.map(|a| a.to_vec());
            return send_entries(out, entries(storage, &Listing::Objects, after));
        }
        Request::ObjectCount => Reply::Number(storage.object_count() as u64),
        Request::GetRef(key) => reply(storage.get_ref(key), bytes),
        Request::UpdateRefs(updates) => {
            let updates: Vec<RefUpdate> = updates
                .into_iter()
                .map(|u| RefUpdate {
                    key: u.key.to_vec(),
                    expected: u.expected.map(|b| b.to_vec()),
                    new: u.new.map(|b| b.to_vec()),
                })
                .collect();
            reply(
                storage.update_refs(&updates).and_then(|()| storage.flush()),
                done,
            )
        }
        Request::Refs { prefix, after } => {
            let listing = Listing::Refs(prefix.to_vec());
            let after = after.map(|a| a.to_vec());
            return send_entries(out, entries(storage, &listing, after));
        }
        Request::GetSetting(key) => reply(storage.get_setting(key), bytes),
        Request::SetSetting { key, value } => reply(
            storage
                .set_setting(key, value)
                .and_then(|()| storage.flush()),
            done,
        ),
        Request::Flush => reply(storage.flush(), done),
        Request::SizeOnDisk => reply(storage.size_on_disk(), Reply::Number),
        Request::RemoveObjects(ids) => reply(storage.remove_objects(&ids), |w| Reply::Written {
            objects: w.objects as u64,
            bytes: w.bytes as u64,
        }),
    };
    write_frame(out, &reply)
}

/// Sends a listing as chunks of about [`CHUNK_BYTES`], then the end marker.
fn send_entries(out: &mut UnixStream, entries: Entries<'_>) -> io::Result<()> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        bytes += match &entry {
            Ok((key, value)) => key.len() + value.len(),
            Err(_) => 64,
        };
        chunk.push(
            entry
                .map(|(key, value)| (ByteBuf::from(key), ByteBuf::from(value)))
                .map_err(|e| WireError::from(&e)),
        );
        if bytes >= CHUNK_BYTES {
            write_frame(out, &Reply::Items(std::mem::take(&mut chunk)))?;
            bytes = 0;
        }
    }
    if !chunk.is_empty() {
        write_frame(out, &Reply::Items(chunk))?;
    }
    write_frame(out, &Reply::End)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: usize) -> StoredObject {
        let bytes = format!("object {n} {}", "x".repeat(n % 300)).into_bytes();
        StoredObject {
            id: NodeId(*blake3::hash(&bytes).as_bytes()),
            bytes,
        }
    }

    fn upd(key: &str, expected: Option<&str>, new: Option<&str>) -> RefUpdate {
        RefUpdate {
            key: key.as_bytes().to_vec(),
            expected: expected.map(|s| s.as_bytes().to_vec()),
            new: new.map(|s| s.as_bytes().to_vec()),
        }
    }

    fn store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        (dir, path)
    }

    #[test]
    fn a_frame_allocates_for_the_bytes_that_arrived_not_the_announced_length() {
        // A frame that announces 1 GiB and then ends after 10 bytes: an error, and the buffer
        // never held more than what came.
        let mut wire = ((MAX_FRAME) as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&[7; 10]);
        let err = read_frame(&mut wire.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("10 of"), "{err}");
        // A reader that counts what the frame buffer asked for: no reservation of the
        // announced length up front.
        struct Probe<'a> {
            bytes: &'a [u8],
            largest_ask: usize,
        }
        impl Read for Probe<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.largest_ask = self.largest_ask.max(buf.len());
                self.bytes.read(buf)
            }
        }
        let mut probe = Probe {
            bytes: &wire,
            largest_ask: 0,
        };
        assert!(read_frame(&mut probe).is_err());
        assert!(probe.largest_ask < 1 << 20, "{}", probe.largest_ask);
        // A whole frame still reads back.
        let mut good = Vec::new();
        write_frame(&mut good, &Request::Flush).unwrap();
        let frame = read_frame(&mut good.as_slice()).unwrap();
        assert_eq!(frame.len() + 4, good.len());
        // Longer than the limit: refused before reading the body.
        let too_long = ((MAX_FRAME + 1) as u32).to_le_bytes();
        let err = read_frame(&mut too_long.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_second_opener_works_through_the_holder() {
        let (_dir, path) = store();
        let holder = SharedStorage::open(&path).unwrap();
        assert!(holder.is_holder());
        assert!(path.join(SOCKET_NAME).exists());
        let client = SharedStorage::open(&path).unwrap();
        assert!(!client.is_holder());

        let batch: Vec<StoredObject> = (0..5000).map(object).collect();
        let written = client.put_objects(&batch).unwrap();
        assert_eq!(written.objects, 5000);
        assert_eq!(
            client.put_objects(&batch[..10]).unwrap(),
            Written::default()
        );
        client.flush().unwrap();
        client
            .update_refs(&[
                upd("session/a", None, Some("1")),
                upd("session/b", None, Some("2")),
            ])
            .unwrap();
        client.set_setting("k", b"v").unwrap();

        // Both see the same store.
        for s in [&holder, &client] {
            assert_eq!(
                s.get_object(&batch[42].id).unwrap().unwrap(),
                batch[42].bytes
            );
            assert!(s.contains_object(&batch[4999].id).unwrap());
            assert!(!s.contains_object(&object(99_999).id).unwrap());
            assert_eq!(s.object_count(), 5000);
            assert_eq!(s.get_ref(b"session/b").unwrap().unwrap(), b"2");
            assert_eq!(s.get_setting("k").unwrap().unwrap(), b"v");
            assert!(s.size_on_disk().unwrap() > 0);
            let refs: Vec<_> = s.refs(b"session/").map(|r| r.unwrap().0).collect();
            assert_eq!(refs, vec![b"session/a".to_vec(), b"session/b".to_vec()]);
        }
        let listed: Vec<NodeId> = client.objects().map(|r| r.unwrap().0).collect();
        let mut expected: Vec<NodeId> = batch.iter().map(|o| o.id).collect();
        expected.sort();
        assert_eq!(
            listed, expected,
            "listing through the holder, across chunks"
        );

        // A stale compare-and-swap fails the same way as locally.
        match client.update_refs(&[upd("session/a", None, Some("3"))]) {
            Err(StorageError::Conflict { current, .. }) => assert_eq!(current.unwrap(), b"1"),
            other => panic!("expected a conflict, got {other:?}"),
        }

        // A staging larger than one send.
        let big: Vec<StoredObject> = (0..3)
            .map(|i| {
                let bytes = vec![i as u8; 5 << 20];
                StoredObject {
                    id: NodeId(*blake3::hash(&bytes).as_bytes()),
                    bytes,
                }
            })
            .collect();
        let mut staging = client.stage().unwrap();
        for o in &big {
            staging.add(&o.id, &o.bytes).unwrap();
        }
        assert_eq!(staging.commit().unwrap().objects, 3);
        assert!(holder.contains_object(&big[2].id).unwrap());
    }

    #[test]
    fn a_client_takes_over_when_the_holder_goes_mid_listing() {
        let (_dir, path) = store();
        let holder = SharedStorage::open(&path).unwrap();
        // Refs of 64 KiB each: 200 of them make several chunks.
        let updates: Vec<RefUpdate> = (0..200)
            .map(|i| RefUpdate {
                key: format!("r/{i:04}").into_bytes(),
                expected: None,
                new: Some(vec![i as u8; 64 << 10]),
            })
            .collect();
        holder.update_refs(&updates).unwrap();
        holder.flush().unwrap();

        let client = SharedStorage::open(&path).unwrap();
        let mut listing = client.refs(b"r/");
        let mut keys: Vec<Vec<u8>> = listing.by_ref().take(10).map(|r| r.unwrap().0).collect();
        drop(holder);
        keys.extend(listing.map(|r| r.unwrap().0));
        let expected: Vec<Vec<u8>> = updates.iter().map(|u| u.key.clone()).collect();
        assert_eq!(keys, expected, "every ref once, in order");
        assert!(client.is_holder(), "the client took the store over");
        assert_eq!(client.get_ref(b"r/0199").unwrap().unwrap().len(), 64 << 10);
    }

    #[test]
    fn applied_means_every_ref_holds_its_new_value() {
        let store = std::collections::HashMap::from([(b"a".to_vec(), b"2".to_vec())]);
        let get = |key: &[u8]| Ok(store.get(key).cloned());
        assert!(already_applied(&[upd("a", Some("1"), Some("2"))], get).unwrap());
        assert!(already_applied(&[upd("gone", Some("1"), None)], get).unwrap());
        assert!(!already_applied(&[upd("a", None, Some("3"))], get).unwrap());
        assert!(!already_applied(
            &[upd("a", Some("1"), Some("2")), upd("b", None, Some("1"))],
            get
        )
        .unwrap());
    }

    /// The holder applies a ref update and goes away before answering; the client sends it
    /// again, meets its own update as a conflict, and reports success.
    #[test]
    fn a_ref_update_resent_after_it_landed_succeeds() {
        let (_dir, path) = store();
        let storage = Arc::new(SledStorage::open(&path).unwrap());
        let socket = path.join(SOCKET_NAME);
        let listener = UnixListener::bind(&socket).unwrap();
        let served = storage.clone();
        let server = std::thread::spawn(move || {
            // First connection: greet, apply the update, hang up without an answer.
            let (mut stream, _) = listener.accept().unwrap();
            let hello = read_frame(&mut stream).unwrap();
            assert!(matches!(
                postcard::from_bytes::<Request<'_>>(&hello).unwrap(),
                Request::Hello { .. }
            ));
            write_frame(
                &mut stream,
                &Reply::Hello {
                    version: WIRE_VERSION,
                },
            )
            .unwrap();
            let frame = read_frame(&mut stream).unwrap();
            let Request::UpdateRefs(updates) = postcard::from_bytes(&frame).unwrap() else {
                panic!("expected update_refs");
            };
            let updates: Vec<RefUpdate> = updates
                .into_iter()
                .map(|u| RefUpdate {
                    key: u.key.to_vec(),
                    expected: u.expected.map(|b| b.to_vec()),
                    new: u.new.map(|b| b.to_vec()),
                })
                .collect();
            served.update_refs(&updates).unwrap();
            served.flush().unwrap();
            drop(stream);
            // Then a real server on the same socket.
            let storage: Arc<dyn Storage> = served;
            Server::run(listener, socket, storage).unwrap()
        });

        let client = SharedStorage::open(&path).unwrap();
        assert!(!client.is_holder());
        client
            .update_refs(&[upd("session/x", None, Some("mine"))])
            .unwrap();
        assert_eq!(storage.get_ref(b"session/x").unwrap().unwrap(), b"mine");
        // A conflict that was not caused by a resend still fails.
        assert!(matches!(
            client.update_refs(&[upd("session/x", None, Some("other"))]),
            Err(StorageError::Conflict { .. })
        ));
        drop(server.join().unwrap());
    }

    /// A store whose ref updates take a while, and which records whether a flush followed the
    /// last one.
    struct SlowRefs {
        inner: Arc<SledStorage>,
        entered: Mutex<std::sync::mpsc::Sender<()>>,
        flushed_after_update: AtomicBool,
    }

    impl Storage for SlowRefs {
        fn get_object(&self, id: &NodeId) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get_object(id)
        }
        fn contains_object(&self, id: &NodeId) -> Result<bool, StorageError> {
            self.inner.contains_object(id)
        }
        fn put_objects(&self, objects: &[StoredObject]) -> Result<Written, StorageError> {
            self.inner.put_objects(objects)
        }
        fn objects(
            &self,
        ) -> Box<dyn Iterator<Item = Result<(NodeId, Vec<u8>), StorageError>> + '_> {
            self.inner.objects()
        }
        fn object_count(&self) -> usize {
            self.inner.object_count()
        }
        fn get_ref(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get_ref(key)
        }
        fn update_refs(&self, updates: &[RefUpdate]) -> Result<(), StorageError> {
            let _ = self
                .entered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(());
            std::thread::sleep(Duration::from_millis(300));
            self.flushed_after_update.store(false, Ordering::SeqCst);
            self.inner.update_refs(updates)
        }
        fn refs(
            &self,
            prefix: &[u8],
        ) -> Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + '_> {
            self.inner.refs(prefix)
        }
        fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get_setting(key)
        }
        fn set_setting(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
            self.inner.set_setting(key, value)
        }
        fn flush(&self) -> Result<(), StorageError> {
            self.inner.flush()?;
            self.flushed_after_update.store(true, Ordering::SeqCst);
            Ok(())
        }
        fn size_on_disk(&self) -> Result<u64, StorageError> {
            self.inner.size_on_disk()
        }
    }

    /// The holder lets go while it is carrying out a client's ref update (SPEC.md §6.1,
    /// "Letting go"): it waits until the update is applied and flushed, because other clients
    /// may have listed it already; a process that exited at once would lose it. The client,
    /// cut off before the answer, sends it again to the next holder and is told it is done.
    #[test]
    fn letting_go_waits_for_a_write_in_flight() {
        let (_dir, path) = store();
        let inner = Arc::new(SledStorage::open(&path).unwrap());
        let (entered, in_flight) = std::sync::mpsc::channel();
        let slow = Arc::new(SlowRefs {
            inner: inner.clone(),
            entered: Mutex::new(entered),
            flushed_after_update: AtomicBool::new(false),
        });
        let socket = path.join(SOCKET_NAME);
        let listener = UnixListener::bind(&socket).unwrap();
        let served: Arc<dyn Storage> = slow.clone();
        let server = Server::run(listener, socket, served).unwrap();

        let client_path = path.clone();
        let client = std::thread::spawn(move || {
            let client = SharedStorage::open(&client_path)?;
            assert!(!client.is_holder());
            client.update_refs(&[upd("session/x", None, Some("mine"))])?;
            client.get_ref(b"session/x")
        });
        in_flight
            .recv_timeout(Duration::from_secs(30))
            .expect("the holder received the update");
        drop(server);
        assert_eq!(
            inner.get_ref(b"session/x").unwrap().as_deref(),
            Some(&b"mine"[..]),
            "the update in flight was carried out before the holder let go"
        );
        assert!(
            slow.flushed_after_update.load(Ordering::SeqCst),
            "and flushed"
        );
        // Let go of sled too: the client becomes the holder and finishes its call.
        drop(slow);
        drop(inner);
        let seen = client.join().unwrap().unwrap();
        assert_eq!(seen.as_deref(), Some(&b"mine"[..]));
    }

    #[test]
    fn parts_cut_a_batch_by_size() {
        let objects: Vec<StoredObject> = (0..10)
            .map(|i| StoredObject {
                id: NodeId([i as u8; 32]),
                bytes: vec![0; 40],
            })
            .collect();
        let cut = parts(&objects, 100);
        assert_eq!(
            cut.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert!(parts(&[], 100).is_empty());
    }
}
