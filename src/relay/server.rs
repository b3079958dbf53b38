//! The relay's side of `tapes/sync/3` (SPEC.md §16.4): the same framing, reconciliation and
//! fetch as a teammate's node, plus registration, manifests, deposits and the join mailbox.
//! Every state change goes through [`RelayState`], which holds the rules; this module only
//! moves frames.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use tapes_protocol::sync::{decode_batch, ItemId, Objects, Request, Response, Scope};
use tapes_protocol::{MemberId, NodeId, SessionId};

use super::state::{DepositOutcome, RelayItem, RelayState};
use super::RelayError;
use crate::peer::endpoint::member_of;
use crate::peer::frames::{Counters, Stream};
use crate::peer::guard::Limits;
use crate::peer::server::{accept_streams, answer_reconcile, refuse, EventLog};
use crate::peer::PeerError;

/// The relay's protocol handler.
#[derive(Clone)]
pub struct RelayServer {
    state: Arc<RelayState>,
    log: EventLog,
    /// What one connection may cost (SPEC.md §15.6, §16.10).
    limits: Limits,
    /// What all connections together hold (§15.6, `guard::Connections`); clones share it.
    connections: crate::peer::guard::Connections,
}

impl std::fmt::Debug for RelayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayServer")
    }
}

struct Conn {
    peer: MemberId,
    name: String,
    counters: Counters,
    /// The view computed at the last reconciliation; fetches look items up in it.
    view: Mutex<Option<Arc<BTreeMap<ItemId, RelayItem>>>>,
}

impl RelayServer {
    pub fn new(state: Arc<RelayState>, log: EventLog) -> RelayServer {
        RelayServer {
            state,
            log,
            limits: Limits::default(),
            connections: Default::default(),
        }
    }

    /// The same server under other per-connection limits (tests shorten the waits).
    pub fn with_limits(mut self, limits: Limits) -> RelayServer {
        self.limits = limits;
        self
    }

    pub fn state(&self) -> &Arc<RelayState> {
        &self.state
    }

    fn log(&self, line: String) {
        tracing::info!("{line}");
        (self.log)(line);
    }

    async fn serve(&self, connection: Connection) {
        let peer = member_of(&connection.remote_id());
        let name = self
            .state
            .teams()
            .iter()
            .find_map(|c| {
                c.head()
                    .manifest
                    .member(&peer)
                    .map(|m| format!("{} ({})", m.name, peer.short()))
            })
            .unwrap_or_else(|| format!("node {}", peer.short()));
        let conn = Arc::new(Conn {
            peer,
            name,
            counters: Counters::serving(self.limits),
            view: Mutex::new(None),
        });
        let this = self.clone();
        let log: EventLog = Arc::new(move |line| this.log(line));
        // Bounded however many identities connect (§15.6): non-members share the strangers'
        // places.
        let stranger = conn.name == format!("node {}", conn.peer.short());
        let Some(_slot) = self
            .connections
            .admit(&connection, &conn.name, stranger, &log)
        else {
            return;
        };
        let name = conn.name.clone();
        accept_streams(connection, name, log, self.limits, |send, recv| {
            let this = self.clone();
            let conn = conn.clone();
            async move {
                let mut stream = Stream {
                    send,
                    recv,
                    peer: &conn.name,
                    counters: &conn.counters,
                };
                this.handle(&conn, &mut stream).await
            }
        })
        .await;
    }

    fn view(
        &self,
        conn: &Conn,
        fresh: bool,
    ) -> Result<Arc<BTreeMap<ItemId, RelayItem>>, RelayError> {
        let mut slot = conn.view.lock().unwrap_or_else(|p| p.into_inner());
        if let (false, Some(view)) = (fresh, slot.as_ref()) {
            return Ok(view.clone());
        }
        let view = Arc::new(self.state.view(&conn.peer, crate::now_ms())?);
        *slot = Some(view.clone());
        Ok(view)
    }

