//! Building and running the daemon: pool + migrations, Redis, embedder,
//! the actor tree, the HTTP server; and the graceful shutdown that stops
//! claiming, lets running jobs finish within the grace period (handing the
//! rest back to the queue) and closes sockets with 1001.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actors::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::arq::ArqQueue;
use crate::config::Settings;
use crate::db;
use crate::events::{EventSink, Publisher};
use crate::http::auth::AuthKeys;
use crate::http::{self, AppState};
use crate::pipeline::embed;
use crate::pipeline::extract::budget::MemoryBudget;
use crate::pipeline::extract::{Limits, Sandbox};
use crate::services::{Faults, Services, Stats};

/// Which parts of the daemon this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// HTTP API, WebSockets and workers.
    All,
    /// HTTP API and WebSockets only.
    Api,
    /// Workers only (HTTP serves health checks).
    Worker,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    supervisor_handle: tokio::task::JoinHandle<()>,
    role: Role,
}

/// Connects Redis with a reconnecting manager and bounded timeouts.
pub async fn connect_redis(url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(url).context("redis.url")?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(3);
    let manager = client
        .get_connection_manager_with_config(config)
        .await
        .with_context(|| "cannot connect to redis (redis.url)".to_string())?;
    Ok(manager)
}

/// Connects and migrates the database (also `doculearn migrate`).
/// Connections of the pool socket resumes use (beside `database.max_connections`).
const HISTORY_CONNECTIONS: u32 = 2;

pub async fn prepare_database(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let pool = db::connect(
        settings.database.url.expose_secret(),
        settings.database.max_connections,
        settings.database.create_if_missing,
    )
    .await
    .context("cannot connect to PostgreSQL (database.url)")?;
    db::MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply migrations (is pgvector installed? scripts/install-pgvector.sh)")?;
    Ok(pool)
}

