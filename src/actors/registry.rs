//! The `SessionRegistry`: the socket side of the tree. It owns the map user
//! → `SessionActor` (its children), routes every progress event the relay
//! receives to that user's session, and wakes whoever waits for a job to end
//! (a cancel request). Events never wait behind job management: the
//! supervisor is not on this path.
//!
//! Bounded: the relay holds at most [`INBOX`] events in flight here, and this
//! actor at most [`SESSION_INBOX`] per session; beyond that an event is
//! dropped and the affected sockets are told to `resync` once the backlog is
//! gone (Postgres has every event; `resume` fetches them).
//!
//! Registration: `Register` is forwarded to the user's session with the
//! caller's reply port, so the acknowledgement comes from the actor that
//! will deliver. A session that is stopping drops the message, the reply
//! never comes, and the caller registers again (by then the registry has
//! seen the session end and starts a fresh one).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use uuid::Uuid;

use super::mailbox::{Bound, Ticket};
use super::session::{Registration, SessionActor, SessionArgs, SessionMsg, SocketHandle, RESYNC};
use crate::domain::{Envelope, ProgressEvent};

/// Events the relay may have in flight at the registry.
pub const INBOX: usize = 20_000;
/// Events the registry may have in flight at one session.
pub const SESSION_INBOX: usize = 2_000;
/// Jobs whose end someone may wait for at once.
const MAX_WATCHED: usize = 10_000;

pub enum RegistryMsg {
    /// A socket opened; the reply comes from the session that will deliver.
    Register {
        user_id: Uuid,
        socket: SocketHandle,
        reply: RpcReplyPort<Registration>,
    },
    /// A socket closed.
    Unregister { user_id: Uuid, socket_id: u64 },
    /// A progress event for a user (from the relay).
    Deliver(Box<Envelope>, Ticket),
    /// Every socket may have missed events (the relay reconnected).
    ResyncAll,
    /// Replies with the job's terminal event when it arrives (cancel waits on it).
    WatchEnd {
        job_id: String,
        reply: tokio::sync::oneshot::Sender<ProgressEvent>,
    },
    /// Liveness: answers at once.
    Ping(RpcReplyPort<()>),
}

impl std::fmt::Debug for RegistryMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryMsg::Register { user_id, socket, .. } => write!(f, "Register({user_id}, {})", socket.id),
            RegistryMsg::Unregister { user_id, socket_id } => write!(f, "Unregister({user_id}, {socket_id})"),
            RegistryMsg::Deliver(e, _) => write!(f, "Deliver({} seq {})", e.event.job_id, e.event.seq),
            RegistryMsg::ResyncAll => f.write_str("ResyncAll"),
            RegistryMsg::WatchEnd { job_id, .. } => write!(f, "WatchEnd({job_id})"),
            RegistryMsg::Ping(_) => f.write_str("Ping"),
        }
    }
}

/// Where the current registry is (it changes when the supervisor restarts
/// it), with its inbox bound. Shared by the relay, socket handlers and cancel.
#[derive(Clone)]
pub struct RegistryHandle {
    current: Arc<RwLock<Option<ActorRef<RegistryMsg>>>>,
    inbox: Bound,
}

impl Default for RegistryHandle {
    fn default() -> Self {
        RegistryHandle {
            current: Arc::new(RwLock::new(None)),
            inbox: Bound::new(INBOX),
        }
    }
}

impl RegistryHandle {
    pub fn get(&self) -> Option<ActorRef<RegistryMsg>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, registry: Option<ActorRef<RegistryMsg>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = registry;
    }

    pub fn inbox(&self) -> &Bound {
        &self.inbox
    }

    /// Hands an event to the registry, unless it is full (then it is dropped
    /// and every socket resyncs once the registry has caught up).
    pub fn deliver(&self, envelope: Envelope) {
        let Some(registry) = self.get() else { return };
        match self.inbox.take() {
            Some(ticket) => {
                let _ = registry.cast(RegistryMsg::Deliver(Box::new(envelope), ticket));
            }
            None => crate::metrics::events_dropped("registry"),
        }
    }

    pub fn cast(&self, msg: RegistryMsg) -> bool {
        self.get().is_some_and(|r| r.cast(msg).is_ok())
    }
}

pub struct RegistryArgs {
    pub handle: RegistryHandle,
    pub max_sockets: usize,
    pub min_event_gap: Duration,
}

