//! The `Indexer`: moves stored chunks into the ANN (HNSW) index in the
//! background. The storing stage writes chunks outside the index (an HNSW
//! insert costs about a millisecond of CPU per row, more than the rest of
//! the stage), search scans those exactly, and this actor flips them to
//! `indexed` in short transactions of `indexing.batch_rows` rows.
//!
//! While any job is being processed (on any instance) it waits, so it does
//! not take CPU from them, unless the backlog has grown past
//! `indexing.max_pending_rows` or its oldest row has waited
//! `indexing.max_delay_secs`: the exact scan stays cheap either way. Several
//! instances index side by side (rows another one holds are skipped).
//! Database errors are logged and tried again on the next tick; a panic is a
//! bug and the supervisor restarts it with backoff.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::db;
use crate::services::Services;

pub struct IndexerArgs {
    pub services: Arc<Services>,
}

#[derive(Debug)]
pub enum IndexerMsg {
    Tick,
}

pub struct IndexerState {
    services: Arc<Services>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

pub struct Indexer;

/// Whether to index now, given the backlog.
pub fn should_index(backlog: &db::IndexBacklog, max_pending_rows: i64, max_delay_secs: u64) -> bool {
    backlog.rows > 0
        && (!backlog.busy || backlog.rows >= max_pending_rows || backlog.oldest_secs >= max_delay_secs as f64)
}

/// Indexes until there is nothing to do or jobs need the CPU; returns the rows moved.
async fn pass(services: &Services) -> Result<u64, sqlx::Error> {
    let settings = &services.settings.indexing;
    let mut moved = 0;
    loop {
        let backlog = db::index_backlog(&services.db).await?;
        crate::metrics::index_backlog(backlog.rows);
        if !should_index(&backlog, settings.max_pending_rows as i64, settings.max_delay_secs) {
            return Ok(moved);
        }
        let n = db::index_some(&services.db, settings.batch_rows as i64).await?;
        if n == 0 {
            // Everything left is being indexed by another instance.
            return Ok(moved);
        }
        moved += n;
    }
}

impl Actor for Indexer {
    type Msg = IndexerMsg;
    type State = IndexerState;
    type Arguments = IndexerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<IndexerMsg>,
        args: IndexerArgs,
    ) -> Result<IndexerState, ActorProcessingErr> {
        Ok(IndexerState {
            services: args.services,
            timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<IndexerMsg>,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        let every = Duration::from_millis(state.services.settings.indexing.interval_ms);
        state.timer = Some(myself.send_interval(every, || IndexerMsg::Tick));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<IndexerMsg>,
        _msg: IndexerMsg,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        let started = std::time::Instant::now();
        match pass(&state.services).await {
            Ok(0) => {}
            Ok(rows) => {
                tracing::info!(
                    rows,
                    secs = started.elapsed().as_secs_f64(),
                    "chunks moved into the ANN index"
                );
            }
            Err(e) => tracing::warn!(error = %e, "indexing pass failed; trying again next tick"),
        }
        // Ticks that queued up during a long pass cost one cheap backlog query each.
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<IndexerMsg>,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(rows: i64, oldest_secs: f64, busy: bool) -> db::IndexBacklog {
        db::IndexBacklog {
            rows,
            oldest_secs,
            busy,
        }
    }

    #[test]
    fn indexes_when_idle_or_when_the_backlog_is_large_or_old() {
        assert!(!should_index(&backlog(0, 0.0, false), 20_000, 60));
        assert!(should_index(&backlog(5, 0.1, false), 20_000, 60));
        assert!(!should_index(&backlog(5, 0.1, true), 20_000, 60));
        assert!(should_index(&backlog(20_000, 0.1, true), 20_000, 60));
        assert!(should_index(&backlog(5, 61.0, true), 20_000, 60));
    }
}
