//! The progress path on the real PostgreSQL and Redis: the group-commit
//! writer (many jobs' events written at once keep each job's order and
//! numbers, reach the channel once each, are fenced by attempt, and a job
//! whose row another transaction holds neither blocks the others nor loses
//! its event), and a socket whose `resume` is slow to answer (as in a
//! reconnect storm) still gets every event once, in order.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use doculearn::domain::{Envelope, Stage};
use doculearn::events::{EventSink, JobMeta, Publisher};
use doculearn::progress::{ProgressError, Reporter};
use futures::StreamExt;
use uuid::Uuid;

const JOBS: usize = 40;
const EVENTS: usize = 25;

struct Db {
    name: String,
    pool: sqlx::PgPool,
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}

async fn fresh_db() -> Db {
    let name = format!("dl_test_writer_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let pool = doculearn::db::connect(&url, 8, true).await.expect("database");
    doculearn::db::MIGRATOR.run(&pool).await.expect("migrations");
    Db { name, pool }
}

fn meta(job: &str, user: Uuid) -> JobMeta {
    JobMeta {
        job_id: job.to_string(),
        user_id: user,
        document_id: None,
        batch_id: None,
        document_name: None,
    }
}

/// A job row of `user`'s in the daemon's database and a worker's reporter
/// for it, publishing on the daemon's channel.
async fn job_with_reporter(d: &common::Daemon, job: &str, user: Uuid) -> (sqlx::PgPool, Reporter) {
    let pool = d.db().await;
    sqlx::query("INSERT INTO job_progress (job_id, user_id, stage, attempt) VALUES ($1, $2, 'embedding', 1)")
        .bind(job)
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let redis = redis::aio::ConnectionManager::new(redis::Client::open("redis://127.0.0.1:6379/0").unwrap())
        .await
        .unwrap();
    let sink = EventSink::new(pool.clone(), Publisher::new(redis, d.channel.clone()));
    let reporter = Reporter::new(sink, meta(job, user), 1, Duration::ZERO);
    (pool, reporter)
}

/// Reports events `ks` (progress k/100).
async fn report(reporter: &mut Reporter, ks: std::ops::RangeInclusive<i32>) {
    for k in ks {
        reporter
            .progress(
                Stage::Embedding,
                k as f64 / 100.0,
                format!("event {k}"),
                serde_json::json!({}),
            )
            .await
            .unwrap();
    }
}

/// Holds the documents table, which a `resume`'s replay reads (for names)
/// and events do not: the replay waits until the transaction ends.
async fn hold_replays(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// The seqs of the job events that arrive (until `until` of them and a
/// `resumed`, or nothing more for `quiet`), and how many came before `resumed`.
async fn arrivals(ws: &mut common::Ws, until: usize, quiet: Duration) -> (Vec<i64>, Option<usize>) {
    let mut seqs = Vec::new();
    let mut resumed_at = None;
    while let Some(text) = ws.next_text(quiet).await {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        match v["type"].as_str() {
            Some("resumed") => resumed_at = Some(seqs.len()),
            Some("job_progress") => seqs.push(v["seq"].as_i64().unwrap()),
            _ => {}
        }
        if seqs.len() >= until && resumed_at.is_some() {
            break;
        }
    }
    (seqs, resumed_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_keep_order_and_a_busy_job_blocks_no_one() {
    let db = fresh_db().await;
    let pool = db.pool.clone();
    let channel = format!("dltest:{}:progress", Uuid::new_v4().simple());
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let mut messages = pubsub.into_on_message();
    let redis = redis::aio::ConnectionManager::new(client).await.unwrap();
    let sink = EventSink::new(pool.clone(), Publisher::new(redis, channel.clone()));

    let user = Uuid::new_v4();
    let jobs: Vec<String> = (0..JOBS).map(|i| format!("job:{i}")).collect();
    sqlx::query(
        "INSERT INTO job_progress (job_id, user_id, stage, attempt) \
         SELECT j, $2, 'embedding', 1 FROM unnest($1::text[]) AS j",
    )
    .bind(&jobs)
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    // A job that a newer attempt owns now.
    sqlx::query("INSERT INTO job_progress (job_id, user_id, stage, attempt) VALUES ('job:fenced', $1, 'embedding', 2)")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();

    // Another transaction holds job:0's row (as a document's store does).
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM job_progress WHERE job_id = 'job:0' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let busy = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut r = Reporter::new(sink, meta("job:0", user), 1, Duration::ZERO);
            r.progress(Stage::Embedding, 0.5, "after the lock", serde_json::json!({}))
                .await
        })
    };

    // Every other job reports EVENTS events, all at once.
    let mut tasks = Vec::new();
    for job in jobs.iter().skip(1) {
        let sink = sink.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = Reporter::new(sink, meta(&job, user), 1, Duration::ZERO);
            for k in 0..EVENTS {
                let p = k as f64 / EVENTS as f64;
                r.progress(Stage::Embedding, p, format!("chunk {k}"), serde_json::json!({ "k": k }))
                    .await
                    .expect("recorded");
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("the other jobs' events were written while job:0's row was held");

    let mut fenced = Reporter::new(sink.clone(), meta("job:fenced", user), 1, Duration::ZERO);
    let outcome = fenced
        .progress(Stage::Embedding, 0.5, "stale", serde_json::json!({}))
        .await;
    assert!(
        matches!(outcome, Err(ProgressError::Fenced(1))),
        "an old attempt is fenced"
    );

    assert!(
        !busy.is_finished(),
        "job:0's event waits for its row, not written around the lock"
    );
    holder.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), busy)
        .await
        .expect("job:0's event written once its row was free")
        .unwrap()
        .expect("recorded");

    // What Postgres holds: every event, numbered 1..n per job, in order.
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT job_id, seq, message FROM job_progress_history ORDER BY job_id, seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut by_job: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for (job, seq, message) in rows {
        by_job.entry(job).or_default().push((seq, message));
    }
    for job in jobs.iter().skip(1) {
        let got = &by_job[job];
        let want: Vec<(i64, String)> = (0..EVENTS).map(|k| (k as i64 + 1, format!("chunk {k}"))).collect();
        assert_eq!(got, &want, "{job}");
    }
    assert_eq!(by_job["job:0"], vec![(1, "after the lock".to_string())]);
    assert!(
        !by_job.contains_key("job:fenced"),
        "nothing written for a fenced attempt"
    );
    let (seq, progress): (i64, f64) = sqlx::query_as("SELECT seq, progress FROM job_progress WHERE job_id = 'job:7'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(seq, EVENTS as i64);
    assert!((progress - (EVENTS - 1) as f64 / EVENTS as f64).abs() < 1e-9);

    // What the channel carried: each event once, each job in seq order.
    let expected = (JOBS - 1) * EVENTS + 1;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for _ in 0..expected {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("published")
            .unwrap();
        let payload: Vec<u8> = msg.get_payload().unwrap();
        let envelope: Envelope = serde_json::from_slice(&payload).expect("an envelope");
        assert_eq!(envelope.user_id, user);
        seen.entry(envelope.event.job_id).or_default().push(envelope.event.seq);
    }
    for job in jobs.iter().skip(1) {
        assert_eq!(
            seen[job],
            (1..=EVENTS as i64).collect::<Vec<_>>(),
            "{job} published in order, once"
        );
    }
    assert_eq!(seen["job:0"], vec![1]);
    let extra = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
    assert!(extra.is_err(), "nothing published twice");
}

/// A reconnecting socket's `resume` that takes longer than the socket's
/// live-event hold (1 s): live events must wait for the replay, not
/// overtake it (they did, and the replayed older events were then dropped
/// as already sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_resume_is_not_overtaken_by_live_events() {
    let d = common::Daemon::start(common::Opts::default().arg("--role").arg("api")).await;
    let user = Uuid::new_v4();
    let (pool, mut reporter) = job_with_reporter(&d, "ext:1", user).await;
    report(&mut reporter, 1..=3).await;

    // The resume waits, while events go on being written.
    let lock = hold_replays(&pool).await;
    let token = d.token(user);
    let mut ws = d.ws(user, &token).await;
    ws.send_text(r#"{"type":"resume","after":{"ext:1":1}}"#).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    report(&mut reporter, 4..=5).await;
    // Past the hold.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lock.commit().await.unwrap();

    let (seqs, resumed_at) = arrivals(&mut ws, 4, Duration::from_secs(5)).await;
    assert_eq!(seqs, vec![2, 3, 4, 5], "every event once, in order");
    assert!(resumed_at.is_some(), "the resume was answered");
}

/// After a `resync`, a client resumes on the socket it has open: live events
/// wait for that replay too, so they neither run ahead of it nor come again
/// in it (without the hold, events sent live more than 64 seqs below the
/// newest before a slow replay came went out twice: the fan-out bench saw
/// 208,896 such repeats after a resync of 10,000 sockets).
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_on_a_live_socket_holds_live_events_until_its_replay() {
    let d = common::Daemon::start(common::Opts::default().arg("--role").arg("api")).await;
    let user = Uuid::new_v4();
    let (pool, mut reporter) = job_with_reporter(&d, "ext:2", user).await;
    let token = d.token(user);
    let mut ws = d.ws(user, &token).await;
    ws.send_text("ping").await;
    assert_eq!(ws.next_text(Duration::from_secs(5)).await.as_deref(), Some("pong"));
    // Live: events 1 and 2 arrive as they are written.
    report(&mut reporter, 1..=2).await;
    let mut live = Vec::new();
    while live.len() < 2 {
        let text = ws.next_text(Duration::from_secs(5)).await.expect("live events");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "job_progress" {
            live.push(v["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(live, vec![1, 2]);

    // The client resumes after seq 1 (as after a resync that reached it
    // before event 2), and the replay waits while 70 more events are
    // written: more than the 64 seqs a socket remembers below its newest,
    // so events sent live before a late replay would go out again in it.
    let lock = hold_replays(&pool).await;
    ws.send_text(r#"{"type":"resume","after":{"ext:2":1}}"#).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    report(&mut reporter, 3..=72).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.commit().await.unwrap();

    // Everything that comes, until the socket is quiet.
    let (after, resumed_at) = arrivals(&mut ws, usize::MAX, Duration::from_secs(2)).await;
    // 2 was sent already (not again); 3..=72 come from the replay, in order,
    // before `resumed`, and none again live after it.
    assert_eq!(after, (3..=72).collect::<Vec<i64>>(), "each event once, in order");
    assert_eq!(resumed_at, Some(70), "the replay first, then resumed, then nothing");
}
