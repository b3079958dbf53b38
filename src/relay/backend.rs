//! Where a relay keeps its state (SPEC.md §16.2, §16.13): the [`RelayBackend`] trait, with two
//! back ends. [`LocalBackend`] is the embedded default, the relay's own tapes store under
//! `--data DIR` (the refs and objects of §16.2, unchanged). [`BucketBackend`] keeps the same
//! records in an S3-compatible bucket (`tapes relay --store s3://bucket/prefix`), so that several
//! relay processes serve the same teams; each process keeps only its identity key and a bounded
//! cache of blobs on its own disk.
//!
//! The trait is a small key-value store with compare-and-swap: every record is read with a
//! version (an ETag in a bucket, a hash of the bytes locally) and written only if it is still at
//! the version read ([`RelayBackend::put`] with `expected`), or only if absent. [`RelayState`]
//! (`super::state`) applies the relay's rules on top; it never holds a lock across processes.
//! Blobs are content-addressed and immutable, so they are written without a condition and
//! cached freely.
//!
//! Records (keys relative to the back end's root; `<scope>` is a team id in hex or `public`):
//!
//! | key | value |
//! |---|---|
//! | `team/<team hex>` | the verified chain (§16.2) |
//! | `s/<scope>/<session hex>` | [`SessionDoc`]: the deposit record and its chain's ids together |
//! | `usage/<scope>` | postcard `Usage` |
//! | `join/<team hex>/<joiner hex>` | postcard `JoinWait` |
//!
//! A bucket also holds `blobs/<blob id hex>`, `relay.toml` (the quotas, §16.8) and
//! `tapes-relay.json` (its format, checked at start).
//!
//! [`RelayState`]: super::RelayState

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};
use serde::{Deserialize, Serialize};
use tapes_protocol::{NodeId, StoredObject};

use super::RelayError;
use crate::store::backend::{RefUpdate, StorageError};
use crate::store::{Store, StoreError};

/// Segment blobs are not nodes: their ids hash in their own context (SPEC.md §1), so they can
/// never be mistaken for one.
pub(crate) fn blob_id(bytes: &[u8]) -> NodeId {
    let mut h = blake3::Hasher::new_derive_key("tapes 2026-11 relay blob v1");
    h.update(bytes);
    NodeId(*h.finalize().as_bytes())
}

/// The bucket layout this relay writes (`tapes-relay.json`); a bucket of a newer format is
/// refused at start.
pub const BUCKET_FORMAT: u32 = 1;

/// The object that names a bucket's format.
const FORMAT_KEY: &str = "tapes-relay.json";

/// The quotas of relays over a bucket (§16.8).
pub const SETTINGS_KEY: &str = "relay.toml";

/// A record and the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub bytes: Vec<u8>,
    /// Opaque: a bucket's ETag, or a hash of the bytes in the local store.
    pub tag: String,
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The record was no longer at the expected version (or already existed): another
    /// request, in this process or another, changed it first. Nothing was written.
    Lost,
}

/// A deposited session as one record: the `Deposited` record and its chain's ids (32 bytes
/// each), which a deposit changes together. In a bucket they are one object, so one
/// conditional write changes both; the local store keeps them in two refs changed in one
/// transaction (§16.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDoc {
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub ids: Vec<u8>,
}

impl SessionDoc {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard encoding to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionDoc, RelayError> {
        postcard::from_bytes(bytes)
            .map_err(|e| RelayError::Damaged(format!("deposited session: {e}")))
    }
}

/// The relay's records and blobs (module docs). Calls block; the relay calls them from
/// `block_in_place` or plain threads.
pub trait RelayBackend: Send + Sync {
    /// Where the state lives, for logs and errors (`local store <dir>`, `s3://bucket/prefix`).
    fn describe(&self) -> String;

    /// The record at `key`, with its version.
    fn get(&self, key: &str) -> Result<Option<Versioned>, RelayError>;

    /// Every record directly under `prefix` (which ends in `/`), by full key.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, RelayError>;