impl Application {
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<Application> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pool = prepare_database(&settings).await?;
        let history_db = db::connect_history(settings.database.url.expose_secret(), HISTORY_CONNECTIONS)
            .await
            .context("cannot connect to PostgreSQL (database.url)")?;
        let redis = connect_redis(settings.redis.url.expose_secret()).await?;
        let embedder = embed::build(&settings)?;
        let model_id = db::ensure_model(&pool, embedder.model(), embedder.dimension()).await?;
        db::ensure_vector_index(&pool, model_id, embedder.dimension()).await?;
        let engine_id = db::ensure_engine(&pool, embedder.engine()).await?;
        let previous_embedders = crate::reembed::previous_embedders(&settings, &pool, model_id).await?;
        if settings.pipeline.ocr {
            // Said once, at start-up: scans and images fail with the same reason.
            if let Err(missing) = crate::pipeline::extract::ocr::check_installed(&settings.pipeline.ocr_languages) {
                tracing::warn!("OCR: {missing}; scanned pages and images will fail with that reason");
            }
        }
        let sandbox = if settings.pipeline.extract_in_subprocess {
            Some(Sandbox {
                exe: std::env::current_exe().context("cannot find our own executable for the extraction worker")?,
                timeout: Duration::from_secs(settings.pipeline.extract_timeout_secs),
            })
        } else {
            None
        };
        let services = Arc::new_cyclic(|me| Services {
            me: me.clone(),
            queue: ArqQueue::new(redis.clone(), &settings.queue),
            events: EventSink::new(
                pool.clone(),
                Publisher::new(redis.clone(), settings.progress.channel.clone()),
            ),
            limits: Limits::from_settings(&settings.pipeline),
            extract_budget: MemoryBudget::new(
                settings.pipeline.extract_memory_budget_mb,
                settings.pipeline.extract_memory_mb,
            ),
            ocr_slots: Arc::new(tokio::sync::Semaphore::new(settings.pipeline.ocr_concurrency.max(1))),
            faults: Faults::from_settings(&settings),
            stats: Stats::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            db: pool,
            history_db,
            redis,
            embedder,
            model_id,
            previous_embedders,
            engine_id,
            sandbox,
            settings: settings.clone(),
        });
        // The recorder must exist before any actor reports a figure: a gauge
        // set before it (the poller's first queue depth) would be lost.
        let metrics = crate::metrics::install();
        let registry = crate::actors::registry::RegistryHandle::default();
        let (supervisor, supervisor_handle) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                services: services.clone(),
                registry: registry.clone(),
                worker: role != Role::Api,
            },
        )
        .await
        .context("cannot start the actor tree")?;
        if settings.reembed.on_start {
            // In the background: start-up does not wait for the queue.
            let s = services.clone();
            services.tasks.spawn(async move {
                if let Err(e) = crate::reembed::start(&s, None).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot queue re-embedding now; POST /api/v1/admin/reembed or `doculearn reembed` starts it");
                }
            });
        }
        let socket_leases = crate::http::socket_leases::SocketLeases::new(
            services.redis.clone(),
            &settings.queue.name,
            settings.websocket.max_sockets_per_user,
            Duration::from_secs(settings.websocket.socket_lease_secs),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(socket_leases.clone().run_renewals(shutdown.clone()));
        let state = AppState {
            socket_leases,
            auth: Arc::new(AuthKeys::from_settings(&settings.auth)?),
            services,
            supervisor,
            registry,
            draining: Arc::new(AtomicBool::new(false)),
            shutdown,
            socket_ids: Arc::new(AtomicU64::new(1)),
            metrics,
        };
        let listener = TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", settings.http.listen))?;
        Ok(Application {
            listener,
            state,
            supervisor_handle,
            role,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub fn supervisor(&self) -> ActorRef<SupervisorMsg> {
        self.state.supervisor.clone()
    }

    /// Serves until SIGTERM/SIGINT (then drains) or until the actor tree
    /// gives up (then returns an error so the process exits non-zero).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            mut supervisor_handle,
            role,
        } = self;
        let router = if role == Role::Worker {
            axum::Router::new()
                .route("/healthz", axum::routing::get(http::health::healthz))
                .route("/livez", axum::routing::get(http::health::healthz))
                .route("/readyz", axum::routing::get(http::health::readyz))
                .route("/metrics", axum::routing::get(http::health::metrics))
                .with_state(state.clone())
        } else {
            http::router(state.clone())
        };
        let stop = CancellationToken::new();
        let server_stop = stop.clone();
        // Progress frames are small and go out as they come: Nagle's
        // algorithm would hold one back while an earlier one waits for its
        // ACK (which the client may delay by 40 ms), so it is off.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        });
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
        });

        crate::notify::notify("READY=1");
        let pinger = crate::notify::watchdog_interval().map(|every| {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match http::health::tree_alive(&state).await {
                        Ok(()) => {
                            crate::notify::notify("WATCHDOG=1");
                        }
                        Err(why) => tracing::error!(reason = %why, "the actor tree did not answer; no watchdog ping"),
                    }
                }
            })
        });
        let supervisor_died = tokio::select! {
            _ = shutdown_signal() => false,
            _ = &mut supervisor_handle => true,
        };
        if supervisor_died {
            stop.cancel();
            state.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
            anyhow::bail!(
                "the actor tree stopped after repeated crashes; exiting so the service manager restarts doculearn"
            );
        }

        tracing::info!("shutdown requested: draining");
        crate::notify::notify("STOPPING=1");
        if let Some(p) = &pinger {
            p.abort();
        }
        state.draining.store(true, Ordering::SeqCst);
        state.shutdown.cancel();
        let grace = Duration::from_secs(state.services.settings.queue.shutdown_grace_secs);
        let handed_back = ractor::call_t!(
            state.supervisor,
            |reply| SupervisorMsg::Drain { grace, reply },
            (grace + Duration::from_secs(5)).as_millis() as u64
        )
        .unwrap_or(0);
        if handed_back > 0 {
            tracing::warn!(jobs = handed_back, "handed unfinished jobs back to the queue");
        }
        // Hand-backs and final writes finish before the process exits.
        state.services.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), state.services.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                left = state.services.tasks.len(),
                "background work did not finish within 10 s; exiting anyway (leases will expire)"
            );
        }
        let _ = state.services.queue.clear_health().await;
        let _ = state.services.queue.drop_capacity().await;
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        state.supervisor.stop(Some("shutdown".into()));
        let _ = tokio::time::timeout(Duration::from_secs(5), supervisor_handle).await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
