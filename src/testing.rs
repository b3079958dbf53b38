//! Test support (feature `test-support`): the node and team harness that the integration
//! tests (`tests/it/`), the examples and the benches share, so that "a teammate with a store,
//! an identity and a `tapes serve` on 127.0.0.1" is written once.
//!
//! A [`Node`] is a real node: a store in a temporary directory, a fresh identity that owns it,
//! and the `tapes/sync/3` server (SPEC.md §15) on a loopback iroh endpoint (no relays, no
//! discovery). Teams are joined the way users join them ([`join`] over the connection,
//! [`add_member`] without the network, SPEC.md §9.4).

use std::sync::Arc;

use iroh::protocol::Router;
use tapes_protocol::manifest::TeamRole;
use tapes_protocol::sync::ALPN;
use tapes_protocol::{MemberId, NodeId, SessionId, StoredObject, TeamId};

use crate::identity::{Identity, Profile};
use crate::import::ingest::{ingest, Incoming};
use crate::peer::addr::PeerAddr;
use crate::peer::client::{connect, FetchReport, PeerConn};
use crate::peer::endpoint::{bind, EndpointConfig};
use crate::peer::relay_client::RelaySyncReport;
use crate::peer::server::{EventLog, Server, StoreHandle};
use crate::session::sample::{self, Shape};
use crate::share::{self, Audience, SecretPolicy, ShareOptions};
use crate::store::Store;
use crate::team::{self, InviteOptions};

/// What went wrong in a harness step (tests unwrap it; examples and benches `?` it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Peer(#[from] crate::peer::PeerError),
    #[error(transparent)]
    Team(#[from] crate::team::TeamError),
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
    #[error("session {0} or one of its objects is missing right after it was imported")]
    Missing(SessionId),
    #[error("fsck of {name}'s store is not clean: {report}")]
    Fsck { name: String, report: String },
}

/// One session made by [`Node::import_shared`]: its id, head, and the node count and stored
/// bytes of its chain.
#[derive(Debug, Clone, Copy)]
pub struct Made {
    pub id: SessionId,
    pub head: NodeId,
    pub nodes: u64,
    pub bytes: u64,
}

/// A teammate's machine on 127.0.0.1.
pub struct Node {
    pub name: String,
    pub store: Arc<Store>,
    pub identity: Arc<Identity>,
    pub router: Router,
    _dir: tempfile::TempDir,
}

/// The member id of an identity.
pub fn member(identity: &Identity) -> MemberId {
    MemberId(identity.verifying_key().to_bytes())
}

impl Node {
    /// A node with a fresh identity named `name`, serving quietly.
    pub async fn new(name: &str) -> Result<Node, Error> {
        Node::with_log(name, Arc::new(|_| {})).await
    }

    /// A node whose server reports what peers did to `log` (what `tapes serve` prints).
    pub async fn with_log(name: &str, log: EventLog) -> Result<Node, Error> {
        let identity = Identity::generate(Profile {
            name: name.into(),
            email: Some(format!("{name}@example.com")),
        })?;
        Node::with_identity(identity, log).await
    }

    /// A node for an existing identity (a second device of the same person, a forged key).
    pub async fn with_identity(identity: Identity, log: EventLog) -> Result<Node, Error> {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(Store::open(&dir.path().join("store"))?);
        store.set_local_owner(&member(&identity))?;
        let identity = Arc::new(identity);
        let endpoint = bind(&identity, &EndpointConfig::loopback()).await?;
        let server = Server::new(StoreHandle::Shared(store.clone()), identity.clone(), log);
        let router = Router::builder(endpoint).accept(ALPN, server).spawn();
        Ok(Node {
            name: identity.profile.name.clone(),
            store,
            identity,
            router,
            _dir: dir,
        })
    }

    /// The node's own temporary directory (its store is `store/` in it); gone when the node is.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// This node's member id.
    pub fn id(&self) -> MemberId {
        member(&self.identity)
    }

    /// Its ticket: what a teammate adds with `tapes remote add`.
    pub fn addr(&self) -> PeerAddr {
        PeerAddr::of_endpoint(self.router.endpoint())
    }

    /// Dials `other`, naming it `name` in messages.
    pub async fn dial(&self, other: &Node, name: &str) -> Result<PeerConn, Error> {
        Ok(connect(self.router.endpoint(), &other.addr(), name).await?)
    }

    /// Fetches what `other` shares with this node.
    pub async fn fetch_from(&self, other: &Node) -> Result<FetchReport, Error> {
        let conn = self.dial(other, &other.name).await?;
        let report = conn.fetch(&self.store, &self.identity).await?;
        conn.close();
        Ok(report)
    }

    /// Dials a relay.
    pub async fn relay(&self, ticket: &PeerAddr) -> Result<PeerConn, Error> {
        Ok(connect(self.router.endpoint(), ticket, "relay")
            .await?
            .into_relay())
    }

    /// One `tapes sync` with a relay: deposit what is pending, fetch what is new.
    pub async fn relay_sync(&self, ticket: &PeerAddr) -> Result<RelaySyncReport, Error> {
        let conn = self.relay(ticket).await?;
        let report = conn.relay_sync(&self.store, &self.identity).await?;
        conn.close();
        Ok(report)
    }