    /// Writes `bytes` at `key` if the record is still at `expected`, or, with `None`, if there
    /// is none. [`Written::Lost`] when it was not.
    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expected: Option<&Versioned>,
    ) -> Result<Written, RelayError>;

    /// Removes the record at `key`, read at `expected` (§16.13: a bucket removes it whatever
    /// its version, which only the join mailbox does, for an answer already delivered).
    fn delete(&self, key: &str, expected: &Versioned) -> Result<(), RelayError>;

    /// Stores blobs durably (content-addressed: writing one twice changes nothing).
    fn put_blobs(&self, blobs: &[StoredObject]) -> Result<(), RelayError>;

    /// A stored blob.
    fn blob(&self, id: &NodeId) -> Result<Option<Vec<u8>>, RelayError>;

    /// Deletes blobs no record names any more (retention, `relay::retention`); ids not
    /// stored are skipped.
    fn delete_blobs(&self, ids: &[NodeId]) -> Result<(), RelayError>;
}

fn hash_tag(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The relay's own tapes store (`--data DIR`): records are refs under `relay/` (§16.2), blobs
/// objects; one process per store (its lock), every write a transaction and a flush.
pub struct LocalBackend {
    store: Arc<Store>,
}

impl LocalBackend {
    pub fn new(store: Arc<Store>) -> LocalBackend {
        LocalBackend { store }
    }

    fn storage(&self) -> &dyn crate::store::backend::Storage {
        self.store.storage()
    }

    /// A session key's two refs: the record and the ids.
    fn session_refs(key: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let rest = key.strip_prefix("s/")?;
        Some((
            format!("relay/s/{rest}").into_bytes(),
            format!("relay/ids/{rest}").into_bytes(),
        ))
    }

    fn get_ref(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RelayError> {
        Ok(self.storage().get_ref(key).map_err(StoreError::from)?)
    }

    fn get_session(&self, record: &[u8], ids: &[u8]) -> Result<Option<Versioned>, RelayError> {
        let Some(record) = self.get_ref(record)? else {
            return Ok(None);
        };
        let ids = self.get_ref(ids)?.unwrap_or_default();
        let bytes = SessionDoc { record, ids }.encode();
        Ok(Some(Versioned {
            tag: hash_tag(&bytes),
            bytes,
        }))
    }

    fn write(&self, updates: &[RefUpdate]) -> Result<Written, RelayError> {
        match self.storage().update_refs(updates) {
            Ok(()) => {}
            Err(StorageError::Conflict { .. }) => return Ok(Written::Lost),
            Err(e) => return Err(StoreError::from(e).into()),
        }
        self.storage().flush().map_err(StoreError::from)?;
        Ok(Written::Done)
    }

    fn updates(
        key: &str,
        new: Option<Vec<u8>>,
        expected: Option<&Versioned>,
    ) -> Result<Vec<RefUpdate>, RelayError> {
        match Self::session_refs(key) {
            Some((record_key, ids_key)) => {
                let old = expected.map(|v| SessionDoc::decode(&v.bytes)).transpose()?;
                let new = new.map(|b| SessionDoc::decode(&b)).transpose()?;
                Ok(vec![
                    RefUpdate {
                        key: record_key,
                        expected: old.as_ref().map(|d| d.record.clone()),
                        new: new.as_ref().map(|d| d.record.clone()),
                    },
                    RefUpdate {
                        key: ids_key,
                        // An old record whose ids ref is absent (no objects yet) reads as empty.
                        expected: old
                            .as_ref()
                            .map(|d| d.ids.clone())
                            .filter(|ids| !ids.is_empty()),
                        // Empty ids are kept as no ref, as they are read.
                        new: new.map(|d| d.ids).filter(|ids| !ids.is_empty()),
                    },
                ])
            }
            None => Ok(vec![RefUpdate {
                key: format!("relay/{key}").into_bytes(),
                expected: expected.map(|v| v.bytes.clone()),
                new,
            }]),
        }
    }
}

impl RelayBackend for LocalBackend {
    fn describe(&self) -> String {
        "the relay's local store".into()
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, RelayError> {
        if let Some((record, ids)) = Self::session_refs(key) {
            return self.get_session(&record, &ids);
        }
        Ok(self
            .get_ref(format!("relay/{key}").as_bytes())?
            .map(|bytes| Versioned {
                tag: hash_tag(&bytes),
                bytes,
            }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, RelayError> {
        let full = format!("relay/{prefix}");
        let mut out = Vec::new();
        for item in self.storage().refs(full.as_bytes()) {
            let (key, bytes) = item.map_err(StoreError::from)?;
            let Some(key) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.strip_prefix("relay/"))
                .map(str::to_string)
            else {
                continue;
            };
            // Directly under the prefix only.
            if key[prefix.len()..].contains('/') {
                continue;
            }
            let versioned = match Self::session_refs(&key) {
                Some((record, ids)) => match self.get_session(&record, &ids)? {
                    Some(v) => v,
                    None => continue,
                },
                None => Versioned {
                    tag: hash_tag(&bytes),
                    bytes,
                },
            };
            out.push((key, versioned));
        }
        Ok(out)
    }

    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expected: Option<&Versioned>,
    ) -> Result<Written, RelayError> {
        let updates = Self::updates(key, Some(bytes), expected)?;
        self.write(&updates)
    }

    fn delete(&self, key: &str, expected: &Versioned) -> Result<(), RelayError> {
        let updates = Self::updates(key, None, Some(expected))?;
        self.write(&updates).map(|_| ())
    }

    fn put_blobs(&self, blobs: &[StoredObject]) -> Result<(), RelayError> {
        self.storage()
            .put_objects(blobs)
            .map_err(StoreError::from)?;
        self.storage().flush().map_err(StoreError::from)?;
        Ok(())
    }

    fn blob(&self, id: &NodeId) -> Result<Option<Vec<u8>>, RelayError> {
        Ok(self.storage().get_object(id).map_err(StoreError::from)?)
    }

    fn delete_blobs(&self, ids: &[NodeId]) -> Result<(), RelayError> {
        self.storage()
            .remove_objects(ids)
            .map_err(StoreError::from)?;
        Ok(())
    }
}

/// Why a bucket could not be used. Each says what to check next; none carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("`{0}` is not a bucket URL: write s3://<bucket>/<prefix> (the prefix is optional)")]
    BadUrl(String),
    #[error("cannot use the bucket {url}: {why}")]
    Config { url: String, why: String },
    #[error("the bucket {url} does not exist (or the endpoint does not serve it); create it first (`aws s3 mb s3://<bucket>`), or check --store and --endpoint")]
    NoBucket { url: String },
    #[error("the bucket {url} refused these credentials ({why}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) for an identity that may read and write it")]
    Denied { url: String, why: String },
    #[error("cannot reach the bucket {url}: {why}; check --endpoint, --region and the network, then start again")]
    Unreachable { url: String, why: String },
    #[error("the bucket {url} was written by a newer relay (format {found}; this one knows {BUCKET_FORMAT}); upgrade tapes on this machine")]
    Newer { url: String, found: u32 },
    #[error("the S3 server behind {url} does not honour conditional writes ({why}); relays over one bucket need If-None-Match and If-Match on PutObject (SPEC.md §16.13): use a server that supports them, or run one relay with --data")]
    NoConditionalWrites { url: String, why: String },
    #[error("the bucket {url}: {what} failed: {why}; check the endpoint and retry")]
    Request {
        url: String,
        what: String,
        why: String,
    },
    #[error("the bucket {url} holds a damaged {key}: {why}; restore it from a backup")]
    Damaged {
        url: String,
        key: String,
        why: String,
    },
}

/// Where a relay's shared state lives in a bucket, and how to reach it.
#[derive(Clone)]
pub struct BucketOptions {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible endpoint (`http://host:port`); AWS by default.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Credentials; the usual AWS environment variables when `None`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// The most bytes of blobs cached under `<data>/cache/blobs`.
    pub cache_bytes: u64,
}

impl std::fmt::Debug for BucketOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("BucketOptions")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

impl BucketOptions {
    /// The default cache size: 512 MiB.
    pub const DEFAULT_CACHE_BYTES: u64 = 512 << 20;

    pub fn new(url: &str) -> BucketOptions {
        BucketOptions {
            url: url.to_string(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
        }
    }
}

/// `s3://bucket/prefix` → (bucket, prefix without slashes at its ends).
pub fn parse_bucket_url(url: &str) -> Result<(String, String), BucketError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| BucketError::BadUrl(url.to_string()))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(BucketError::BadUrl(url.to_string()));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// An S3 error without its XML: the HTTP status, the error code and its message when the
/// server sent them, else the client's text.
fn short_reason(text: &str) -> String {
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = start + text[start..].find(close)?;
        Some(text[start..end].trim().to_string())
    };
    let status = between("status code: ", ":");
    match (
        between("<Code>", "</Code>"),
        between("<Message>", "</Message>"),
    ) {
        (Some(code), message) => {
            let mut out = status.map(|s| format!("HTTP {s}, ")).unwrap_or_default();
            out.push_str(&code);
            if let Some(message) = message {
                out.push_str(": ");
                out.push_str(&message);
            }
            out
        }
        (None, _) => text.to_string(),
    }
}

/// Records listed recently, by key: a list whose ETag did not change costs no GET.
struct RecordCache {
    entries: HashMap<String, Versioned>,
    bytes: usize,
}

/// The most bytes of records kept in memory between listings.
const RECORD_CACHE_BYTES: usize = 64 << 20;

/// A bucket as the relay's state (module docs, SPEC.md §16.13).
pub struct BucketBackend {
    url: String,
    prefix: String,
    store: Arc<AmazonS3>,
    /// The bucket client's own runtime: the relay's calls block, the client is async.
    runtime: Option<tokio::runtime::Runtime>,
    records: Mutex<RecordCache>,
    cache: BlobCache,
}

impl BucketBackend {
    /// Connects, checks the bucket (reachable, credentials, exists, format, conditional
    /// writes) and marks its format. Nothing is written before the read-only checks pass.
    pub fn open(options: &BucketOptions, data: &FsPath) -> Result<BucketBackend, BucketError> {
        let (bucket, prefix) = parse_bucket_url(&options.url)?;
        let url = options.url.trim_end_matches('/').to_string();
        // reqwest is built without a default crypto provider: the relay uses ring, as iroh.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            );
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &options.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &options.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| BucketError::Config {
            url: url.clone(),
            why: e.to_string(),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("relay-bucket")
            .enable_all()
            .build()
            .map_err(|e| BucketError::Config {
                url: url.clone(),
                why: format!("cannot start its client threads: {e}"),
            })?;
        let backend = BucketBackend {
            url,
            prefix,
            store: Arc::new(store),
            runtime: Some(runtime),
            records: Mutex::new(RecordCache {
                entries: HashMap::new(),
                bytes: 0,
            }),
            cache: BlobCache::open(&data.join("cache").join("blobs"), options.cache_bytes),
        };
        backend.check()?;
        Ok(backend)
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            return Some(full.to_string());
        }
        full.strip_prefix(&self.prefix)?
            .strip_prefix('/')
            .map(str::to_string)
    }

    /// Runs a request on the client's runtime and waits for it.
    fn block<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, BucketError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().ok_or_else(|| self.stopped())?;
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().map_err(|_| self.stopped())
    }

    fn stopped(&self) -> BucketError {
        BucketError::Request {
            url: self.url.clone(),
            what: "a request".into(),
            why: "the bucket client stopped".into(),
        }
    }

    /// A request's error, classified (module docs); `what` names the request.
    fn fail(&self, what: &str, e: object_store::Error) -> BucketError {
        let url = self.url.clone();
        let why = short_reason(&e.to_string());
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => BucketError::Denied { url, why },
            _ if why.contains("NoSuchBucket") => BucketError::NoBucket { url },
            _ if why.contains("InvalidAccessKeyId")
                || why.contains("SignatureDoesNotMatch")
                || why.contains("AccessDenied")
                || why.contains("403") =>
            {
                BucketError::Denied { url, why }
            }
            _ if why.contains("error sending request")
                || why.contains("connect")
                || why.contains("timed out") =>
            {
                BucketError::Unreachable { url, why }
            }
            _ => BucketError::Request {
                url,
                what: what.to_string(),
                why,
            },
        }
    }

    /// The start-time checks (SPEC.md §16.13): read-only first, then a probe of conditional
    /// writes, then the format mark.
    fn check(&self) -> Result<(), BucketError> {
        let store = self.store.clone();
        let root = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        self.block(async move { store.list_with_delimiter(root.as_ref()).await })?
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => BucketError::NoBucket {
                    url: self.url.clone(),
                },
                e => self.fail("listing", e),
            })?;
        let format = self.get_raw(FORMAT_KEY)?;
        if let Some(found) = &format {
            self.check_format(&found.bytes)?;
        }
        self.probe()?;
        if format.is_none() {
            let mark = serde_json::json!({ "format": BUCKET_FORMAT, "written_by": "tapes relay" });
            let bytes = serde_json::to_vec_pretty(&mark).expect("JSON of a literal");
            if self.put_raw(FORMAT_KEY, bytes, None)? == Written::Lost {
                // Another relay marked it at the same moment: check what it wrote.
                if let Some(found) = self.get_raw(FORMAT_KEY)? {
                    self.check_format(&found.bytes)?;
                }
            }
        }
        Ok(())
    }

    fn check_format(&self, bytes: &[u8]) -> Result<(), BucketError> {
        #[derive(Deserialize)]
        struct Mark {
            format: u32,
        }
        let mark: Mark = serde_json::from_slice(bytes).map_err(|e| BucketError::Damaged {
            url: self.url.clone(),
            key: FORMAT_KEY.into(),
            why: e.to_string(),
        })?;
        if mark.format > BUCKET_FORMAT {
            return Err(BucketError::Newer {
                url: self.url.clone(),
                found: mark.format,
            });
        }
        Ok(())
    }

    /// Proves the server refuses a second create and a stale update: otherwise two relays
    /// could both win one compare-and-swap.
    fn probe(&self) -> Result<(), BucketError> {
        let mut nonce = [0u8; 16];
        let _ = getrandom::fill(&mut nonce);
        let key = format!("probe/{}", hex::encode(nonce));
        let refuse = |why: &str| BucketError::NoConditionalWrites {
            url: self.url.clone(),
            why: why.to_string(),
        };
        let result = (|| {
            if self.put_raw(&key, b"1".to_vec(), None)? != Written::Done {
                return Err(refuse("a create of a new object was refused"));
            }
            let first = self
                .get_raw(&key)?
                .ok_or_else(|| refuse("an object just created is missing"))?;
            if self.put_raw(&key, b"2".to_vec(), None)? != Written::Lost {
                return Err(refuse("If-None-Match: * did not stop a second create"));
            }
            if self.put_raw(&key, b"3".to_vec(), Some(&first))? != Written::Done {
                return Err(refuse("If-Match with the current ETag was refused"));
            }
            if self.put_raw(&key, b"4".to_vec(), Some(&first))? != Written::Lost {
                return Err(refuse("If-Match with a stale ETag did not stop the write"));
            }
            Ok(())
        })();
        let store = self.store.clone();
        let path = self.path(&key);
        let _ = self.block(async move { store.delete(&path).await });
        result
    }

    fn get_raw(&self, key: &str) -> Result<Option<Versioned>, BucketError> {
        let store = self.store.clone();
        let path = self.path(key);
        let got = self.block(async move {
            match store.get(&path).await {
                Ok(result) => {
                    let tag = result.meta.e_tag.clone();
                    result.bytes().await.map(|b| Some((b.to_vec(), tag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        match got.map_err(|e| self.fail(&format!("reading {key}"), e))? {
            None => Ok(None),
            Some((bytes, tag)) => Ok(Some(Versioned {
                bytes,
                tag: tag.unwrap_or_default(),
            })),
        }
    }

    fn put_raw(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expected: Option<&Versioned>,
    ) -> Result<Written, BucketError> {
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.tag.clone()),
                version: None,
            }),
        };
        let store = self.store.clone();
        let path = self.path(key);
        let size = bytes.len();
        let result = self.block(async move {
            store
                .put_opts(&path, PutPayload::from(bytes), PutOptions::from(mode))
                .await
        })?;
        match result {
            Ok(_) => {
                tracing::debug!(key, size, "bucket write");
                Ok(Written::Done)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Written::Lost),
            Err(e) => Err(self.fail(&format!("writing {key}"), e)),
        }
    }

    /// The quotas kept in the bucket (`relay.toml`), if any.
    pub fn settings(&self) -> Result<Option<String>, RelayError> {
        let Some(found) = self.get_raw(SETTINGS_KEY)? else {
            return Ok(None);
        };
        String::from_utf8(found.bytes)
            .map(Some)
            .map_err(|_| RelayError::Config {
                path: self.settings_url(),
                why: "not UTF-8 text".into(),
            })
    }

    /// Where the quotas are, for messages.
    pub fn settings_url(&self) -> String {
        format!("{}/{SETTINGS_KEY}", self.url)
    }

    fn remember(&self, key: &str, value: &Versioned) {
        let mut cache = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if cache.bytes > RECORD_CACHE_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        cache.bytes += value.bytes.len() + key.len();
        if let Some(old) = cache.entries.insert(key.to_string(), value.clone()) {
            cache.bytes = cache.bytes.saturating_sub(old.bytes.len() + key.len());
        }
    }
}

impl Drop for BucketBackend {
    fn drop(&mut self) {
        // The last handle may go away inside the relay's async runtime, where a runtime may
        // not be dropped in place.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl From<BucketError> for RelayError {
    fn from(e: BucketError) -> RelayError {
        RelayError::Bucket(Box::new(e))
    }
}

impl RelayBackend for BucketBackend {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn get(&self, key: &str) -> Result<Option<Versioned>, RelayError> {
        Ok(self.get_raw(key)?)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, RelayError> {
        let store = self.store.clone();
        let root = self.path(prefix.trim_end_matches('/'));
        let listed = self
            .block(async move { store.list_with_delimiter(Some(&root)).await })?
            .map_err(|e| self.fail(&format!("listing {prefix}"), e))?;
        let mut out = Vec::with_capacity(listed.objects.len());
        for meta in listed.objects {
            let Some(key) = self.key_of(&meta.location) else {
                continue;
            };
            let tag = meta.e_tag.unwrap_or_default();
            let cached = {
                let cache = self.records.lock().unwrap_or_else(|p| p.into_inner());
                cache
                    .entries
                    .get(&key)
                    .filter(|v| !tag.is_empty() && v.tag == tag)
                    .cloned()
            };
            let value = match cached {
                Some(v) => v,
                // Gone between the listing and the read: not there any more.
                None => match self.get_raw(&key)? {
                    Some(v) => {
                        self.remember(&key, &v);
                        v
                    }
                    None => continue,
                },
            };
            out.push((key, value));
        }
        Ok(out)
    }

    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        expected: Option<&Versioned>,
    ) -> Result<Written, RelayError> {
        Ok(self.put_raw(key, bytes, expected)?)
    }

    fn delete(&self, key: &str, _expected: &Versioned) -> Result<(), RelayError> {
        let store = self.store.clone();
        let path = self.path(key);
        match self.block(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing {key}"), e).into()),
        }
    }

    fn delete_blobs(&self, ids: &[NodeId]) -> Result<(), RelayError> {
        for id in ids {
            let store = self.store.clone();
            let path = self.path(&format!("blobs/{}", id.to_hex()));
            match self.block(async move { store.delete(&path).await })? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.fail("removing an expired blob", e).into()),
            }
        }
        Ok(())
    }

    fn put_blobs(&self, blobs: &[StoredObject]) -> Result<(), RelayError> {
        // One object per blob (an upload batch of about 1 MiB, §16.3), a few at a time.
        let mut pending = Vec::new();
        for blob in blobs {
            let store = self.store.clone();
            let path = self.path(&format!("blobs/{}", blob.id.to_hex()));
            let payload = PutPayload::from(blob.bytes.clone());
            pending.push(async move { store.put(&path, payload).await.map(|_| ()) });
        }
        let results = self.block(async move {
            let mut results = Vec::new();
            let mut pending = pending.into_iter();
            loop {
                let batch: Vec<_> = pending.by_ref().take(8).collect();
                if batch.is_empty() {
                    break;
                }
                let mut handles = Vec::new();
                for fut in batch {
                    handles.push(tokio::spawn(fut));
                }
                for handle in handles {
                    results.push(match handle.await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    });
                }
            }
            results
        })?;
        for result in results {
            result.map_err(|why| BucketError::Request {
                url: self.url.clone(),
                what: "writing a blob".into(),
                why,
            })?;
        }
        for blob in blobs {
            self.cache.put(&blob.id, &blob.bytes);
        }
        Ok(())
    }

    fn blob(&self, id: &NodeId) -> Result<Option<Vec<u8>>, RelayError> {
        if let Some(bytes) = self.cache.get(id) {
            return Ok(Some(bytes));
        }
        let found = self.get_raw(&format!("blobs/{}", id.to_hex()))?;
        Ok(found.map(|v| {
            self.cache.put(id, &v.bytes);
            v.bytes
        }))
    }
}

