//! The root of the actor tree. It supervises and does nothing else: it
//! spawns its children, decides what a child's end means (restart with
//! capped backoff, restart a job as a new attempt, or escalate), holds the
//! job slots, and drains on shutdown. It decodes nothing and does no I/O in
//! its handler: a claimed job goes, undecoded, to its own `DocumentActor`
//! (which reads and checks it under a time limit and fails it if it is bad),
//! and sockets are the session registry's.
//!
//! ```text
//! Supervisor
//! ├── SessionRegistry      (one; user → SessionActor, event routing; restarted with backoff)
//! │   └── SessionActor × U (one per connected user; fans events out to that user's sockets)
//! ├── ProgressRelay        (one; Redis pub/sub → registry, control → here; restarted with backoff)
//! ├── QueuePoller          (one, worker role; restarted with backoff)
//! ├── Watchdog             (one, worker role; stall check + reconciler; restarted with backoff)
//! ├── Indexer              (one, worker role; stored chunks into the ANN index; restarted with backoff)
//! └── DocumentActor × N    (one per claimed job; a crash restarts the job as a new attempt)
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::document::{DocumentActor, DocumentArgs};
use super::indexer::{Indexer, IndexerArgs};
use super::queue_poller::{PollerArgs, PollerEvent, PollerMsg, QueuePoller};
use super::registry::{RegistryArgs, RegistryHandle, RegistryMsg, SessionRegistry};
use super::relay::{ProgressRelay, RelayArgs, RelayMsg};
use super::watchdog::{Watchdog, WatchdogArgs};
use crate::arq::wire::job_execution_failed;
use crate::arq::Claimed;
use crate::jobs;
use crate::recovery::StopAttempt;
use crate::services::Services;

/// How often a crashed job may be restarted before it fails for good.
const MAX_JOB_RESTARTS: u32 = 3;

pub enum SupervisorMsg {
    /// From the poller: a claimed job, or an abort request.
    Poller(PollerEvent),
    /// Recovery (on any instance) handed this job to another worker: kill
    /// our attempt of it if it is the claim with this try number or older.
    StopAttempt(StopAttempt),
    /// Cancel a job running here; replies whether it was running here.
    Cancel { job_id: String, reply: RpcReplyPort<bool> },
    /// Jobs running here now.
    Running(RpcReplyPort<Vec<String>>),
    /// Graceful shutdown: stop claiming, give running jobs `grace` to finish,
    /// then stop what is left and hand it back to the queue.
    Drain {
        grace: Duration,
        reply: RpcReplyPort<usize>,
    },
    /// Liveness: replies with the children that must answer too.
    Ping(RpcReplyPort<TreeRefs>),
    /// Internal: restart a singleton child after its backoff.
    Respawn(ChildKind),
    /// Internal: the drain's grace period is over.
    DrainTimeout,
    /// Test fault (`faults.freeze_supervisor_after_secs`): stop handling messages.
    Freeze,
}

impl std::fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorMsg::Poller(PollerEvent::Claimed(c)) => write!(f, "Claimed({})", c.job_id),
            SupervisorMsg::Poller(PollerEvent::Abort(id)) => write!(f, "Abort({id})"),
            SupervisorMsg::StopAttempt(s) => write!(f, "StopAttempt({}, try {})", s.job_id, s.job_try),
            SupervisorMsg::Cancel { job_id, .. } => write!(f, "Cancel({job_id})"),
            SupervisorMsg::Running(_) => f.write_str("Running"),
            SupervisorMsg::Drain { grace, .. } => write!(f, "Drain({grace:?})"),
            SupervisorMsg::Ping(_) => f.write_str("Ping"),
            SupervisorMsg::Respawn(k) => write!(f, "Respawn({k:?})"),
            SupervisorMsg::DrainTimeout => f.write_str("DrainTimeout"),
            SupervisorMsg::Freeze => f.write_str("Freeze"),
        }
    }
}

