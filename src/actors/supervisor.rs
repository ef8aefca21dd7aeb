//! The root of the actor tree.
//!
//! ```text
//! Supervisor
//! ├── QueuePoller          (one; restarted with backoff)
//! ├── Watchdog             (one; stall check + reconciler on a timer; restarted with backoff)
//! ├── Indexer              (one; moves stored chunks into the ANN index in the background)
//! ├── ProgressRelay        (one; Redis pub/sub → sessions and control; restarted with backoff)
//! ├── DocumentActor × N    (one per running job; a crash restarts the job as a new attempt)
//! └── SessionActor × U     (one per connected user; fans events out to that user's sockets)
//! ```
//!
//! ractor restarts nothing by itself and its default supervisor stops when
//! any child exits, so `handle_supervisor_evt` below decides, per child kind,
//! what a termination or a crash means. `actors.md` describes the same tree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::document::{DocumentActor, DocumentArgs};
use super::indexer::{Indexer, IndexerArgs};
use super::queue_poller::{PollerArgs, QueuePoller};
use super::relay::{ProgressRelay, RelayArgs};
use super::session::{SessionActor, SessionArgs, SessionMsg, SocketHandle};
use super::watchdog::{Watchdog, WatchdogArgs};
use crate::arq::wire::{cancelled_error, job_execution_failed};
use crate::arq::{Claimed, JobDef};
use crate::domain::Envelope;
use crate::jobs::{self, NOOP, PROCESS_DOCUMENT};
use crate::services::Services;

/// How often a crashed job may be restarted before it fails for good.
const MAX_JOB_RESTARTS: u32 = 3;
/// Restart budget of the singleton children: more crashes than this within
/// the window escalate (the supervisor stops, and the process exits).
const MAX_CHILD_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

pub enum SupervisorMsg {
    /// The poller claimed a job.
    StartJob(Box<Claimed>),
    /// A WebSocket connected for a user.
    RegisterSocket { user_id: Uuid, socket: SocketHandle },
    /// A WebSocket closed.
    UnregisterSocket { user_id: Uuid, socket_id: u64 },
    /// A progress event for a user, from the relay.
    Deliver(Box<Envelope>),
    /// The relay reconnected: every socket may have missed events.
    ResyncAll,
    /// Recovery (on any instance) handed this job to another worker: kill
    /// our attempt of it if it is the claim with this try number.
    StopAttempt { job_id: String, job_try: i64 },
    /// Cancel a job running here; replies whether it was running here.
    Cancel { job_id: String, reply: RpcReplyPort<bool> },
    /// Jobs running here now.
    Running(RpcReplyPort<Vec<String>>),
    /// Graceful shutdown: stop claiming, give running jobs `grace` to finish,
    /// then cancel what is left and hand it back to the queue.
    Drain {
        grace: Duration,
        reply: RpcReplyPort<usize>,
    },
    /// Internal: restart a singleton child after its backoff.
    Respawn(ChildKind),
    /// Internal: the drain's grace period is over.
    DrainTimeout,
}

impl std::fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorMsg::StartJob(c) => write!(f, "StartJob({})", c.job_id),
            SupervisorMsg::RegisterSocket { user_id, .. } => write!(f, "RegisterSocket({user_id})"),
            SupervisorMsg::UnregisterSocket { user_id, socket_id } => {
                write!(f, "UnregisterSocket({user_id}, {socket_id})")
            }
            SupervisorMsg::Deliver(e) => write!(f, "Deliver({}, seq {})", e.event.job_id, e.event.seq),
            SupervisorMsg::ResyncAll => f.write_str("ResyncAll"),
            SupervisorMsg::StopAttempt { job_id, job_try } => write!(f, "StopAttempt({job_id}, try {job_try})"),
            SupervisorMsg::Cancel { job_id, .. } => write!(f, "Cancel({job_id})"),
            SupervisorMsg::Running(_) => f.write_str("Running"),
            SupervisorMsg::Drain { grace, .. } => write!(f, "Drain({grace:?})"),
            SupervisorMsg::Respawn(k) => write!(f, "Respawn({k:?})"),
            SupervisorMsg::DrainTimeout => f.write_str("DrainTimeout"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Poller,
    Relay,
    Watchdog,
    Indexer,
}

