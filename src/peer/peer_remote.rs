//! A peer as a [`Remote`], so `tapes push` and `tapes pull` (with their tracking, bases and
//! secret scan) work the same against a teammate's `tapes serve` as against a path.

use std::sync::Arc;

use iroh::Endpoint;
use tapes_protocol::{NodeId, SessionId, StoredObject};

use super::addr::PeerAddr;
use super::client::{connect, PeerConn};
use super::endpoint::{bind, EndpointConfig};
use super::PeerError;
use crate::identity::Identity;
use crate::session::SessionRecord;
use crate::store::Store;
use crate::sync::remote::{Remote, RemoteError};

/// A connected peer behind the blocking [`Remote`] trait.
pub struct PeerRemote {
    runtime: tokio::runtime::Runtime,
    conn: PeerConn,
    endpoint: Endpoint,
    store: Arc<Store>,
    identity: Arc<Identity>,
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
        self.runtime
            .block_on(self.conn.session(*id))
            .map(|found| found.map(|(_, record)| record))
            .map_err(|e| remote_error(self.name(), e))
    }

    fn fetch_chain(
        &self,
        session: &SessionId,
        _head: &NodeId,
        have: &mut dyn FnMut(&NodeId) -> bool,
    ) -> Result<Vec<StoredObject>, RemoteError> {
        // A peer serves a session's chain by the session's id (what it may show is decided
        // per session); its head is the one it holds now.
        self.runtime
            .block_on(self.conn.chain_objects(*session, have))
            .map_err(|e| remote_error(self.name(), e))
    }

    fn push(&self, plan: &crate::sync::remote::PushPlan) -> Result<u64, RemoteError> {
        let id = plan.session;
        match self.runtime.block_on(
            self.conn
                .push_plan(&self.store, &self.identity, plan.clone()),
        ) {
            Ok(nodes) => Ok(nodes),
            Err(PeerError::Conflict { .. }) => Err(RemoteError::Conflict {
                id: id.short(),
                expected: plan.base,
                // The peer's head now, as the conflict hint shows it.
                current: self
                    .runtime
                    .block_on(self.conn.session(id))
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
