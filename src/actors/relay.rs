//! The `ProgressRelay`: subscribes to the Redis progress channel, on which
//! every instance's workers publish, and hands each event to the supervisor
//! for the user's session; and to its control channel (`<channel>:control`),
//! on which recovery tells the instance holding a stalled attempt to stop it. It reconnects by itself with backoff; after a
//! reconnect it tells every session to `resync` (events published while it
//! was away were not received, and clients fetch them with `resume`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use super::supervisor::SupervisorMsg;
use crate::domain::Envelope;
use crate::recovery::{control_channel, StopAttempt};
use crate::services::Services;

pub struct RelayArgs {
    pub services: Arc<Services>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

#[derive(Debug)]
pub enum RelayMsg {}

pub struct RelayState {
    task: JoinHandle<()>,
}

pub struct ProgressRelay;

async fn run(services: Arc<Services>, supervisor: ActorRef<SupervisorMsg>) {
    let channel = services.publisher.channel().to_string();
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
                    let _ = supervisor.cast(SupervisorMsg::ResyncAll);
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
                            let _ = supervisor.cast(SupervisorMsg::StopAttempt {
                                job_id: stop.job_id,
                                job_try: stop.job_try,
                            });
                        }
                        continue;
                    }
                    match serde_json::from_slice::<Envelope>(&payload) {
                        Ok(envelope) => {
                            if supervisor.cast(SupervisorMsg::Deliver(Box::new(envelope))).is_err() {
                                return;
                            }
                        }
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

    async fn pre_start(&self, _myself: ActorRef<RelayMsg>, args: RelayArgs) -> Result<RelayState, ActorProcessingErr> {
        Ok(RelayState {
            task: tokio::spawn(run(args.services, args.supervisor)),
        })
    }

    async fn post_stop(&self, _myself: ActorRef<RelayMsg>, state: &mut RelayState) -> Result<(), ActorProcessingErr> {
        state.task.abort();
        Ok(())
    }
}
