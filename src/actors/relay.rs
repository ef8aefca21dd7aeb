//! The `ProgressRelay`: subscribes to the Redis progress channel, on which
//! every instance's workers publish, and hands each event to the session
//! registry; and to its control channel (`<channel>:control`), on which
//! recovery tells the instance holding a stalled attempt to stop it.
//!
//! Its work runs in a task that reconnects by itself with backoff; after a
//! reconnect every socket is told to `resync` (events published while it was
//! away were not received; clients fetch them with `resume`). The task's end
//! is observed: if it ever returns or panics, the relay actor fails and the
//! supervisor restarts it. It answers `Ping` only while its task runs.
//! Events go to the registry through its bounded inbox (dropped with a
//! resync when full), so a slow consumer never grows this process's memory.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use super::registry::{RegistryHandle, RegistryMsg};
use crate::domain::Envelope;
use crate::recovery::{control_channel, StopAttempt};
use crate::services::Services;

pub struct RelayArgs {
    pub services: Arc<Services>,
    pub registry: RegistryHandle,
    /// Where stop orders for stalled attempts go (the supervisor).
    pub stops: DerivedActorRef<StopAttempt>,
}

pub enum RelayMsg {
    /// Liveness: answered while the subscription task runs.
    Ping(RpcReplyPort<()>),
    /// The subscription task ended (it never should): fail, to be restarted.
    TaskEnded(String),
}

impl std::fmt::Debug for RelayMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayMsg::Ping(_) => f.write_str("Ping"),
            RelayMsg::TaskEnded(why) => write!(f, "TaskEnded({why})"),
        }
    }
}

pub struct RelayState {
    /// Waits for the subscription task and reports its end.
    watcher: JoinHandle<()>,
    subscription: tokio::task::AbortHandle,
}

pub struct ProgressRelay;

async fn run(services: Arc<Services>, registry: RegistryHandle, stops: DerivedActorRef<StopAttempt>) {
    let channel = services.events.publisher().channel().to_string();
    let control = control_channel(&channel);
    let mut failures: u32 = 0;
    let mut connected_before = false;
    loop {
        let attempt = async {
            let client = redis::Client::open(services.settings.redis.url.expose_secret())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            pubsub.subscribe(&control).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match attempt.await {
            Ok(pubsub) => {
                if failures > 0 || connected_before {
                    tracing::info!(channel = %channel, "progress subscription restored");
                    registry.cast(RegistryMsg::ResyncAll);
                }
                failures = 0;
                connected_before = true;
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    let payload: Vec<u8> = match msg.get_payload() {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    if msg.get_channel_name() == control {
                        if let Ok(stop) = serde_json::from_slice::<StopAttempt>(&payload) {
                            let _ = stops.send_message(stop);
                        }
                        continue;
                    }
                    match serde_json::from_slice::<Envelope>(&payload) {
                        Ok(envelope) => registry.deliver(envelope),
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed progress message"),
                    }
                }
                tracing::warn!(channel = %channel, "progress subscription lost; reconnecting");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, "cannot subscribe to progress; retrying");
                }
            }
        }
        let delay = Duration::from_millis(200 * (1 << failures.min(5)));
        tokio::time::sleep(delay).await;
    }
}

impl Actor for ProgressRelay {
    type Msg = RelayMsg;
    type State = RelayState;
    type Arguments = RelayArgs;

    async fn pre_start(&self, myself: ActorRef<RelayMsg>, args: RelayArgs) -> Result<RelayState, ActorProcessingErr> {
        let mut task = tokio::spawn(run(args.services, args.registry, args.stops));
        let subscription = task.abort_handle();
        // Watch the task: its end, or its panic, fails this actor.
        let watcher = tokio::spawn(async move {
            let why = match (&mut task).await {
                Ok(()) => "the subscription loop returned".to_string(),
                Err(e) if e.is_panic() => "the subscription loop panicked".to_string(),
                Err(_) => return, // aborted: the relay is stopping
            };
            let _ = myself.cast(RelayMsg::TaskEnded(why));
        });
        Ok(RelayState { watcher, subscription })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RelayMsg>,
        msg: RelayMsg,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RelayMsg::Ping(reply) => {
                if !state.subscription.is_finished() {
                    let _ = reply.send(());
                }
                Ok(())
            }
            RelayMsg::TaskEnded(why) => Err(why.into()),
        }
    }

    async fn post_stop(&self, _myself: ActorRef<RelayMsg>, state: &mut RelayState) -> Result<(), ActorProcessingErr> {
        state.subscription.abort();
        state.watcher.abort();
        Ok(())
    }
}
