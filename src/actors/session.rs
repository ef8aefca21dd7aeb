//! One `SessionActor` per connected user: receives that user's progress
//! events (from the relay, through the supervisor) and pushes them to every
//! socket the user has open. A socket that cannot keep up is dropped (its
//! client reconnects and `resume`s); the actor stops when no socket is left.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::domain::ProgressEvent;

/// What a socket's writer task sends to the browser.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Text(Arc<str>),
    Close { code: u16, reason: String },
}

/// The sending half of one socket, as the session sees it.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    pub id: u64,
    pub tx: mpsc::Sender<Outgoing>,
}

pub enum SessionMsg {
    AddSocket(SocketHandle),
    RemoveSocket(u64),
    Push(Arc<ProgressEvent>),
    /// A control message for every socket (e.g. `{"type":"resync"}`).
    Broadcast(Arc<str>),
}

impl std::fmt::Debug for SessionMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionMsg::AddSocket(s) => write!(f, "AddSocket({})", s.id),
            SessionMsg::RemoveSocket(id) => write!(f, "RemoveSocket({id})"),
            SessionMsg::Push(e) => write!(f, "Push({} seq {})", e.job_id, e.seq),
            SessionMsg::Broadcast(m) => write!(f, "Broadcast({} bytes)", m.len()),
        }
    }
}

pub struct SessionState {
    user_id: Uuid,
    sockets: Vec<SocketHandle>,
}

pub struct SessionActor;

impl SessionState {
    fn send_all(&mut self, text: Arc<str>) {
        let user_id = self.user_id;
        self.sockets
            .retain(|s| match s.tx.try_send(Outgoing::Text(text.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the writer task, which closes the
                    // socket; the client reconnects and resumes from its last seq.
                    tracing::warn!(user_id = %user_id, socket = s.id, "socket too slow; disconnecting it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = (Uuid, SocketHandle);

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        (user_id, first): (Uuid, SocketHandle),
    ) -> Result<SessionState, ActorProcessingErr> {
        Ok(SessionState {
            user_id,
            sockets: vec![first],
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::AddSocket(s) => state.sockets.push(s),
            SessionMsg::RemoveSocket(id) => state.sockets.retain(|s| s.id != id),
            SessionMsg::Push(event) => {
                let text: Arc<str> = serde_json::to_string(&*event)?.into();
                state.send_all(text);
            }
            SessionMsg::Broadcast(text) => state.send_all(text),
        }
        state.sockets.retain(|s| !s.tx.is_closed());
        if state.sockets.is_empty() {
            myself.stop(Some("no sockets left".into()));
        }
        Ok(())
    }
}
