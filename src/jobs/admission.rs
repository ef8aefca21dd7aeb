//! Admission: fair sharing of workers between users. arq's queue is one
//! FIFO; a user who uploads a thousand documents would otherwise put
//! everyone else's files behind them. Documents uploaded through our API
//! (and their retries) therefore enter the Redis queue at most
//! `queue.per_user_active_jobs` per user at a time; the rest are held in
//! Postgres (`enqueued_at IS NULL`) and released, oldest first, as that
//! user's jobs finish. Other users' jobs interleave with the batch, so each
//! user's work moves. Jobs a caller enqueues itself (`?enqueue=false`) are
//! never held.

use redis::RedisError;
use uuid::Uuid;

use crate::db;
use crate::services::Services;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Enqueued,
    Held,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("queue: {0}")]
    Queue(#[from] crate::arq::QueueError),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// How many more of a user's jobs may enter the queue: `cap` minus what is
/// active (never negative); 0 as the cap means no limit.
pub fn room(cap: i64, active: i64) -> i64 {
    if cap <= 0 {
        i64::MAX
    } else {
        (cap - active).max(0)
    }
}

fn expires_ms(services: &Services) -> i64 {
    (services.settings.queue.job_expires_secs * 1000) as i64
}

/// Enqueues a managed job now if the user is under their share, or leaves
/// it held for [`feed_user`].
pub async fn admit(
    services: &Services,
    user: Uuid,
    job_id: &str,
    document_id: Uuid,
) -> Result<Admission, AdmissionError> {
    let cap = services.settings.queue.per_user_active_jobs as i64;
    let mut tx = services.db.begin().await?;
    db::lock_user_admission(&mut tx, user).await?;
    if room(cap, db::active_managed_jobs(&mut tx, user).await?) == 0 {
        tx.commit().await?;
        return Ok(Admission::Held);
    }
    let function = db::job_function(&mut tx, job_id).await?;
    services
        .queue
        .enqueue(
            job_id,
            &super::job_def(&function, document_id, user),
            0,
            Some(expires_ms(services)),
        )
        .await?;
    db::mark_enqueued(&mut tx, job_id).await?;
    tx.commit().await?;
    Ok(Admission::Enqueued)
}

/// Releases the user's held jobs up to their share. Returns how many.
pub async fn feed_user(services: &Services, user: Uuid) -> Result<usize, AdmissionError> {
    let cap = services.settings.queue.per_user_active_jobs as i64;
    let mut tx = services.db.begin().await?;
    db::lock_user_admission(&mut tx, user).await?;
    let room = room(cap, db::active_managed_jobs(&mut tx, user).await?);
    if room == 0 {
        return Ok(0);
    }
    let held = db::held_jobs(&mut tx, user, room.min(1000)).await?;
    for (job_id, document_id, function) in &held {
        // A duplicate (enqueued before a crash) is refused by the queue and fine.
        services
            .queue
            .enqueue(
                job_id,
                &super::job_def(function, *document_id, user),
                0,
                Some(expires_ms(services)),
            )
            .await?;
        db::mark_enqueued(&mut tx, job_id).await?;
    }
    tx.commit().await?;
    Ok(held.len())
}

/// Releases held jobs of every user who has room (the watchdog's safety net,
/// and what enqueues uploads whose admission failed while Redis was away).
pub async fn feed_all(services: &Services) -> Result<usize, AdmissionError> {
    let mut n = 0;
    for user in db::users_with_held_jobs(&services.db).await? {
        n += feed_user(services, user).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::room;

    #[test]
    fn room_is_the_cap_minus_what_runs_never_negative() {
        assert_eq!(room(4, 0), 4);
        assert_eq!(room(4, 3), 1);
        assert_eq!(room(4, 4), 0);
        assert_eq!(room(4, 9), 0);
        assert_eq!(room(0, 100), i64::MAX, "0: no limit");
    }
}