impl From<PollerEvent> for SupervisorMsg {
    fn from(e: PollerEvent) -> Self {
        SupervisorMsg::Poller(e)
    }
}

impl TryFrom<SupervisorMsg> for PollerEvent {
    type Error = SupervisorMsg;
    fn try_from(m: SupervisorMsg) -> Result<Self, SupervisorMsg> {
        match m {
            SupervisorMsg::Poller(e) => Ok(e),
            other => Err(other),
        }
    }
}

impl From<StopAttempt> for SupervisorMsg {
    fn from(s: StopAttempt) -> Self {
        SupervisorMsg::StopAttempt(s)
    }
}

impl TryFrom<SupervisorMsg> for StopAttempt {
    type Error = SupervisorMsg;
    fn try_from(m: SupervisorMsg) -> Result<Self, SupervisorMsg> {
        match m {
            SupervisorMsg::StopAttempt(s) => Ok(s),
            other => Err(other),
        }
    }
}

/// The children a liveness check asks in turn (those that exist in this role).
#[derive(Debug, Clone, Default)]
pub struct TreeRefs {
    pub poller: Option<ActorRef<PollerMsg>>,
    pub relay: Option<ActorRef<RelayMsg>>,
    pub registry: Option<ActorRef<RegistryMsg>>,
    /// Whether this process runs jobs (then a missing poller is a failure).
    pub worker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Registry,
    Relay,
    Poller,
    Watchdog,
    Indexer,
}

/// Restart budget of the singleton children: more crashes than `max` within
/// `window` escalate (the supervisor fails, and the process exits).
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub max: usize,
    pub window: Duration,
    pub base: Duration,
    pub cap: Duration,
}

pub const RESTARTS: RestartPolicy = RestartPolicy {
    max: 5,
    window: Duration::from_secs(60),
    base: Duration::from_millis(250),
    cap: Duration::from_secs(16),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    After(Duration),
    Escalate,
}

impl RestartPolicy {
    /// Records a crash at `now` in `history` (recent crash times) and decides:
    /// restart after `base · 2^(n−1)` (capped), where n counts the crashes
    /// within the window, or escalate once n exceeds `max`.
    pub fn decide(&self, history: &mut Vec<Instant>, now: Instant) -> Restart {
        history.retain(|t| now.duration_since(*t) < self.window);
        history.push(now);
        let n = history.len();
        if n > self.max {
            return Restart::Escalate;
        }
        let factor = 1u32 << (n - 1).min(16);
        Restart::After(self.base.saturating_mul(factor).min(self.cap))
    }
}

