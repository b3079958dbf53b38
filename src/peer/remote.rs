//! A peer as a [`Remote`], so `tapes push` and `tapes pull` (with their tracking, bases and
//! secret scan) work the same against a teammate's `tapes serve` as against a path.

use std::sync::{Arc, Mutex};

use iroh::Endpoint;
use tapes_protocol::{NodeId, SessionId, StoredObject};

use super::addr::PeerAddr;
use super::client::{connect, PeerConn};
use super::endpoint::{bind, EndpointConfig};
use super::PeerError;
use crate::identity::Identity;
use crate::remote::{RefSignature, Remote, RemoteError};
use crate::session::SessionRecord;
use crate::store::Store;

/// A connected peer behind the blocking [`Remote`] trait.
pub struct PeerRemote {
    runtime: tokio::runtime::Runtime,
    conn: PeerConn,
    endpoint: Endpoint,
    store: Arc<Store>,
    identity: Arc<Identity>,
    /// The session of the last `session()` call: `fetch_chain` continues it.
    last: Mutex<Option<SessionId>>,
}

fn remote_error(name: &str, e: PeerError) -> RemoteError {
    match e {
        PeerError::Store(source) => RemoteError::Store {
            name: name.into(),
            source,
        },
        other => RemoteError::Peer(Box::new(other)),
    }
}

impl PeerRemote {
    pub fn connect(
        name: &str,
        addr: &PeerAddr,
        store: Arc<Store>,
        identity: Arc<Identity>,
    ) -> Result<PeerRemote, PeerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| PeerError::Bind(e.to_string()))?;
        let (endpoint, conn) = runtime.block_on(async {
            let endpoint = bind(&identity, &EndpointConfig::loopback_or_any(addr)).await?;
            match connect(&endpoint, addr, name).await {
                Ok(conn) => Ok::<_, PeerError>((endpoint, conn)),
                Err(e) => {
                    crate::peer::endpoint::close_after_failure(endpoint).await;
                    Err(e)
                }
            }
        })?;
        Ok(PeerRemote {
            runtime,
            conn,
            endpoint,
            store,
            identity,
            last: Mutex::new(None),
        })
    }
}

impl Drop for PeerRemote {
    fn drop(&mut self) {
        self.conn.close();
        let endpoint = self.endpoint.clone();
        self.runtime.block_on(async move { endpoint.close().await });
    }
}

impl Remote for PeerRemote {
    fn name(&self) -> &str {
        &self.conn.name
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, RemoteError> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(*id);
        self.runtime
            .block_on(self.conn.session(*id))
            .map(|found| found.map(|(_, record)| record))
            .map_err(|e| remote_error(self.name(), e))
    }

    fn fetch_chain(
        &self,
        _head: &NodeId,
        have: &mut dyn FnMut(&NodeId) -> bool,
    ) -> Result<Vec<StoredObject>, RemoteError> {
        let Some(id) = *self.last.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(Vec::new());
        };
        self.runtime
            .block_on(self.conn.chain_objects(id, have))
            .map_err(|e| remote_error(self.name(), e))
    }

    fn push(
        &self,
        id: &SessionId,
        expected: Option<&NodeId>,
        _objects: &[StoredObject],
        _record: &SessionRecord,
        _signature: &RefSignature,
    ) -> Result<(), RemoteError> {
        match self.runtime.block_on(self.conn.push(
            &self.store,
            &self.identity,
            *id,
            expected.copied(),
        )) {
            Ok(_) => Ok(()),
            Err(PeerError::Conflict { .. }) => Err(RemoteError::Conflict {
                id: id.short(),
                expected: expected.copied(),
                // The peer's head now, as the conflict hint shows it.
                current: self
                    .runtime
                    .block_on(self.conn.session(*id))
                    .ok()
                    .flatten()
                    .map(|(_, r)| r.head),
            }),
            Err(e) => Err(remote_error(self.name(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{remote_error, PeerError};

    #[test]
    fn a_refusal_is_not_called_a_database_error_nor_named_twice() {
        let e = remote_error(
            "alice",
            PeerError::Refused {
                peer: "alice".into(),
                reason: "not a member".into(),
            },
        );
        assert_eq!(e.to_string(), "peer alice refused: not a member");
    }
}
