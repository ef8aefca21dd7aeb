//! The `Watchdog`: on a timer (`watchdog.interval_secs`) it runs the stall
//! check and the Redis reconciler (`recovery::recover`), releases jobs held
//! in Postgres whose owners have room (held back for fairness, or stored
//! while Redis was away; finishing jobs release them at once), and removes
//! idempotency keys older than a day. Failures to reach
//! Postgres or Redis are logged and tried again on the next tick; only a bug
//! (a panic) crashes it, and the supervisor restarts it with backoff.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::recovery;
use crate::services::Services;

pub struct WatchdogArgs {
    pub services: Arc<Services>,
}

#[derive(Debug)]
pub enum WatchdogMsg {
    Tick,
}

pub struct WatchdogState {
    services: Arc<Services>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

pub struct Watchdog;

impl Actor for Watchdog {
    type Msg = WatchdogMsg;
    type State = WatchdogState;
    type Arguments = WatchdogArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WatchdogMsg>,
        args: WatchdogArgs,
    ) -> Result<WatchdogState, ActorProcessingErr> {
        Ok(WatchdogState {
            services: args.services,
            timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<WatchdogMsg>,
        state: &mut WatchdogState,
    ) -> Result<(), ActorProcessingErr> {
        let every = Duration::from_secs(state.services.settings.watchdog.interval_secs);
        state.timer = Some(myself.send_interval(every, || WatchdogMsg::Tick));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<WatchdogMsg>,
        _msg: WatchdogMsg,
        state: &mut WatchdogState,
    ) -> Result<(), ActorProcessingErr> {
        match recovery::recover(&state.services, false).await {
            Ok(actions) => {
                let applied = actions.iter().filter(|a| a.applied).count();
                if applied > 0 {
                    tracing::info!(applied, "watchdog recovered jobs");
                }
            }
            Err(e) => tracing::warn!(error = %e, "watchdog pass failed; trying again next tick"),
        }
        // Also enqueues uploads whose admission failed while Redis was away.
        if let Err(e) = crate::jobs::admission::feed_all(&state.services).await {
            tracing::warn!(error = %e, "cannot release held jobs; trying again next tick");
        }
        if let Err(e) = crate::db::expire_idempotency_keys(&state.services.db).await {
            tracing::warn!(error = %e, "cannot remove old idempotency keys; trying again next tick");
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WatchdogMsg>,
        state: &mut WatchdogState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        Ok(())
    }
}
