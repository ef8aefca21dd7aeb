//! One `SessionActor` per connected user, a child of the session registry:
//! it pushes that user's progress events to every socket the user has open.
//!
//! - **Registration is acknowledged** here, by the actor that will deliver:
//!   a socket counts as registered only when this actor has it (the socket
//!   handler retries against a fresh session if the reply never comes).
//! - **Limits**: at most `websocket.max_sockets_per_user` sockets (one more is
//!   refused with 1008), and at most `max_events_per_job_per_sec` events per
//!   job, judged by the events' own timestamps: intermediate events of a
//!   stage closer together than that are coalesced (the newest goes out when
//!   the interval ends, or just before the next stage change); stage changes
//!   and final events always go out at once.
//! - **A socket that cannot keep up** (its outgoing buffer is full) is kicked:
//!   its writer closes it with 1008 and a reason, and the client reconnects
//!   and `resume`s from its last seq. No socket stays open and silent.
//! - **Back-pressure**: the registry holds at most a bounded number of this
//!   session's events in flight; when it had to drop some, this actor sends
//!   `{"type":"resync"}` once it has caught up.
//! - It stops a few seconds after its last socket left (a reconnect within
//!   that time finds it still here).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::mailbox::{Bound, Ticket};
use crate::domain::{EventType, ProgressEvent, Stage};

/// How long a session without sockets waits for one before it stops.
const IDLE_STOP: Duration = Duration::from_secs(5);
pub const RESYNC: &str = r#"{"type":"resync"}"#;

/// What a socket's writer task sends to the browser.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Shared by every socket it goes to (no copy per socket).
    Text(Utf8Bytes),
    /// A progress event: the writer sends each (job, seq) at most once per
    /// socket, whether it comes live or from a `resume`.
    Event {
        text: Utf8Bytes,
        job: Arc<str>,
        seq: i64,
    },
    Close {
        code: u16,
        reason: String,
    },
    /// From the socket's reader once it answered the client's first message
    /// (a `resume` has queued its replay by then): live events may flow.
    Ready,
    /// From the socket's reader before it replays a `resume` on a socket
    /// already live (after a `resync`): live events wait until the `Ready`
    /// that follows the replay, so they do not run ahead of it.
    Hold,
}

/// The sending half of one socket, as the session sees it.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    pub id: u64,
    /// Live events (never awaited: a full buffer means a slow reader).
    pub tx: mpsc::Sender<Outgoing>,
    /// Cancelled when the socket is too slow: its writer closes it with 1008.
    pub kick: CancellationToken,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Accepted,
    /// Closed with 1008 and this reason (too many sockets).
    Refused(String),
}

pub enum SessionMsg {
    AddSocket(SocketHandle, Option<RpcReplyPort<Registration>>),
    RemoveSocket(u64),
    Push(Arc<ProgressEvent>, Ticket),
    /// A control message for every socket (e.g. `{"type":"resync"}`).
    Broadcast(Utf8Bytes),
    /// Internal: a job's coalescing interval ended.
    Flush(String),
    /// Internal: stop if still without sockets since `generation`.
    IdleCheck(u64),
}

impl std::fmt::Debug for SessionMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionMsg::AddSocket(s, _) => write!(f, "AddSocket({})", s.id),
            SessionMsg::RemoveSocket(id) => write!(f, "RemoveSocket({id})"),
            SessionMsg::Push(e, _) => write!(f, "Push({} seq {})", e.job_id, e.seq),
            SessionMsg::Broadcast(m) => write!(f, "Broadcast({} bytes)", m.len()),
            SessionMsg::Flush(job) => write!(f, "Flush({job})"),
            SessionMsg::IdleCheck(g) => write!(f, "IdleCheck({g})"),
        }
    }
}

pub struct SessionArgs {
    pub user_id: Uuid,
    pub max_sockets: usize,
    /// Shortest gap between two intermediate events of one job.
    pub min_event_gap: Duration,
    /// This session's in-flight events at the registry.
    pub inbox: Bound,
}

/// Pacing of one job's events.
struct Pacing {
    /// Timestamp of the last event sent.
    last_sent: chrono::DateTime<chrono::Utc>,
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
    inbox: Bound,
    /// Bumped whenever the socket count changes.
    generation: u64,
    empty_since: Option<Instant>,
}

pub struct SessionActor;

