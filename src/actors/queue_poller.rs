//! The `QueuePoller`: loops by messaging itself. Each `Poll` claims up to
//! the free job slots from the arq queue in one Lua round trip and hands
//! every claimed job, undecoded, to the supervisor (which gives it its own
//! actor: decoding and pre-run checks happen there); it also writes arq's
//! health-check key and forwards `Job.abort()` requests for jobs running
//! here. Redis outages are waited out here with backoff (they are not
//! crashes). It knows the supervisor only through [`PollerEvent`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use tokio::time::Instant;

use crate::arq::Claimed;
use crate::services::Services;

/// What the poller tells whoever runs jobs.
#[derive(Debug)]
pub enum PollerEvent {
    /// A job was claimed (its slot is counted in `running` already).
    Claimed(Box<Claimed>),
    /// `Job.abort()` was called for this job id.
    Abort(String),
}

/// How often a worker tells the cluster its job slots (see
/// `ArqQueue::record_capacity`).
const CAPACITY_EVERY: Duration = Duration::from_secs(10);

pub struct PollerArgs {
    pub services: Arc<Services>,
    pub jobs: DerivedActorRef<PollerEvent>,
    pub running: Arc<AtomicUsize>,
}

pub enum PollerMsg {
    Poll,
    /// Liveness: answers at once.
    Ping(RpcReplyPort<()>),
}

impl std::fmt::Debug for PollerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PollerMsg::Poll => "Poll",
            PollerMsg::Ping(_) => "Ping",
        })
    }
}

pub struct PollerState {
    args: PollerArgs,
    last_health: Option<Instant>,
    /// When this worker last wrote its job slots (fair-share capacity).
    last_capacity: Option<Instant>,
    last_abort_check: Instant,
    last_depth: Instant,
    failures: u32,
}

pub struct QueuePoller;

const ABORT_CHECK_EVERY: Duration = Duration::from_millis(500);

impl Actor for QueuePoller {
    type Msg = PollerMsg;
    type State = PollerState;
    type Arguments = PollerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PollerMsg>,
        args: PollerArgs,
    ) -> Result<PollerState, ActorProcessingErr> {
        Ok(PollerState {
            args,
            last_health: None,
            last_capacity: None,
            last_abort_check: Instant::now(),
            last_depth: Instant::now() - Duration::from_secs(2),
            failures: 0,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<PollerMsg>,
        _state: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(PollerMsg::Poll)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PollerMsg>,
        msg: PollerMsg,
        state: &mut PollerState,
    ) -> Result<(), ActorProcessingErr> {
        if let PollerMsg::Ping(reply) = msg {
            let _ = reply.send(());
            return Ok(());
        }
        let services = state.args.services.clone();
        let q = &services.settings.queue;
        let max_jobs = q.max_jobs;
        let running = state.args.running.load(Ordering::SeqCst);

        let health_every = Duration::from_secs(q.health_check_interval_secs.max(1));
        if state.last_health.is_none_or(|t| t.elapsed() >= health_every) {
            let stats = &services.stats;
            let ttl_ms = ((q.health_check_interval_secs + 1) * 1000) as i64;
            match services
                .queue
                .record_health(
                    ttl_ms,
                    stats.complete.load(Ordering::Relaxed),
                    stats.failed.load(Ordering::Relaxed),
                    stats.retried.load(Ordering::Relaxed),
                    running as u64,
                )
                .await
            {
                Ok(()) => state.last_health = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot write the health-check key"),
            }
        }

        // Every CAPACITY_EVERY, valid for three: a worker that misses one
        // write still counts, a crashed one stops counting within 30 s.
        if state.last_capacity.is_none_or(|t| t.elapsed() >= CAPACITY_EVERY) {
            let ttl_ms = (CAPACITY_EVERY * 3).as_millis() as i64;
            match services.queue.record_capacity(max_jobs as u32, ttl_ms).await {
                Ok(()) => state.last_capacity = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot record this worker's job slots"),
            }
        }

        crate::metrics::active_jobs(running);
        if state.last_depth.elapsed() >= Duration::from_secs(1) {
            state.last_depth = Instant::now();
            if let Ok(depth) = services.queue.depth().await {
                crate::metrics::queue_depth(depth);
            }
        }
        if running > 0 && state.last_abort_check.elapsed() >= ABORT_CHECK_EVERY {
            state.last_abort_check = Instant::now();
            if let Ok(ids) = services.queue.abort_requested().await {
                for job_id in ids {
                    let _ = state.args.jobs.send_message(PollerEvent::Abort(job_id));
                }
            }
        }

        let free = max_jobs.saturating_sub(running);
        if free == 0 {
            myself.send_after(q.poll_interval(), || PollerMsg::Poll);
            return Ok(());
        }
        let read_limit = (max_jobs * 5).max(100);
        let lease_ms = q.lease().as_millis() as i64;
        match services.queue.claim(free, read_limit, lease_ms).await {
            Ok(claimed) => {
                if state.failures > 0 {
                    tracing::info!("queue reachable again");
                    state.failures = 0;
                }
                let n = claimed.len();
                state.args.running.fetch_add(n, Ordering::SeqCst);
                for c in claimed {
                    if state.args.jobs.send_message(PollerEvent::Claimed(Box::new(c))).is_err() {
                        return Err("the supervisor is gone".into());
                    }
                }
                if n == free {
                    // The queue may hold more: look again as soon as a slot frees.
                    myself.send_after(Duration::from_millis(1), || PollerMsg::Poll);
                } else {
                    myself.send_after(q.poll_interval(), || PollerMsg::Poll);
                }
            }
            Err(e) => {
                state.failures += 1;
                let delay = Duration::from_millis(200 * (1 << state.failures.min(5)));
                if state.failures == 1 || state.failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures = state.failures, "cannot poll the queue; retrying");
                }
                myself.send_after(delay, || PollerMsg::Poll);
            }
        }
        Ok(())
    }
}
