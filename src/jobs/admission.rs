//! Admission: fair sharing of the cluster's job slots between users. arq's
//! queue is one FIFO; a user who uploads a thousand documents would
//! otherwise put everyone else's files behind them. Documents uploaded
//! through our API (and their retries and re-embeds) therefore enter the
//! Redis queue only while their user is under their share; the rest are
//! held in Postgres (`enqueued_at IS NULL`) and released, oldest first, as
//! jobs finish.
//!
//! The share is work-conserving (`queue.fair_share`): the capacity is every
//! live worker's job slots together (each worker writes its `max_jobs` to
//! Redis every 10 s, see `ArqQueue::record_capacity`), divided max-min fairly
//! among the users who have work, weighted by `queue.user_weights`: a lone
//! user gets every slot of every instance; two users with big batches get
//! half each; a user who needs fewer leaves the rest to the others; every
//! user with work gets at least one. `queue.per_user_active_jobs` is an
//! optional hard cap on top. Decisions are serialised by one advisory lock,
//! so instances admitting at once do not overshoot. Jobs a caller enqueues
//! itself (`?enqueue=false`) are never held.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

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

/// One user's work: jobs in the queue or running, and jobs held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub user: Uuid,
    pub active: i64,
    pub held: i64,
    pub weight: f64,
}

/// Slots per user: `capacity` shared max-min fairly by weight among the
/// users' demands (active + held), one slot at a time to the user with the
/// fewest slots per unit of weight (ties by user id, so every instance
/// computes the same). A user never gets more than they ask for; every user
/// with work gets at least one slot even when there are more users than
/// slots (they then wait in arq's FIFO, one job each).
pub fn fair_shares(capacity: u64, demands: &[Demand]) -> HashMap<Uuid, i64> {
    // (slots per weight, user) as an ordered min-heap key; f64 via total order bits.
    let mut shares: HashMap<Uuid, i64> = demands.iter().map(|d| (d.user, 0)).collect();
    let want: HashMap<Uuid, (i64, f64)> = demands
        .iter()
        .map(|d| (d.user, (d.active + d.held, d.weight.max(0.01))))
        .collect();
    let key = |slots: i64, w: f64| ordered((slots as f64 + 1.0) / w);
    let mut heap: BinaryHeap<Reverse<(u64, Uuid)>> = demands
        .iter()
        .filter(|d| d.active + d.held > 0)
        .map(|d| Reverse((key(0, d.weight.max(0.01)), d.user)))
        .collect();
    let mut left = capacity;
    while left > 0 {
        let Some(Reverse((_, user))) = heap.pop() else { break };
        let (want_n, w) = want[&user];
        let slots = shares.get_mut(&user).expect("every demand has a share");
        *slots += 1;
        left -= 1;
        if *slots < want_n {
            heap.push(Reverse((key(*slots, w), user)));
        }
    }
    for d in demands {
        let s = shares.get_mut(&d.user).expect("every demand has a share");
        if *s == 0 && d.active + d.held > 0 {
            *s = 1;
        }
    }
    shares
}

/// A non-negative f64 as an integer with the same order.
fn ordered(x: f64) -> u64 {
    x.max(0.0).to_bits()
}

fn expires_ms(services: &Services) -> i64 {
    (services.settings.queue.job_expires_secs * 1000) as i64
}

/// The most of each user's jobs that may be active now.
async fn ceilings(services: &Services, tx: &mut sqlx::PgConnection) -> Result<HashMap<Uuid, i64>, AdmissionError> {
    let q = &services.settings.queue;
    let cap = q.per_user_active_jobs as i64;
    let mut demands = db::admission_demands(tx).await?;
    for d in &mut demands {
        d.weight = q.user_weights.get(&d.user.to_string()).copied().unwrap_or(1.0);
    }
    let mut out: HashMap<Uuid, i64> = if q.fair_share {
        let capacity = match services.queue.cluster_capacity().await? {
            // No worker has said so yet (all starting, or all down): this one's slots.
            0 => q.max_jobs as u64,
            c => c,
        };
        fair_shares(capacity, &demands)
    } else {
        demands.iter().map(|d| (d.user, i64::MAX)).collect()
    };
    if cap > 0 {
        for v in out.values_mut() {
            *v = (*v).min(cap);
        }
    }
    Ok(out)
}

