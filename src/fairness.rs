//! Fair sharing of workers between users. arq's queue is one FIFO; a user
//! who uploads a thousand documents would otherwise put everyone else's
//! files behind them. Documents uploaded through our API therefore enter the
//! Redis queue at most `queue.per_user_active_jobs` per user at a time; the
//! rest are held in Postgres (`enqueued_at IS NULL`) and released, oldest
//! first, as that user's jobs finish. Other users' jobs interleave with the
//! batch, so each user's work moves. Jobs a caller enqueues itself
//! (`?enqueue=false`) are never held.

use redis::RedisError;
use sqlx::Row;
use uuid::Uuid;

use crate::arq::{now_ms, JobDef, PyValue};
use crate::jobs::PROCESS_DOCUMENT;
use crate::services::Services;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Enqueued,
    Held,
}

#[derive(Debug, thiserror::Error)]
pub enum FairnessError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("queue: {0}")]
    Queue(#[from] crate::arq::QueueError),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// The job dict doculearn enqueues for one of its own documents.
pub fn job_def(document_id: Uuid, user: Uuid) -> JobDef {
    JobDef {
        job_try: None,
        function: PROCESS_DOCUMENT.into(),
        args: vec![PyValue::Str(document_id.to_string()), PyValue::Str(user.to_string())],
        kwargs: vec![],
        enqueue_time_ms: now_ms(),
    }
}

/// Serialises admission decisions for one user across instances.
async fn lock_user(tx: &mut sqlx::PgConnection, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn active(tx: &mut sqlx::PgConnection, user: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM job_progress WHERE user_id = $1 AND managed AND enqueued_at IS NOT NULL \
         AND stage NOT IN ('completed', 'failed') AND document_id IS NOT NULL",
    )
    .bind(user)
    .fetch_one(&mut *tx)
    .await
}

/// Enqueues a new managed job now if the user is under their share, or
/// leaves it held for [`feed_user`].
pub async fn admit(
    services: &Services,
    user: Uuid,
    job_id: &str,
    document_id: Uuid,
) -> Result<Admission, FairnessError> {
    let cap = services.settings.queue.per_user_active_jobs as i64;
    let mut tx = services.db.begin().await?;
    lock_user(&mut tx, user).await?;
    if cap > 0 && active(&mut tx, user).await? >= cap {
        tx.commit().await?;
        return Ok(Admission::Held);
    }
    let expires_ms = (services.settings.queue.job_expires_secs * 1000) as i64;
    services
        .queue
        .enqueue(job_id, &job_def(document_id, user), 0, Some(expires_ms))
        .await?;
    sqlx::query("UPDATE job_progress SET enqueued_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Admission::Enqueued)
}

/// Releases the user's held jobs up to their share. Returns how many.
pub async fn feed_user(services: &Services, user: Uuid) -> Result<usize, FairnessError> {
    let cap = services.settings.queue.per_user_active_jobs as i64;
    let mut tx = services.db.begin().await?;
    lock_user(&mut tx, user).await?;
    let room = if cap > 0 {
        cap - active(&mut tx, user).await?
    } else {
        i64::MAX
    };
    if room <= 0 {
        return Ok(0);
    }
    let held = sqlx::query(
        "SELECT job_id, document_id FROM job_progress WHERE user_id = $1 AND managed AND enqueued_at IS NULL \
         AND stage = 'queued' AND document_id IS NOT NULL ORDER BY created_at, job_id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(user)
    .bind(room.min(1000))
    .fetch_all(&mut *tx)
    .await?;
    let expires_ms = (services.settings.queue.job_expires_secs * 1000) as i64;
    for row in &held {
        let job_id: String = row.try_get("job_id")?;
        let document_id: Uuid = row.try_get("document_id")?;
        // A duplicate (enqueued before a crash) is refused by the queue and fine.
        services
            .queue
            .enqueue(&job_id, &job_def(document_id, user), 0, Some(expires_ms))
            .await?;
        sqlx::query("UPDATE job_progress SET enqueued_at = now() WHERE job_id = $1")
            .bind(&job_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(held.len())
}

/// Releases held jobs of every user who has room (the watchdog's safety net).
pub async fn feed_all(services: &Services) -> Result<usize, FairnessError> {
    let users: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM job_progress WHERE managed AND enqueued_at IS NULL AND stage = 'queued' \
         AND document_id IS NOT NULL LIMIT 10000",
    )
    .fetch_all(&services.db)
    .await?;
    let mut n = 0;
    for user in users {
        n += feed_user(services, user).await?;
    }
    Ok(n)
}