struct Entry {
    session: ActorRef<SessionMsg>,
    inbox: Bound,
}

pub struct RegistryState {
    handle: RegistryHandle,
    max_sockets: usize,
    min_event_gap: Duration,
    sessions: HashMap<Uuid, Entry>,
    users: HashMap<ActorId, Uuid>,
    watchers: HashMap<String, Vec<tokio::sync::oneshot::Sender<ProgressEvent>>>,
}

pub struct SessionRegistry;

impl RegistryState {
    async fn start_session(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        user_id: Uuid,
    ) -> Result<ActorRef<SessionMsg>, ActorProcessingErr> {
        let inbox = Bound::new(SESSION_INBOX);
        let args = SessionArgs {
            user_id,
            max_sockets: self.max_sockets,
            min_event_gap: self.min_event_gap,
            inbox: inbox.clone(),
        };
        let (session, _) = Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await?;
        self.users.insert(session.get_id(), user_id);
        self.sessions.insert(
            user_id,
            Entry {
                session: session.clone(),
                inbox,
            },
        );
        Ok(session)
    }

    fn forget(&mut self, id: &ActorId) {
        if let Some(user) = self.users.remove(id) {
            if self.sessions.get(&user).is_some_and(|e| e.session.get_id() == *id) {
                self.sessions.remove(&user);
            }
        }
    }

    fn broadcast_resync(&self) {
        let text = axum::extract::ws::Utf8Bytes::from_static(RESYNC);
        for e in self.sessions.values() {
            let _ = e.session.cast(SessionMsg::Broadcast(text.clone()));
        }
    }
}

impl Actor for SessionRegistry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        Ok(RegistryState {
            handle: args.handle,
            max_sockets: args.max_sockets,
            min_event_gap: args.min_event_gap,
            sessions: HashMap::new(),
            users: HashMap::new(),
            watchers: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle.set(Some(myself));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Register { user_id, socket, reply } => {
                let msg = SessionMsg::AddSocket(socket, Some(reply));
                let msg = match state.sessions.get(&user_id) {
                    Some(e) => match e.session.cast(msg) {
                        Ok(()) => return Ok(()),
                        Err(ractor::MessagingErr::SendErr(msg)) => msg,
                        Err(_) => return Ok(()),
                    },
                    None => msg,
                };
                // No session, or one that has stopped: a fresh one.
                let session = state.start_session(&myself, user_id).await?;
                let _ = session.cast(msg);
            }
            RegistryMsg::Unregister { user_id, socket_id } => {
                if let Some(e) = state.sessions.get(&user_id) {
                    let _ = e.session.cast(SessionMsg::RemoveSocket(socket_id));
                }
            }
            RegistryMsg::Deliver(envelope, ticket) => {
                let Envelope { user_id, event } = *envelope;
                let event = Arc::new(event);
                if event.stage.is_terminal() {
                    if let Some(waiting) = state.watchers.remove(&event.job_id) {
                        for reply in waiting {
                            let _ = reply.send((*event).clone());
                        }
                    }
                }
                if let Some(e) = state.sessions.get(&user_id) {
                    match e.inbox.take() {
                        Some(t) => {
                            let _ = e.session.cast(SessionMsg::Push(event, t));
                        }
                        None => crate::metrics::events_dropped("session"),
                    }
                }
                drop(ticket);
                if state.handle.inbox().caught_up_after_overflow() {
                    tracing::warn!("progress events were dropped under load; asking every socket to resync");
                    state.broadcast_resync();
                }
            }
            RegistryMsg::ResyncAll => state.broadcast_resync(),
            RegistryMsg::WatchEnd { job_id, reply } => {
                if state.watchers.values().map(Vec::len).sum::<usize>() < MAX_WATCHED {
                    state.watchers.entry(job_id).or_default().push(reply);
                }
                // Watchers whose caller gave up are dropped now and then.
                state.watchers.retain(|_, w| {
                    w.retain(|r| !r.is_closed());
                    !w.is_empty()
                });
            }
            RegistryMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RegistryMsg>,
        event: SupervisionEvent,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => state.forget(&cell.get_id()),
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(user) = state.users.get(&cell.get_id()) {
                    tracing::error!(user_id = %user, error = %error, "session actor crashed; its sockets will reconnect and resume");
                }
                state.forget(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<RegistryMsg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        if state.handle.get().is_some_and(|r| r.get_id() == myself.get_id()) {
            state.handle.set(None);
        }
        Ok(())
    }
}