impl SessionState {
    fn send_all(&mut self, msg: Outgoing) {
        let user_id = self.user_id;
        self.sockets.retain(|s| match s.tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(user_id = %user_id, socket = s.id, "socket too slow; closing it with 1008");
                s.kick.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    fn send_event(&mut self, event: &ProgressEvent) -> Result<(), ActorProcessingErr> {
        // One serialisation for all of the user's sockets.
        let text = Utf8Bytes::from(serde_json::to_string(event)?);
        self.send_all(Outgoing::Event {
            text,
            job: event.job_id.as_str().into(),
            seq: event.seq,
        });
        Ok(())
    }

    fn add_socket(&mut self, socket: SocketHandle) -> Registration {
        self.sockets.retain(|s| !s.tx.is_closed());
        if self.sockets.len() >= self.max_sockets {
            return Registration::Refused(format!("more than {} open sockets for this user", self.max_sockets));
        }
        self.sockets.push(socket);
        Registration::Accepted
    }

    fn push(&mut self, myself: &ActorRef<SessionMsg>, event: Arc<ProgressEvent>) -> Result<(), ActorProcessingErr> {
        let gap = chrono::Duration::from_std(self.min_event_gap).unwrap_or_default();
        let pacing = self.jobs.entry(event.job_id.clone()).or_insert(Pacing {
            last_sent: event.timestamp - gap,
            last_stage: Stage::Queued,
            pending: None,
            flush_scheduled: false,
        });
        let intermediate = event.kind == EventType::JobProgress && event.stage == pacing.last_stage;
        if !intermediate || event.timestamp - pacing.last_sent >= gap {
            // An event held back goes out first, so the user sees where each
            // stage ended before the next one starts.
            let held = pacing.pending.take();
            pacing.last_sent = event.timestamp;
            pacing.last_stage = event.stage;
            let done = event.stage.is_terminal();
            if let Some(held) = held {
                self.send_event(&held)?;
            }
            self.send_event(&event)?;
            if done {
                self.jobs.remove(&event.job_id);
            }
        } else {
            pacing.pending = Some(event.clone());
            if !pacing.flush_scheduled {
                pacing.flush_scheduled = true;
                let job = event.job_id.clone();
                myself.send_after(self.min_event_gap, move || SessionMsg::Flush(job));
            }
        }
        Ok(())
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
            sockets: Vec::new(),
            max_sockets: args.max_sockets,
            min_event_gap: args.min_event_gap,
            jobs: HashMap::new(),
            inbox: args.inbox,
            generation: 0,
            empty_since: Some(Instant::now()),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let before = state.sockets.len();
        match msg {
            SessionMsg::AddSocket(s, reply) => {
                let answer = state.add_socket(s);
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            SessionMsg::RemoveSocket(id) => state.sockets.retain(|s| s.id != id),
            SessionMsg::Push(event, ticket) => {
                state.push(&myself, event)?;
                drop(ticket);
                if state.inbox.caught_up_after_overflow() {
                    tracing::warn!(user_id = %state.user_id, "events were dropped under load; asking the sockets to resync");
                    state.send_all(Outgoing::Text(Utf8Bytes::from_static(RESYNC)));
                }
            }
            SessionMsg::Flush(job) => {
                let held = state.jobs.get_mut(&job).and_then(|p| {
                    p.flush_scheduled = false;
                    let e = p.pending.take()?;
                    p.last_sent = e.timestamp;
                    Some(e)
                });
                if let Some(event) = held {
                    state.send_event(&event)?;
                }
            }
            SessionMsg::Broadcast(text) => state.send_all(Outgoing::Text(text)),
            SessionMsg::IdleCheck(generation) => {
                if generation == state.generation && state.sockets.is_empty() {
                    myself.stop(Some("no sockets left".into()));
                }
                return Ok(());
            }
        }
        state.sockets.retain(|s| !s.tx.is_closed());
        if state.sockets.len() != before {
            state.generation += 1;
        }
        if state.sockets.is_empty() {
            if state.empty_since.is_none() || state.sockets.len() != before {
                state.empty_since = Some(Instant::now());
                let generation = state.generation;
                myself.send_after(IDLE_STOP, move || SessionMsg::IdleCheck(generation));
            }
        } else {
            state.empty_since = None;
        }
        Ok(())
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let generation = state.generation;
        myself.send_after(IDLE_STOP, move || SessionMsg::IdleCheck(generation));
        Ok(())
    }
}