/// Enqueues a managed job now if the user is under their share, or leaves
/// it held for [`feed_all`].
pub async fn admit(
    services: &Services,
    user: Uuid,
    job_id: &str,
    document_id: Uuid,
) -> Result<Admission, AdmissionError> {
    let mut tx = services.db.begin().await?;
    db::lock_admission(&mut tx).await?;
    let ceiling = ceilings(services, &mut tx)
        .await?
        .get(&user)
        .copied()
        .unwrap_or(i64::MAX);
    if room(ceiling, db::active_managed_jobs(&mut tx, user).await?) == 0 {
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

/// Releases held jobs of every user up to their share (after a job ended:
/// a share can move to another user; and the watchdog's safety net, which
/// also enqueues uploads whose admission failed while Redis was away).
/// Returns how many.
pub async fn feed_all(services: &Services) -> Result<usize, AdmissionError> {
    let mut tx = services.db.begin().await?;
    db::lock_admission(&mut tx).await?;
    let ceilings = ceilings(services, &mut tx).await?;
    let mut n = 0;
    for user in db::users_with_held_jobs(&mut *tx).await? {
        let ceiling = ceilings.get(&user).copied().unwrap_or(i64::MAX);
        let room = room(ceiling, db::active_managed_jobs(&mut tx, user).await?);
        if room == 0 {
            continue;
        }
        for (job_id, document_id, function) in &db::held_jobs(&mut tx, user, room.min(1000)).await? {
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
            n += 1;
        }
    }
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(n: u128, active: i64, held: i64, weight: f64) -> Demand {
        Demand {
            user: Uuid::from_u128(n),
            active,
            held,
            weight,
        }
    }

    fn share(s: &HashMap<Uuid, i64>, n: u128) -> i64 {
        s[&Uuid::from_u128(n)]
    }

    #[test]
    fn a_lone_user_gets_every_slot_of_the_cluster() {
        let s = fair_shares(8, &[demand(1, 0, 11, 1.0)]);
        assert_eq!(share(&s, 1), 8);
        // Never more than asked for.
        assert_eq!(share(&fair_shares(8, &[demand(1, 1, 2, 1.0)]), 1), 3);
    }

    #[test]
    fn users_with_work_split_the_slots_and_a_small_demand_leaves_the_rest() {
        let s = fair_shares(8, &[demand(1, 8, 992, 1.0), demand(2, 0, 1, 1.0)]);
        assert_eq!(
            (share(&s, 1), share(&s, 2)),
            (7, 1),
            "bob needs one, alice gets the rest"
        );
        let s = fair_shares(8, &[demand(1, 8, 100, 1.0), demand(2, 0, 100, 1.0)]);
        assert_eq!((share(&s, 1), share(&s, 2)), (4, 4));
        let s = fair_shares(9, &[demand(1, 0, 100, 2.0), demand(2, 0, 100, 1.0)]);
        assert_eq!((share(&s, 1), share(&s, 2)), (6, 3), "weight 2 gets twice the slots");
    }

    #[test]
    fn more_users_than_slots_still_gives_each_one() {
        let demands: Vec<Demand> = (1..=5).map(|n| demand(n, 0, 10, 1.0)).collect();
        let s = fair_shares(2, &demands);
        assert!((1..=5).all(|n| share(&s, n) == 1), "{s:?}");
        assert_eq!(fair_shares(0, &[demand(1, 0, 0, 1.0)])[&Uuid::from_u128(1)], 0);
    }

    #[test]
    fn room_is_the_cap_minus_what_runs_never_negative() {
        assert_eq!(room(4, 0), 4);
        assert_eq!(room(4, 3), 1);
        assert_eq!(room(4, 4), 0);
        assert_eq!(room(4, 9), 0);
        assert_eq!(room(0, 100), i64::MAX, "0: no limit");
    }
}