pub struct SupervisorArgs {
    pub services: Arc<Services>,
    /// Run the queue poller and the watchdog (the `worker` role).
    pub worker: bool,
}

struct RunningJob {
    job_id: String,
    cell: ActorCell,
    args: DocumentArgs,
    restarts: u32,
    lease: JoinHandle<()>,
}

pub struct SupervisorState {
    services: Arc<Services>,
    worker: bool,
    draining: bool,
    /// Jobs running or claimed here; shared with the poller, which claims at
    /// most `max_jobs - running`.
    running: Arc<AtomicUsize>,
    jobs: HashMap<ActorId, RunningJob>,
    job_actors: HashMap<String, ActorId>,
    sessions: HashMap<Uuid, ActorRef<SessionMsg>>,
    session_users: HashMap<ActorId, Uuid>,
    children: HashMap<ActorId, (ChildKind, ActorCell)>,
    restarts: HashMap<ChildKind, Vec<tokio::time::Instant>>,
    /// Jobs drained at shutdown wait here to be handed back.
    drain_waiters: Vec<RpcReplyPort<usize>>,
}

pub struct Supervisor;

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: ChildKind,
    ) -> Result<(), ActorProcessingErr> {
        let cell: ActorCell = match kind {
            ChildKind::Poller => {
                let (r, _) = Actor::spawn_linked(
                    None,
                    QueuePoller,
                    PollerArgs {
                        services: state.services.clone(),
                        supervisor: myself.clone(),
                        running: state.running.clone(),
                    },
                    myself.get_cell(),
                )
                .await?;
                r.get_cell()
            }
            ChildKind::Watchdog => {
                let (r, _) = Actor::spawn_linked(
                    None,
                    Watchdog,
                    WatchdogArgs {
                        services: state.services.clone(),
                    },
                    myself.get_cell(),
                )
                .await?;
                r.get_cell()
            }
            ChildKind::Indexer => {
                let (r, _) = Actor::spawn_linked(
                    None,
                    Indexer,
                    IndexerArgs {
                        services: state.services.clone(),
                    },
                    myself.get_cell(),
                )
                .await?;
                r.get_cell()
            }
            ChildKind::Relay => {
                let (r, _) = Actor::spawn_linked(
                    None,
                    ProgressRelay,
                    RelayArgs {
                        services: state.services.clone(),
                        supervisor: myself.clone(),
                    },
                    myself.get_cell(),
                )
                .await?;
                r.get_cell()
            }
        };
        state.children.insert(cell.get_id(), (kind, cell));
        Ok(())
    }

    /// Restarts a singleton child after a capped exponential backoff, or
    /// escalates when it crashed too often within the window.
    fn schedule_restart(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: ChildKind,
    ) -> Result<(), ActorProcessingErr> {
        let now = tokio::time::Instant::now();
        let history = state.restarts.entry(kind).or_default();
        history.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        history.push(now);
        if history.len() > MAX_CHILD_RESTARTS {
            tracing::error!(child = ?kind, restarts = history.len(), "child keeps crashing; escalating");
            return Err(format!("{kind:?} crashed {} times within {RESTART_WINDOW:?}", history.len()).into());
        }
        let delay = Duration::from_millis(250 * (1 << (history.len() - 1).min(6)));
        tracing::warn!(child = ?kind, delay_ms = delay.as_millis() as u64, "restarting child");
        myself.send_after(delay, move || SupervisorMsg::Respawn(kind));
        Ok(())
    }

    async fn start_job(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, mut claimed: Claimed) {
        let services = state.services.clone();
        // Pre-run checks, in arq's order (spec/arq-wire.md §6.3).
        let job_bytes = match &claimed.job_bytes {
            Some(b) => b.clone(),
            None => match jobs::restore_expired(&services, &claimed.job_id).await {
                Some(b) => {
                    claimed.job_bytes = Some(b.clone());
                    b
                }
                None => {
                    Self::fail_unstarted(state, claimed, None, "job expired", job_execution_failed("job expired"));
                    return;
                }
            },
        };
        let job = match JobDef::decode(&job_bytes, services.queue.serializer) {
            Ok(job) => job,
            Err(reason) => {
                let msg = format!("unable to deserialize job: {reason}");
                Self::fail_unstarted(state, claimed, None, &msg, job_execution_failed(msg.clone()));
                return;
            }
        };
        if claimed.abort_requested {
            Self::fail_unstarted(
                state,
                claimed,
                Some(job),
                "cancelled before it started",
                cancelled_error(),
            );
            return;
        }
        let known = job.function == PROCESS_DOCUMENT || (job.function == NOOP && services.settings.queue.enable_noop);
        if !known {
            let msg = format!("function '{}' not found", job.function);
            Self::fail_unstarted(state, claimed, Some(job), &msg, job_execution_failed(msg.clone()));
            return;
        }
        // A `_job_try` given to enqueue_job raises the try count (arq §6.3 step 5).
        if let Some(t) = job.job_try.filter(|t| *t > claimed.job_try) {
            claimed.job_try = t;
            if let Err(e) = services.queue.set_try(&claimed.job_id, t).await {
                tracing::warn!(job_id = %claimed.job_id, error = %e, "cannot store the job's try count");
            }
        }
        let max_tries = services.settings.queue.max_tries;
        if claimed.job_try > max_tries as i64 {
            let msg = format!("max {max_tries} retries exceeded");
            Self::fail_unstarted(state, claimed, Some(job), &msg, jobs::max_tries_exceeded(max_tries));
            return;
        }
        if job.function == NOOP {
            let running = state.running.clone();
            tokio::spawn(async move {
                let start_ms = crate::arq::now_ms();
                jobs::arq_finish(
                    &services,
                    &claimed,
                    Some(&job),
                    start_ms,
                    true,
                    crate::arq::PyValue::None,
                )
                .await;
                running.fetch_sub(1, Ordering::SeqCst);
            });
            return;
        }
        let args = DocumentArgs {
            services: services.clone(),
            claimed: claimed.clone(),
            job,
            cancel: CancellationToken::new(),
            deadline: tokio::time::Instant::now() + services.settings.queue.job_timeout(),
        };
        let lease = spawn_lease(services.clone(), claimed.job_id.clone());
        Self::spawn_document(myself, state, args, 0, lease).await;
    }

    async fn spawn_document(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        args: DocumentArgs,
        restarts: u32,
        lease: JoinHandle<()>,
    ) {
        let job_id = args.claimed.job_id.clone();
        match Actor::spawn_linked(None, DocumentActor, args.clone(), myself.get_cell()).await {
            Ok((actor, _)) => {
                let id = actor.get_id();
                state.job_actors.insert(job_id.clone(), id);
                state.jobs.insert(
                    id,
                    RunningJob {
                        job_id,
                        cell: actor.get_cell(),
                        args,
                        restarts,
                        lease,
                    },
                );
            }
            Err(e) => {
                // pre_start cannot fail for DocumentActor; treat it like a crash.
                tracing::error!(job_id = %job_id, error = %e, "cannot start a document actor");
                lease.abort();
                state.running.fetch_sub(1, Ordering::SeqCst);
                let services = state.services.clone();
                tokio::spawn(async move {
                    jobs::arq_retry(&services, &args.claimed, Duration::from_secs(1)).await;
                });
            }
        }
    }

    /// Fails a job that never gets an actor; frees its slot when done.
    fn fail_unstarted(
        state: &mut SupervisorState,
        claimed: Claimed,
        job: Option<JobDef>,
        reason: &str,
        exception: crate::arq::PyValue,
    ) {
        let services = state.services.clone();
        let running = state.running.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            jobs::fail_without_actor(&services, &claimed, job.as_ref(), &reason, exception).await;
            running.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn answer_drain_waiters(state: &mut SupervisorState) {
        if state.jobs.is_empty() {
            for reply in state.drain_waiters.drain(..) {
                let _ = reply.send(0);
            }
        }
    }
}