    /// Imports generated sample session `seed` with `rounds` tool rounds; returns its id.
    pub fn import(&self, seed: u64, rounds: usize) -> Result<SessionId, Error> {
        let shape = Shape {
            tool_rounds: rounds,
            ..Shape::default()
        };
        let report = ingest(
            &self.store,
            &[Incoming {
                session: sample::session(seed, 0, shape),
                path: String::new(),
            }],
            0,
        )?;
        Ok(report.sessions[0].id)
    }

    /// A generated session whose last messages carry `texts` (markers a test looks for in
    /// stores, relays and pages); returns its id.
    pub fn session_with(&self, seed: u64, texts: &[&str]) -> Result<SessionId, Error> {
        let id = self.import(seed, Shape::default().tool_rounds)?;
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        sample::continue_session(&self.store, &id, &texts)?;
        Ok(id)
    }

    /// Shares session `id` with `audience`, passing the secret gate with `secrets`.
    pub fn share(
        &self,
        id: &SessionId,
        audience: Audience,
        secrets: SecretPolicy,
    ) -> Result<(), Error> {
        share::share(
            &self.store,
            &self.identity,
            id,
            &ShareOptions {
                audience,
                title: None,
                note: None,
                expires_ms: None,
                secrets,
            },
            crate::now_ms(),
        )?;
        Ok(())
    }

    /// Imports generated sessions `first..first + count` of `seed` (each with `rounds` tool
    /// rounds) in one ingest and shares each with `audience`; returns what each chain holds,
    /// as a fetch or a deposit sends it.
    pub fn import_shared(
        &self,
        audience: Audience,
        seed: u64,
        first: usize,
        count: usize,
        rounds: usize,
    ) -> Result<Vec<Made>, Error> {
        let shape = Shape {
            tool_rounds: rounds,
            ..Shape::default()
        };
        let incoming: Vec<Incoming> = (first..first + count)
            .map(|i| Incoming {
                session: sample::session(seed, i, shape),
                path: String::new(),
            })
            .collect();
        let report = ingest(&self.store, &incoming, 0)?;
        let mut made = Vec::with_capacity(report.sessions.len());
        for outcome in &report.sessions {
            let id = outcome.id;
            self.share(&id, audience, SecretPolicy::Allow)?;
            let head = self.store.session(&id)?.ok_or(Error::Missing(id))?.head;
            let (mut nodes, mut bytes) = (0, 0);
            let mut next = Some(head);
            let mut reader = self.store.storage().chain_reader();
            while let Some(node) = next {
                let raw = reader
                    .get(&node)
                    .map_err(crate::store::StoreError::from)?
                    .ok_or(Error::Missing(id))?;
                next = StoredObject::parent_of(&raw).map_err(|_| Error::Missing(id))?;
                nodes += 1;
                bytes += raw.len() as u64;
            }
            made.push(Made {
                id,
                head,
                nodes,
                bytes,
            });
        }
        Ok(made)
    }

    /// Whether this node's store holds session `id`.
    pub fn has(&self, id: &SessionId) -> Result<bool, Error> {
        Ok(self.store.session(id)?.is_some())
    }

    /// How many sessions this node's store holds.
    pub fn sessions(&self) -> Result<usize, Error> {
        Ok(self.store.sessions()?.len())
    }

    /// Runs `tapes fsck` on this node's store; an error describes what is wrong.
    pub fn fsck_clean(&self) -> Result<(), Error> {
        let report = crate::store::fsck::fsck(&self.store, |_| {})?;
        if !report.is_clean() {
            return Err(Error::Fsck {
                name: self.name.clone(),
                report: format!("{report:?}"),
            });
        }
        Ok(())
    }
}

fn invite_code(
    owner_store: &Store,
    owner: &Identity,
    team: &TeamId,
    addrs: Vec<String>,
) -> Result<String, Error> {
    let chain = team::load(owner_store, team)?;
    let (code, _) = team::invite(
        owner_store,
        owner,
        &chain,
        InviteOptions {
            expires_ms: None,
            max_uses: 1,
            email: None,
            role: TeamRole::Member,
            addrs,
        },
        crate::now_ms(),
    )?;
    Ok(code)
}

/// `joiner` joins `owner`'s team over the network with a fresh invite (what `tapes team join
/// <code>` does).
pub async fn join(owner: &Node, joiner: &Node, team: &TeamId) -> Result<(), Error> {
    let code = invite_code(
        &owner.store,
        &owner.identity,
        team,
        vec![owner.addr().ticket()],
    )?;
    let (invite, request) = team::join_request(&joiner.identity, &code, crate::now_ms())?;
    let conn = joiner.dial(owner, &owner.name).await?;
    let response = conn.join(&request).await?;
    team::complete_join(&joiner.store, &joiner.identity, &invite.team, response)?;
    Ok(())
}

/// Adds `joiner` to `owner`'s team without the network (invite, request, accept, complete).
pub fn add_member(
    owner_store: &Store,
    owner: &Identity,
    joiner_store: &Store,
    joiner: &Identity,
    team: &TeamId,
) -> Result<(), Error> {
    let code = invite_code(owner_store, owner, team, Vec::new())?;
    let (invite, request) = team::join_request(joiner, &code, crate::now_ms())?;
    let response = team::accept_join(owner_store, owner, &request, crate::now_ms())?;
    team::complete_join(joiner_store, joiner, &invite.team, response)?;
    Ok(())
}