    async fn handle(&self, conn: &Conn, stream: &mut Stream<'_>) -> Result<(), PeerError> {
        let request: Request = stream.expect("request").await?;
        let result = match request {
            Request::Hello => {
                let teams = self.state.teams_of(&conn.peer);
                stream.write(&Response::Relay { teams }).await?;
                Ok(())
            }
            Request::Reconcile { first } => {
                let view = match tokio::task::block_in_place(|| self.view(conn, true)) {
                    Ok(view) => view,
                    Err(e) => return refuse(stream, &e.to_string()).await,
                };
                return answer_reconcile(stream, view.keys().copied().collect(), first).await;
            }
            Request::Fetch { item, have_head } => return self.fetch(conn, stream, item, have_head).await,
            Request::Register { manifests } => {
                match tokio::task::block_in_place(|| self.state.register(&conn.peer, &manifests)) {
                    Ok(team) => {
                        self.log(format!("{} registered team {}", conn.name, team.short()));
                        stream.write(&Response::Accepted).await?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Manifests { team, manifests } => {
                match tokio::task::block_in_place(|| {
                    self.state.update_manifests(&conn.peer, &team, &manifests)
                }) {
                    Ok(new) => {
                        if new > 0 {
                            self.log(format!(
                                "{} brought {new} new manifests of team {}",
                                conn.name,
                                team.short()
                            ));
                        }
                        stream.write(&Response::Accepted).await?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Deposit(deposit) => return self.deposit(conn, stream, deposit).await,
            Request::Mailbox { team } => {
                match tokio::task::block_in_place(|| self.state.waiting_joins(&conn.peer, &team)) {
                    Ok(list) => {
                        stream.write(&Response::Joins(list)).await?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Answer {
                team,
                joiner,
                response,
            } => match tokio::task::block_in_place(|| {
                self.state.answer_join(&conn.peer, &team, &joiner, response)
            }) {
                Ok(()) => {
                    self.log(format!(
                        "{} answered the join request of {} for team {}",
                        conn.name,
                        joiner.short(),
                        team.short()
                    ));
                    stream.write(&Response::Accepted).await?;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Request::Join { .. } => {
                return refuse(
                    stream,
                    "a relay takes join requests only sealed to the inviter; upgrade tapes",
                )
                .await
            }
            Request::JoinSealed { team, sealed } => {
                match tokio::task::block_in_place(|| self.state.join(&conn.peer, &team, &sealed)) {
                    Ok(Some(answer)) => {
                        self.log(format!("{} collected its join answer", conn.name));
                        stream.write(&Response::Join(answer)).await?;
                        Ok(())
                    }
                    Ok(None) => {
                        self.log(format!("{} left a join request", conn.name));
                        stream.write(&Response::Queued).await?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::Session { .. } | Request::Push { .. } => {
                return refuse(
                    stream,
                    "this is a relay: it takes sealed deposits (`tapes sync <relay>` or `tapes storage sync`) and serves them through `tapes fetch <relay>`",
                )
                .await
            }
            Request::AuditDeposit {
                team,
                first,
                entries,
            } => {
                let answer = tokio::task::block_in_place(|| {
                    self.state.audit_deposit(&conn.peer, &team, first, entries)
                });
                match answer {
                    Ok(_) => stream.write(&Response::Accepted).await?,
                    Err(e) => return refuse(stream, &e.to_string()).await,
                }
                Ok(())
            }
            Request::Audit { team, have } => {
                let answer = tokio::task::block_in_place(|| self.state.audit_entries(&conn.peer, &team, &have));
                match answer {
                    Ok(entries) => stream.write(&Response::Audit(entries)).await?,
                    Err(e) => return refuse(stream, &e.to_string()).await,
                }
                Ok(())
            }
            Request::Tombstones => {
                // SPEC §3.5
                let list = tokio::task::block_in_place(|| {
                    super::tombstones::published(&self.state, &conn.peer)
                });
                match list {
                    Ok(list) => stream.write(&Response::Tombstones(list)).await?,
                    Err(e) => return refuse(stream, &e.to_string()).await,
                }
                Ok(())
            }
            Request::Retention => {
                let lines = tokio::task::block_in_place(|| {
                    super::retention::describe_for(&self.state, &conn.peer)
                });
                match lines {
                    Ok(lines) => stream.write(&Response::Retention(lines)).await?,
                    Err(e) => return refuse(stream, &e.to_string()).await,
                }
                Ok(())
            }
            Request::Bury(item) => {
                let buried = tokio::task::block_in_place(|| {
                    super::tombstones::bury(&self.state, &conn.peer, &item)
                });
                match buried {
                    Ok(_) => stream.write(&Response::Accepted).await?,
                    Err(e) => return refuse(stream, &e.to_string()).await,
                }
                Ok(())
            }
            Request::From { .. } | Request::Done | Request::Upload(_) => {
                return Err(stream.protocol("a stream began with a continuation frame"))
            }
        };
        if let Err(e) = result {
            return refuse(stream, &e.to_string()).await;
        }
        stream.finish();
        Ok(())
    }

    async fn fetch(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        item: ItemId,
        have_head: Option<NodeId>,
    ) -> Result<(), PeerError> {
        let lookup = |fresh| {
            tokio::task::block_in_place(|| self.view(conn, fresh)).map(|v| v.get(&item).cloned())
        };
        let found = match lookup(false) {
            Ok(Some(found)) => Some(found),
            Ok(None) => lookup(true).ok().flatten(),
            Err(e) => return refuse(stream, &e.to_string()).await,
        };
        let Some(found) = found else {
            return refuse(
                stream,
                "that item is not shared with you at this relay (or no longer)",
            )
            .await;
        };
        let sent = match found {
            RelayItem::Manifest { team, version } => {
                let chain = self.state.teams().into_iter().find(|c| c.team_id() == team);
                match chain.and_then(|c| c.versions().get(version as usize).cloned()) {
                    Some(signed) => {
                        stream
                            .write(&Response::Manifest {
                                team,
                                manifest: signed.encode(),
                            })
                            .await
                    }
                    None => return refuse(stream, "that manifest is gone").await,
                }
            }
            RelayItem::Share { scope, session } => {
                let found = tokio::task::block_in_place(|| self.state.deposited(&scope, &session));
                let Ok(Some((deposited, _))) = found else {
                    return refuse(stream, "that share is gone").await;
                };
                match scope {
                    Scope::Team(team) => {
                        stream
                            .write(&Response::SealedShare {
                                team,
                                sealed: deposited.share,
                            })
                            .await
                    }
                    Scope::Public => stream.write(&Response::Share(deposited.share)).await,
                }
            }
            RelayItem::Session { scope, session } => {
                self.send_session(conn, stream, scope, session, have_head)
                    .await
            }
        };
        sent?;
        stream.finish();
        Ok(())
    }

    async fn send_session(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        scope: Scope,
        session: SessionId,
        have_head: Option<NodeId>,
    ) -> Result<(), PeerError> {
        let found = tokio::task::block_in_place(|| self.state.deposited(&scope, &session));
        let Ok(Some((deposited, ids))) = found else {
            return refuse(stream, "that session is gone").await;
        };
        if deposited.is_summary() {
            // A view computed before the owner's metadata-only share replaced the content.
            return refuse(
                stream,
                "its owner shares only its summary now (metadata only); its content is not at this relay",
            )
            .await;
        }
        let at = have_head.and_then(|h| ids.iter().position(|id| *id == h));
        let from_head = at.is_some();
        let response = match scope {
            Scope::Team(team) => Response::SealedSession {
                team,
                entry: deposited.entry.clone(),
                ids: ids.clone(),
                from_head,
            },
            Scope::Public => match postcard::from_bytes(&deposited.entry) {
                Ok(entry) => Response::Session {
                    entry,
                    ids: ids.clone(),
                    from_head,
                },
                Err(_) => {
                    return refuse(stream, "that session's record is damaged at the relay").await
                }
            },
        };
        stream.write(&response).await?;
        let from = match at {
            Some(p) => p as u64 + 1,
            None => match stream.read::<Request>("from").await? {
                Some(Request::From { index }) => index,
                None => return Ok(()),
                Some(_) => return Err(stream.protocol("expected `from`")),
            },
        };
        let blobs = RelayState::blobs_from(&deposited, from);
        for blob in blobs {
            let bytes = match tokio::task::block_in_place(|| self.state.blob(&blob)) {
                Ok(bytes) => bytes,
                Err(e) => return refuse(stream, &e.to_string()).await,
            };
            let objects = match scope {
                Scope::Team(team) => Objects::Sealed {
                    team,
                    sealed: bytes,
                },
                Scope::Public => match decode_batch(&bytes) {
                    Ok(list) => Objects::Plain(list),
                    Err(e) => return refuse(stream, &e.to_string()).await,
                },
            };
            stream.write(&Response::Objects(objects)).await?;
        }
        // Logged before `End`, so the stream's task ends when the peer has its answer (a client
        // opens its next stream on reading `End`; SPEC §15.6).
        self.log(format!("{} fetched session {}", conn.name, session.short()));
        if let Scope::Team(team) = scope {
            tokio::task::block_in_place(|| {
                self.state.audit_record(
                    &team,
                    tapes_protocol::audit::AuditAction::Fetch,
                    &conn.peer,
                    &conn.name,
                    &session,
                )
            });
        }
        stream.write(&Response::End).await?;
        Ok(())
    }

    async fn deposit(
        &self,
        conn: &Conn,
        stream: &mut Stream<'_>,
        deposit: tapes_protocol::sync::Deposit,
    ) -> Result<(), PeerError> {
        let session = deposit.session;
        let scope = deposit.scope;
        let began = tokio::task::block_in_place(|| self.state.begin_deposit(&conn.peer, deposit));
        let mut pending = match began {
            Ok(pending) => pending,
            Err(e) => {
                self.log(format!("refused a deposit from {}: {e}", conn.name));
                return drain_then_refuse(stream, &e.to_string()).await;
            }
        };
        loop {
            match stream.expect::<Request>("upload").await? {
                Request::Upload(objects) => {
                    if let Err(e) =
                        tokio::task::block_in_place(|| self.state.add_batch(&mut pending, objects))
                    {
                        self.log(format!("refused a deposit from {}: {e}", conn.name));
                        return drain_then_refuse(stream, &e.to_string()).await;
                    }
                }
                Request::Done => break,
                _ => return Err(stream.protocol("expected objects or `done`")),
            }
        }
        let outcome =
            tokio::task::block_in_place(|| self.state.finish_deposit(pending, crate::now_ms()));
        let answer = match outcome {
            Ok(DepositOutcome::Stored { nodes }) => {
                self.log(match nodes {
                    // A share-only deposit (an unshare, a new expiry) or a record change.
                    0 => format!(
                        "{} updated the record and share of session {} (no new nodes)",
                        conn.name,
                        session.short()
                    ),
                    n => format!(
                        "{} deposited session {} ({})",
                        conn.name,
                        session.short(),
                        crate::views::render::plural(n as usize, "new node")
                    ),
                });
                if let (Scope::Team(team), 1..) = (scope, nodes) {
                    tokio::task::block_in_place(|| {
                        self.state.audit_record(
                            &team,
                            tapes_protocol::audit::AuditAction::Deposit,
                            &conn.peer,
                            &conn.name,
                            &session,
                        )
                    });
                }
                Response::Pushed { nodes }
            }
            Ok(DepositOutcome::Summary { withdrawn }) => {
                self.log(match withdrawn {
                    0 => format!(
                        "{} shared session {} as its summary only (metadata only)",
                        conn.name,
                        session.short()
                    ),
                    n => format!(
                        "{} shared session {} as its summary only (metadata only); its content ({n} bytes) was removed from this relay",
                        conn.name,
                        session.short()
                    ),
                });
                Response::Pushed { nodes: 0 }
            }
            Ok(DepositOutcome::Conflict { current }) => Response::Conflict { current },
            Err(e) => {
                self.log(format!("refused a deposit from {}: {e}", conn.name));
                Response::Refused {
                    reason: e.to_string(),
                }
            }
        };
        stream.write(&answer).await?;
        stream.finish();
        Ok(())
    }
}

/// Reads the rest of a refused deposit's uploads (dropping them), then answers: a client that
/// is still sending then reads the reason instead of a reset stream.
async fn drain_then_refuse(stream: &mut Stream<'_>, reason: &str) -> Result<(), PeerError> {
    loop {
        match stream.read::<Request>("upload").await? {
            Some(Request::Upload(_)) => {}
            Some(Request::Done) | None => break,
            Some(_) => return Err(stream.protocol("expected objects or `done`")),
        }
    }
    refuse(stream, reason).await
}

impl ProtocolHandler for RelayServer {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        self.serve(connection).await;
        Ok(())
    }
}