pub struct SupervisorArgs {
    pub services: Arc<Services>,
    /// Filled in with the registry whenever it is (re)started.
    pub registry: RegistryHandle,
    /// Run the queue poller, watchdog and indexer (the `worker` role).
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
    registry: RegistryHandle,
    worker: bool,
    draining: bool,
    /// Jobs running or claimed here; shared with the poller, which claims at
    /// most `max_jobs - running`.
    running: Arc<AtomicUsize>,
    jobs: HashMap<ActorId, RunningJob>,
    job_actors: HashMap<String, ActorId>,
    children: HashMap<ActorId, ChildKind>,
    refs: TreeRefs,
    restarts: HashMap<ChildKind, Vec<Instant>>,
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
        let s = state.services.clone();
        let link = myself.get_cell();
        let cell: ActorCell = match kind {
            ChildKind::Registry => {
                let ws = &s.settings.websocket;
                let args = RegistryArgs {
                    handle: state.registry.clone(),
                    max_sockets: ws.max_sockets_per_user,
                    min_event_gap: Duration::from_secs_f64(1.0 / ws.max_events_per_job_per_sec as f64),
                };
                let (r, _) = Actor::spawn_linked(None, SessionRegistry, args, link).await?;
                state.refs.registry = Some(r.clone());
                r.get_cell()
            }
            ChildKind::Relay => {
                let args = RelayArgs {
                    services: s.clone(),
                    registry: state.registry.clone(),
                    stops: myself.get_derived(),
                };
                let (r, _) = Actor::spawn_linked(None, ProgressRelay, args, link).await?;
                state.refs.relay = Some(r.clone());
                r.get_cell()
            }
            ChildKind::Poller => {
                let args = PollerArgs {
                    services: s.clone(),
                    jobs: myself.get_derived(),
                    running: state.running.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, QueuePoller, args, link).await?;
                state.refs.poller = Some(r.clone());
                r.get_cell()
            }
            ChildKind::Watchdog => {
                let (r, _) = Actor::spawn_linked(None, Watchdog, WatchdogArgs { services: s }, link).await?;
                r.get_cell()
            }
            ChildKind::Indexer => {
                let (r, _) = Actor::spawn_linked(None, Indexer, IndexerArgs { services: s }, link).await?;
                r.get_cell()
            }
        };
        state.children.insert(cell.get_id(), kind);
        Ok(())
    }

    fn forget_child_ref(state: &mut SupervisorState, kind: ChildKind) {
        match kind {
            ChildKind::Registry => state.refs.registry = None,
            ChildKind::Relay => state.refs.relay = None,
            ChildKind::Poller => state.refs.poller = None,
            ChildKind::Watchdog | ChildKind::Indexer => {}
        }
    }

    /// Restarts a singleton child after a capped exponential backoff, or
    /// escalates when it crashed too often within the window.
    fn schedule_restart(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: ChildKind,
    ) -> Result<(), ActorProcessingErr> {
        let history = state.restarts.entry(kind).or_default();
        match RESTARTS.decide(history, Instant::now()) {
            Restart::Escalate => {
                tracing::error!(child = ?kind, restarts = history.len(), "child keeps crashing; escalating");
                Err(format!("{kind:?} crashed {} times within {:?}", history.len(), RESTARTS.window).into())
            }
            Restart::After(delay) => {
                tracing::warn!(child = ?kind, delay_ms = delay.as_millis() as u64, "restarting child");
                myself.send_after(delay, move || SupervisorMsg::Respawn(kind));
                Ok(())
            }
        }
    }

    /// Gives a claimed job its own actor (which decodes and checks it).
    async fn start_job(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, claimed: Claimed) {
        let services = state.services.clone();
        let args = DocumentArgs {
            services: services.clone(),
            claimed,
            cancel: CancellationToken::new(),
            deadline: tokio::time::Instant::now() + services.settings.queue.job_timeout(),
        };
        let lease = spawn_lease(services.clone(), args.claimed.job_id.clone());
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
                let claimed = args.claimed;
                Self::release_after(state, async move {
                    jobs::arq_retry(&args.services, &claimed, Duration::from_secs(1)).await;
                });
            }
        }
    }

    /// Runs `work` as tracked background work (shutdown waits for it), then
    /// frees the job's slot.
    fn release_after(state: &SupervisorState, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let running = state.running.clone();
        state.services.tasks.spawn(async move {
            work.await;
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
            registry: args.registry,
            worker: args.worker,
            draining: false,
            running: Arc::new(AtomicUsize::new(0)),
            jobs: HashMap::new(),
            job_actors: HashMap::new(),
            children: HashMap::new(),
            refs: TreeRefs {
                worker: args.worker,
                ..TreeRefs::default()
            },
            restarts: HashMap::new(),
            drain_waiters: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Every role has the registry and the relay: the API side feeds
        // sockets, the worker side listens for control messages.
        Self::spawn_child(&myself, state, ChildKind::Registry).await?;
        Self::spawn_child(&myself, state, ChildKind::Relay).await?;
        if state.worker {
            Self::spawn_child(&myself, state, ChildKind::Poller).await?;
            Self::spawn_child(&myself, state, ChildKind::Watchdog).await?;
            Self::spawn_child(&myself, state, ChildKind::Indexer).await?;
        }
        if let Some(secs) = state.services.faults.freeze_supervisor_after() {
            myself.send_after(secs, || SupervisorMsg::Freeze);
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
            SupervisorMsg::Poller(PollerEvent::Claimed(claimed)) => {
                if state.draining {
                    // Claimed just before the drain: hand it straight back.
                    let services = state.services.clone();
                    Self::release_after(state, async move {
                        jobs::arq_retry(&services, &claimed, Duration::ZERO).await;
                    });
                } else {
                    Self::start_job(&myself, state, *claimed).await;
                }
            }
            SupervisorMsg::Poller(PollerEvent::Abort(job_id)) => {
                if let Some(job) = state.job_actors.get(&job_id).and_then(|id| state.jobs.get(id)) {
                    job.args.cancel.cancel();
                }
            }
            SupervisorMsg::StopAttempt(StopAttempt { job_id, job_try }) => {
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
            SupervisorMsg::Ping(reply) => {
                let _ = reply.send(state.refs.clone());
            }
            SupervisorMsg::Drain { grace, reply } => {
                state.draining = true;
                if let Some(poller) = state.refs.poller.take() {
                    poller.stop(Some("draining".into()));
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
                        let running = state.running.clone();
                        state.services.tasks.spawn(async move {
                            jobs::arq_retry(&services, &claimed, Duration::ZERO).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                        });
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
            SupervisorMsg::Freeze => {
                tracing::error!("injected fault: the supervisor stops handling messages");
                std::future::pending::<()>().await;
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
                } else if let Some(kind) = state.children.remove(&id) {
                    Self::forget_child_ref(state, kind);
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
                        let draining = state.draining;
                        let restarts = job.restarts + 1;
                        let args = job.args;
                        Self::release_after(state, async move {
                            if draining {
                                jobs::arq_retry(&args.services, &args.claimed, Duration::ZERO).await;
                            } else {
                                let reason =
                                    format!("the worker crashed {restarts} times while processing this document");
                                let exception = job_execution_failed(reason.clone());
                                jobs::fail_without_actor(&args.services, &args.claimed, None, &reason, exception).await;
                            }
                        });
                        Self::answer_drain_waiters(state);
                    } else {
                        // Restart the job as a new attempt; its slot and lease carry over.
                        Self::spawn_document(&myself, state, job.args, job.restarts + 1, job.lease).await;
                    }
                } else if let Some(kind) = state.children.remove(&id) {
                    Self::forget_child_ref(state, kind);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_exponentially_and_escalate_past_the_budget() {
        let policy = RESTARTS;
        let mut history = Vec::new();
        let t0 = Instant::now();
        let delays: Vec<Restart> = (0..6)
            .map(|i| policy.decide(&mut history, t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(
            delays,
            vec![
                Restart::After(Duration::from_millis(250)),
                Restart::After(Duration::from_millis(500)),
                Restart::After(Duration::from_secs(1)),
                Restart::After(Duration::from_secs(2)),
                Restart::After(Duration::from_secs(4)),
                Restart::Escalate,
            ]
        );
    }

    #[test]
    fn crashes_older_than_the_window_are_forgiven() {
        let policy = RESTARTS;
        let mut history = Vec::new();
        let t0 = Instant::now();
        for i in 0..5 {
            policy.decide(&mut history, t0 + Duration::from_secs(i));
        }
        // A minute later the budget is whole again.
        assert_eq!(
            policy.decide(&mut history, t0 + Duration::from_secs(70)),
            Restart::After(Duration::from_millis(250))
        );
    }

    #[test]
    fn the_delay_is_capped() {
        let policy = RestartPolicy { max: 100, ..RESTARTS };
        let mut history = Vec::new();
        let t0 = Instant::now();
        let mut last = Restart::Escalate;
        for i in 0..40 {
            last = policy.decide(&mut history, t0 + Duration::from_millis(i));
        }
        assert_eq!(last, Restart::After(RESTARTS.cap));
    }
}