/// Keeps `arq:in-progress:<id>` alive while the job runs here, so another
/// worker takes the job over only after this process stopped renewing it.
fn spawn_lease(services: Arc<Services>, job_id: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let lease = services.settings.queue.lease();
        let lease_ms = lease.as_millis() as i64;
        let mut tick = tokio::time::interval(lease / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            match services.queue.renew(&job_id, lease_ms).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(job_id = %job_id, "the job's lease was gone from redis; restored it"),
                Err(e) => tracing::warn!(job_id = %job_id, error = %e, "cannot renew the job's lease"),
            }
        }
    })
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            services: args.services,
            worker: args.worker,
            draining: false,
            running: Arc::new(AtomicUsize::new(0)),
            jobs: HashMap::new(),
            job_actors: HashMap::new(),
            sessions: HashMap::new(),
            session_users: HashMap::new(),
            children: HashMap::new(),
            restarts: HashMap::new(),
            drain_waiters: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Every role relays: the API side feeds sockets, the worker side
        // listens for control messages (stop a stuck attempt).
        Self::spawn_child(&myself, state, ChildKind::Relay).await?;
        if state.worker {
            Self::spawn_child(&myself, state, ChildKind::Poller).await?;
            Self::spawn_child(&myself, state, ChildKind::Watchdog).await?;
            Self::spawn_child(&myself, state, ChildKind::Indexer).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartJob(claimed) => {
                if state.draining {
                    // Claimed just before the drain: hand it straight back.
                    let services = state.services.clone();
                    let running = state.running.clone();
                    tokio::spawn(async move {
                        jobs::arq_retry(&services, &claimed, Duration::ZERO).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                    });
                } else {
                    Self::start_job(&myself, state, *claimed).await;
                }
            }
            SupervisorMsg::RegisterSocket { user_id, socket } => {
                if let Some(session) = state.sessions.get(&user_id) {
                    if session.cast(SessionMsg::AddSocket(socket.clone())).is_ok() {
                        return Ok(());
                    }
                }
                let ws = &state.services.settings.websocket;
                let args = SessionArgs {
                    user_id,
                    first: socket,
                    max_sockets: ws.max_sockets_per_user,
                    min_event_gap: Duration::from_secs_f64(1.0 / ws.max_events_per_job_per_sec as f64),
                };
                match Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await {
                    Ok((session, _)) => {
                        state.session_users.insert(session.get_id(), user_id);
                        state.sessions.insert(user_id, session);
                    }
                    Err(e) => tracing::error!(user_id = %user_id, error = %e, "cannot start a session actor"),
                }
            }
            SupervisorMsg::UnregisterSocket { user_id, socket_id } => {
                if let Some(session) = state.sessions.get(&user_id) {
                    let _ = session.cast(SessionMsg::RemoveSocket(socket_id));
                }
            }
            SupervisorMsg::ResyncAll => {
                let text: Arc<str> = Arc::from(r#"{"type":"resync"}"#);
                for session in state.sessions.values() {
                    let _ = session.cast(SessionMsg::Broadcast(text.clone()));
                }
            }
            SupervisorMsg::StopAttempt { job_id, job_try } => {
                let target = state
                    .job_actors
                    .get(&job_id)
                    .copied()
                    .filter(|id| state.jobs.get(id).is_some_and(|j| j.args.claimed.job_try <= job_try));
                if let Some(id) = target {
                    if let Some(job) = state.jobs.remove(&id) {
                        tracing::warn!(job_id = %job_id, job_try, "stopping a stalled attempt another worker took over");
                        state.job_actors.remove(&job_id);
                        job.lease.abort();
                        // Kill: the attempt is fenced already and must write nothing more.
                        job.cell.kill();
                        state.running.fetch_sub(1, Ordering::SeqCst);
                        Self::answer_drain_waiters(state);
                    }
                }
            }
            SupervisorMsg::Deliver(envelope) => {
                if let Some(session) = state.sessions.get(&envelope.user_id) {
                    let _ = session.cast(SessionMsg::Push(Arc::new(envelope.event)));
                }
            }
            SupervisorMsg::Cancel { job_id, reply } => {
                let found = match state.job_actors.get(&job_id).and_then(|id| state.jobs.get(id)) {
                    Some(job) => {
                        job.args.cancel.cancel();
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
            SupervisorMsg::Running(reply) => {
                let _ = reply.send(state.jobs.values().map(|j| j.job_id.clone()).collect());
            }
            SupervisorMsg::Drain { grace, reply } => {
                state.draining = true;
                for (kind, cell) in state.children.values() {
                    if *kind == ChildKind::Poller {
                        cell.stop(Some("draining".into()));
                    }
                }
                if state.jobs.is_empty() {
                    let _ = reply.send(0);
                } else {
                    tracing::info!(
                        running = state.jobs.len(),
                        grace_ms = grace.as_millis() as u64,
                        "draining running jobs"
                    );
                    state.drain_waiters.push(reply);
                    myself.send_after(grace, || SupervisorMsg::DrainTimeout);
                }
            }
            SupervisorMsg::DrainTimeout => {
                if !state.jobs.is_empty() {
                    let left = state.jobs.len();
                    tracing::warn!(jobs = left, "grace period over; handing running jobs back to the queue");
                    for (_, job) in state.jobs.drain() {
                        job.lease.abort();
                        // Kill, not cancel: a cancelled job would be failed,
                        // but this one goes back to the queue unharmed (its
                        // writes are transactional and fenced by attempt).
                        job.cell.kill();
                        let services = state.services.clone();
                        let claimed = job.args.claimed.clone();
                        tokio::spawn(async move { jobs::arq_retry(&services, &claimed, Duration::ZERO).await });
                    }
                    state.job_actors.clear();
                    for reply in state.drain_waiters.drain(..) {
                        let _ = reply.send(left);
                    }
                }
            }
            SupervisorMsg::Respawn(kind) => {
                if state.draining {
                    return Ok(());
                }
                Self::spawn_child(&myself, state, kind).await?;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let id = cell.get_id();
                if let Some(job) = state.jobs.remove(&id) {
                    job.lease.abort();
                    state.job_actors.remove(&job.job_id);
                    state.running.fetch_sub(1, Ordering::SeqCst);
                    Self::answer_drain_waiters(state);
                } else if let Some(user) = state.session_users.remove(&id) {
                    if state.sessions.get(&user).map(|s| s.get_id()) == Some(id) {
                        state.sessions.remove(&user);
                    }
                } else if let Some((kind, _)) = state.children.remove(&id) {
                    if !state.draining {
                        tracing::warn!(child = ?kind, ?reason, "child stopped unexpectedly");
                        Self::schedule_restart(&myself, state, kind)?;
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let id = cell.get_id();
                if let Some(job) = state.jobs.remove(&id) {
                    state.job_actors.remove(&job.job_id);
                    tracing::error!(job_id = %job.job_id, restarts = job.restarts, error = %error, "document actor crashed");
                    if state.draining || job.restarts >= MAX_JOB_RESTARTS {
                        job.lease.abort();
                        let services = state.services.clone();
                        let running = state.running.clone();
                        let claimed = job.args.claimed.clone();
                        let draining = state.draining;
                        let restarts = job.restarts + 1;
                        let job_def = job.args.job.clone();
                        tokio::spawn(async move {
                            if draining {
                                jobs::arq_retry(&services, &claimed, Duration::ZERO).await;
                            } else {
                                let reason =
                                    format!("the worker crashed {restarts} times while processing this document");
                                jobs::fail_without_actor(
                                    &services,
                                    &claimed,
                                    Some(&job_def),
                                    &reason,
                                    job_execution_failed(reason.clone()),
                                )
                                .await;
                            }
                            running.fetch_sub(1, Ordering::SeqCst);
                        });
                        Self::answer_drain_waiters(state);
                    } else {
                        // Restart the job as a new attempt; its slot and lease carry over.
                        Self::spawn_document(&myself, state, job.args, job.restarts + 1, job.lease).await;
                    }
                } else if let Some(user) = state.session_users.remove(&id) {
                    tracing::error!(user_id = %user, error = %error, "session actor crashed; its sockets will reconnect and resume");
                    state.sessions.remove(&user);
                } else if let Some((kind, _)) = state.children.remove(&id) {
                    tracing::error!(child = ?kind, error = %error, "child crashed");
                    if !state.draining {
                        Self::schedule_restart(&myself, state, kind)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for job in state.jobs.values() {
            job.lease.abort();
        }
        Ok(())
    }
}
