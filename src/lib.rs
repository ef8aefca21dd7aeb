//! doculearn: a daemon that turns uploaded documents into searchable vectors
//! and shows every user, live, how far each document has come.
//!
//! - [`config`] — typed settings (default.toml < `--config` < `DOCULEARN_*`)
//! - [`cidr`] — address ranges (trusted proxies)
//! - [`domain`] — job ids, stages and the progress event every channel carries
//! - [`db`] — the SQL of documents, jobs, history, chunks, admission, idempotency and search; worker writes fenced by attempt ([`batches`] and [`analytics`] keep the queries that are their whole logic)
//! - [`analytics`] — per-stage processing statistics from the history table
//! - [`arq`] — arq 0.28's wire format and queue protocol in Redis
//! - [`batches`] — documents uploaded together and their aggregated progress
//! - [`progress`] — a worker attempt's reporter: monotonic, throttled, fenced
//! - [`pipeline`] — the stages (download, extract, chunk, embed, store) as plain functions
//! - [`actors`] — the ractor supervision tree that runs jobs and feeds sockets
//! - [`jobs`] — the job lifecycle: submit (all or nothing), admission (fairness), retry, cancel, finish
//! - [`events`] — the one event sink: record, publish, move the batch
//! - [`metrics`] — Prometheus metrics (no per-user labels)
//! - [`notify`] — systemd's READY/WATCHDOG notifications, sent after the tree answered
//! - [`recovery`] — the stall watchdog's and the reconciler's logic (Postgres vs Redis)
//! - [`search`] — hybrid search: modes, rank fusion, snippets and highlights
//! - [`http`] — the API, the WebSocket, health
//! - [`startup`] — building, running and draining the daemon
//! - [`services`] — what actors and handlers share
//! - [`telemetry`] — logging

pub mod actors;
pub mod analytics;
pub mod arq;
pub mod batches;
pub mod cidr;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod progress;
pub mod recovery;
pub mod reembed;
pub mod search;
pub mod services;
pub mod startup;
pub mod telemetry;
pub mod units;