/// Blobs cached on the relay's disk (`<data>/cache/blobs/<id hex>`), at most `limit` bytes:
/// past it the least recently written half goes. Blobs never change, so a cached one is
/// always right; one whose bytes do not hash to its id is dropped and read again.
struct BlobCache {
    dir: PathBuf,
    limit: u64,
    used: AtomicU64,
}

impl BlobCache {
    fn open(dir: &FsPath, limit: u64) -> BlobCache {
        let _ = std::fs::create_dir_all(dir);
        let used = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        BlobCache {
            dir: dir.to_path_buf(),
            limit,
            used: AtomicU64::new(used),
        }
    }

    fn get(&self, id: &NodeId) -> Option<Vec<u8>> {
        let path = self.dir.join(id.to_hex());
        let bytes = std::fs::read(&path).ok()?;
        if blob_id(&bytes) != *id {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    fn put(&self, id: &NodeId, bytes: &[u8]) {
        if self.limit == 0 || bytes.len() as u64 > self.limit {
            return;
        }
        let path = self.dir.join(id.to_hex());
        if path.exists() {
            return;
        }
        // Written whole under a temporary name, then renamed: a reader never sees a part.
        let tmp = self.dir.join(format!("{}.tmp", id.to_hex()));
        if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        let used = self.used.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if used > self.limit {
            self.evict(&path);
        }
    }

    /// Removes the oldest files (never `keep`, the one just written: file times may tie)
    /// until the cache holds at most half its limit.
    fn evict(&self, keep: &FsPath) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut used: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if used <= self.limit / 2 {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                used -= len;
            }
        }
        self.used.store(used, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls() {
        assert_eq!(
            parse_bucket_url("s3://b/p/q/").unwrap(),
            ("b".to_string(), "p/q".to_string())
        );
        assert_eq!(
            parse_bucket_url("s3://b").unwrap(),
            ("b".to_string(), String::new())
        );
        assert!(parse_bucket_url("b/p").is_err());
        assert!(parse_bucket_url("s3:///p").is_err());
    }

    #[test]
    fn s3_errors_are_told_without_their_xml() {
        let text = "Generic S3 error: Error performing list request: Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The key does not exist.</Message><RequestId>x</RequestId></Error>";
        assert_eq!(
            short_reason(text),
            "HTTP 403 Forbidden, InvalidAccessKeyId: The key does not exist."
        );
        assert_eq!(
            short_reason("error sending request"),
            "error sending request"
        );
    }

    #[test]
    fn options_never_print_the_secret() {
        let mut options = BucketOptions::new("s3://b/p");
        options.secret_access_key = Some("very-secret-value".into());
        assert!(!format!("{options:?}").contains("very-secret-value"));
    }

    #[test]
    fn the_blob_cache_stays_under_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 10_000);
        for i in 0..50u8 {
            let bytes = vec![i; 1000];
            let id = blob_id(&bytes);
            cache.put(&id, &bytes);
            assert_eq!(cache.get(&id), Some(bytes));
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(total <= 10_000, "{total}");
    }
}
