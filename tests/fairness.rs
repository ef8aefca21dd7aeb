//! Work-conserving fairness across instances: two instances with four job
//! slots each on one database and Redis. A lone user's batch runs on all
//! eight slots; when a second user arrives, the slots are split (by weight
//! when weights are configured), and neither user waits behind the other.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use redis::AsyncCommands;
use uuid::Uuid;

/// Every job hangs this long in embedding, so jobs overlap and slots fill.
const HANG_SECS: u64 = 2;

fn opts() -> Opts {
    Opts::default()
        .with("DOCULEARN_QUEUE__MAX_JOBS", 4)
        .with("DOCULEARN_FAULTS__HANG_IN_STAGE", "embedding")
        .with("DOCULEARN_FAULTS__HANG_SECS", HANG_SECS)
}

/// Both instances have told Redis their slots.
async fn wait_for_workers(d: &Daemon, n: usize) {
    let mut redis = d.redis().await;
    let start = Instant::now();
    loop {
        let live: usize = redis.zcard(format!("{}:doculearn:workers", d.queue)).await.unwrap();
        if live == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{live} of {n} workers registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Running jobs per user right now.
async fn running(pool: &sqlx::PgPool) -> HashMap<Uuid, i64> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FROM job_progress \
         WHERE stage IN ('downloading', 'extracting', 'chunking', 'embedding', 'storing') GROUP BY user_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

async fn upload_many(d: &Daemon, token: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut jobs = Vec::new();
    for i in 0..n {
        let (_, job) = d
            .upload_one(
                token,
                &format!("{prefix}{i}.txt"),
                format!("{prefix} document number {i}").into_bytes(),
            )
            .await;
        jobs.push(job);
    }
    jobs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_users_batch_runs_on_every_instances_slots() {
    let d = Daemon::start(opts()).await;
    let _second = d.sibling(opts());
    wait_for_workers(&d, 2).await;
    let pool = d.db().await;
    let token = d.token(Uuid::new_v4());
    let started = Instant::now();
    let jobs = upload_many(&d, &token, "alone", 11).await;
    let mut peak = 0;
    loop {
        let now: i64 = running(&pool).await.values().sum();
        peak = peak.max(now);
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM job_progress WHERE stage = 'completed'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if done == 11 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the batch did not finish; peak {peak}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for job in &jobs {
        assert_eq!(
            d.wait_job(&token, job, Duration::from_secs(5)).await["stage"],
            "completed"
        );
    }
    // Both instances ran some: each job's log names it.
    assert!(d.log_text().contains("job completed"), "the first instance ran none");
    assert!(
        _second.log_text().contains("job completed"),
        "the second instance sat idle"
    );
    assert_eq!(peak, 8, "a lone user's jobs use all 2 × 4 slots");
    eprintln!(
        "FIGURE fairness: one user, 11 jobs of {HANG_SECS} s on 2 instances × 4 slots: peak {peak} running, all done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Two users with big batches share the eight slots: half each, or by
/// weight. Returns (peak running of alice, of bob while both had work, seconds).
async fn two_users(weights: Option<(f64, f64)>) -> (i64, i64, f64) {
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let mut o = opts();
    if let Some((wa, wb)) = weights {
        o = o.with(
            "DOCULEARN_QUEUE__USER_WEIGHTS",
            format!("{{\"{alice}\"={wa},\"{bob}\"={wb}}}"),
        );
    }
    let d = Daemon::start(o.clone()).await;
    let _second = d.sibling(o);
    wait_for_workers(&d, 2).await;
    let pool = d.db().await;
    let (ta, tb) = (d.token(alice), d.token(bob));
    let started = Instant::now();
    let a_jobs = upload_many(&d, &ta, "alice", 16).await;
    let b_jobs = upload_many(&d, &tb, "bob", 16).await;
    let (mut peak_a, mut peak_b) = (0, 0);
    loop {
        let now = running(&pool).await;
        let (ra, rb) = (
            now.get(&alice).copied().unwrap_or(0),
            now.get(&bob).copied().unwrap_or(0),
        );
        // Only while both still have work waiting or running.
        let left: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT user_id, count(*) FROM job_progress WHERE stage <> 'completed' AND stage <> 'failed' GROUP BY user_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if left.len() == 2 && left.iter().all(|(_, n)| *n >= 8) {
            peak_a = peak_a.max(ra);
            peak_b = peak_b.max(rb);
        }
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the batches did not finish"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for job in &a_jobs {
        assert_eq!(d.wait_job(&ta, job, Duration::from_secs(5)).await["stage"], "completed");
    }
    for job in &b_jobs {
        assert_eq!(d.wait_job(&tb, job, Duration::from_secs(5)).await["stage"], "completed");
    }
    (peak_a, peak_b, started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_split_the_cluster_evenly_or_by_weight() {
    let (a, b, secs) = two_users(None).await;
    // Alice came first and briefly had all eight; once bob's work was in,
    // each ran at most their share, and bob reached his.
    assert_eq!(b, 4, "bob's share of 8 slots next to alice");
    assert!(a >= 4, "alice kept her share: {a}");
    eprintln!("FIGURE fairness: two users × 16 jobs of {HANG_SECS} s, equal weights: peak bob {b} of 8 slots, all done in {secs:.1} s");
    let (a, b, secs) = two_users(Some((1.0, 3.0))).await;
    assert_eq!(b, 6, "weight 3 against 1: bob gets 6 of 8 slots");
    assert!(a >= 2, "alice kept her share: {a}");
    eprintln!("FIGURE fairness: two users × 16 jobs of {HANG_SECS} s, weights 1:3: peak bob {b} of 8 slots, all done in {secs:.1} s");
}
