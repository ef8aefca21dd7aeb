//! One `SessionActor` per connected user: receives that user's progress
//! events (from the relay, through the supervisor) and pushes them to every
//! socket the user has open.
//!
//! Limits live here: at most `websocket.max_sockets_per_user` sockets (one
//! more is closed with 1008), and at most `max_events_per_job_per_sec` events
//! per job: intermediate events of a stage beyond that are coalesced (the
//! newest is sent when the interval ends, or just before the next stage
//! change), while stage changes and the final event go out at once. A socket that cannot keep up is dropped; its client
//! reconnects and `resume`s from its last seq. The actor stops when no socket
//! is left.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::domain::{EventType, ProgressEvent, Stage};

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
    /// Internal: a job's coalescing interval ended.
    Flush(String),
}

impl std::fmt::Debug for SessionMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionMsg::AddSocket(s) => write!(f, "AddSocket({})", s.id),
            SessionMsg::RemoveSocket(id) => write!(f, "RemoveSocket({id})"),
            SessionMsg::Push(e) => write!(f, "Push({} seq {})", e.job_id, e.seq),
            SessionMsg::Broadcast(m) => write!(f, "Broadcast({} bytes)", m.len()),
            SessionMsg::Flush(job) => write!(f, "Flush({job})"),
        }
    }
}

pub struct SessionArgs {
    pub user_id: Uuid,
    pub first: SocketHandle,
    pub max_sockets: usize,
    /// Shortest gap between two intermediate events of one job.
    pub min_event_gap: Duration,
}

/// Pacing of one job's events.
struct Pacing {
    last_sent: Instant,
    last_stage: Stage,
    pending: Option<Arc<ProgressEvent>>,
    flush_scheduled: bool,
}

pub struct SessionState {
    user_id: Uuid,
    sockets: Vec<SocketHandle>,
    max_sockets: usize,
    min_event_gap: Duration,
    jobs: HashMap<String, Pacing>,
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

    fn send_event(&mut self, event: &ProgressEvent) -> Result<(), ActorProcessingErr> {
        let text: Arc<str> = serde_json::to_string(event)?.into();
        self.send_all(text);
        Ok(())
    }

    fn add_socket(&mut self, socket: SocketHandle) {
        self.sockets.retain(|s| !s.tx.is_closed());
        if self.sockets.len() >= self.max_sockets {
            let _ = socket.tx.try_send(Outgoing::Close {
                code: 1008,
                reason: format!("more than {} open sockets for this user", self.max_sockets),
            });
            return;
        }
        self.sockets.push(socket);
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        Ok(SessionState {
            user_id: args.user_id,
            sockets: vec![args.first],
            max_sockets: args.max_sockets,
            min_event_gap: args.min_event_gap,
            jobs: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::AddSocket(s) => state.add_socket(s),
            SessionMsg::RemoveSocket(id) => state.sockets.retain(|s| s.id != id),
            SessionMsg::Push(event) => {
                let gap = state.min_event_gap;
                let now = Instant::now();
                let pacing = state.jobs.entry(event.job_id.clone()).or_insert(Pacing {
                    last_sent: now - gap,
                    last_stage: Stage::Queued,
                    pending: None,
                    flush_scheduled: false,
                });
                let intermediate = event.kind == EventType::JobProgress && event.stage == pacing.last_stage;
                if !intermediate || now.duration_since(pacing.last_sent) >= gap {
                    // An event held back goes out first, so the user sees
                    // where each stage ended before the next one starts
                    // (at most one extra message per stage change).
                    let held = pacing.pending.take();
                    pacing.last_sent = now;
                    pacing.last_stage = event.stage;
                    let done = event.stage.is_terminal();
                    if let Some(held) = held {
                        state.send_event(&held)?;
                    }
                    state.send_event(&event)?;
                    if done {
                        state.jobs.remove(&event.job_id);
                    }
                } else {
                    pacing.pending = Some(event.clone());
                    if !pacing.flush_scheduled {
                        pacing.flush_scheduled = true;
                        let wait = gap.saturating_sub(now.duration_since(pacing.last_sent));
                        let job = event.job_id.clone();
                        myself.send_after(wait, move || SessionMsg::Flush(job));
                    }
                }
            }
            SessionMsg::Flush(job) => {
                let held = state.jobs.get_mut(&job).and_then(|p| {
                    p.flush_scheduled = false;
                    let e = p.pending.take()?;
                    p.last_sent = Instant::now();
                    Some(e)
                });
                if let Some(event) = held {
                    state.send_event(&event)?;
                }
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
