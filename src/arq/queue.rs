//! The arq queue in Redis, spoken exactly as arq 0.28 speaks it
//! (`spec/arq-wire.md`): enqueue (§5), claim + run prelude (§6.2, §6.3),
//! finish (§6.5, §6.6), retry, lease renewal, abort flags and the health key.
//!
//! Claims run as one Lua script per poll: it reads due ids, takes
//! `arq:in-progress:<id>` for each one nobody holds, and does the prelude
//! (GET job, INCR retry, EXPIRE, ZREM abort) in the same round trip. A script's
//! write to a key a Python worker WATCHes aborts that worker's EXEC, so our
//! workers and arq's can share one queue.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

use super::wire::{JobDef, JobResult};
use crate::config::{QueueSettings, Serializer};

pub const JOB_PREFIX: &str = "arq:job:";
pub const RESULT_PREFIX: &str = "arq:result:";
pub const IN_PROGRESS_PREFIX: &str = "arq:in-progress:";
pub const RETRY_PREFIX: &str = "arq:retry:";
pub const ABORT_SET: &str = "arq:abort";
/// The retry counter's TTL: a literal in arq's `Worker.run_job`.
pub const RETRY_TTL_SECS: i64 = 88_400;
/// arq's `expires_extra_ms`: default job-key TTL beyond the defer delay.
pub const EXPIRES_EXTRA_MS: i64 = 86_400_000;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}

/// One claimed job, after the prelude ran.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job_id: String,
    /// The raw job dict; `None` when the job key had expired (arq: "job expired").
    pub job_bytes: Option<Vec<u8>>,
    /// The INCR'd retry counter: this is try number `job_try`.
    pub job_try: i64,
    /// `Job.abort()` was called before the job started.
    pub abort_requested: bool,
    /// The queue score (ms epoch when the job became due).
    pub score: i64,
}

const ENQUEUE_LUA: &str = r#"
-- KEYS: job key, result key, queue. ARGV: expires_ms, job bytes, score, id
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"#;

const CLAIM_LUA: &str = r#"
-- KEYS: queue. ARGV: now_ms, read_limit, want, lease_ms, retry_ttl
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
local want = tonumber(ARGV[3])
for i = 1, #due, 2 do
  if #out >= want then break end
  local id = due[i]
  local score = tonumber(due[i + 1])
  local ip = 'arq:in-progress:' .. id
  if score ~= 0 and redis.call('EXISTS', ip) == 0 then
    redis.call('SET', ip, '1', 'PX', ARGV[4])
    local job = redis.call('GET', 'arq:job:' .. id)
    local try = redis.call('INCR', 'arq:retry:' .. id)
    redis.call('EXPIRE', 'arq:retry:' .. id, ARGV[5])
    local aborted = redis.call('ZREM', 'arq:abort', id)
    out[#out + 1] = {id, job, try, aborted, due[i + 1]}
  end
end
return out
"#;

const CANCEL_LUA: &str = r#"
-- KEYS: queue. ARGV: id, now_ms, result bytes, keep_ms
-- A running job is flagged in arq:abort (its worker stops it); a queued or
-- deferred one is finished right here with the given (CancelledError) result.
local id = ARGV[1]
if redis.call('EXISTS', 'arq:in-progress:' .. id) == 1 then
  redis.call('ZADD', 'arq:abort', ARGV[2], id)
  return 'running'
end
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', 'arq:abort', id)
  redis.call('DEL', 'arq:job:' .. id, 'arq:retry:' .. id)
  if tonumber(ARGV[4]) > 0 then
    redis.call('SET', 'arq:result:' .. id, ARGV[3], 'PX', ARGV[4])
  end
  return 'queued'
end
return 'unknown'
"#;

/// Where a cancelled job was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Running somewhere: flagged in `arq:abort`; its worker stops it.
    Running,
    /// Was waiting: removed, with its result written.
    Queued,
    /// Redis does not know it.
    Unknown,
}

/// What Redis knows of one job.
#[derive(Debug, Clone, Default)]
pub struct QueueView {
    /// In the queue (due or deferred).
    pub queued: bool,
    /// Its `arq:in-progress` lease is held.
    pub running: bool,
    pub has_result: bool,
    pub job_bytes: Option<Vec<u8>>,
    /// The retry counter (the try number of the current or last claim).
    pub job_try: i64,
}

/// Handle on one arq queue. Cheap to clone.
#[derive(Clone)]
pub struct ArqQueue {
    redis: ConnectionManager,
    pub name: String,
    pub serializer: Serializer,
    health_key: String,
    /// `<queue>:doculearn:workers`: a sorted set of the live workers' job
    /// slots ("<worker id> <max_jobs>", scored by when the entry expires).
    workers_key: String,
    /// This process, in that set.
    worker_id: String,
    enqueue: std::sync::Arc<Script>,
    claim: std::sync::Arc<Script>,
    cancel: std::sync::Arc<Script>,
}

impl ArqQueue {
    pub fn new(redis: ConnectionManager, settings: &QueueSettings) -> Self {
        ArqQueue {
            redis,
            name: settings.name.clone(),
            serializer: settings.serializer,
            health_key: format!("{}:health-check", settings.name),
            workers_key: format!("{}:doculearn:workers", settings.name),
            worker_id: uuid::Uuid::new_v4().simple().to_string(),
            enqueue: std::sync::Arc::new(Script::new(ENQUEUE_LUA)),
            claim: std::sync::Arc::new(Script::new(CLAIM_LUA)),
            cancel: std::sync::Arc::new(Script::new(CANCEL_LUA)),
        }
    }

    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// `enqueue_job` (§5): refuses a duplicate id while its job or result
    /// exists. Returns false for a duplicate.
    pub async fn enqueue(
        &self,
        job_id: &str,
        job: &JobDef,
        defer_ms: i64,
        expires_ms: Option<i64>,
    ) -> Result<bool, QueueError> {
        let score = job.enqueue_time_ms + defer_ms.max(0);
        let expires = expires_ms.unwrap_or(score - job.enqueue_time_ms + EXPIRES_EXTRA_MS);
        let mut con = self.redis.clone();
        let added: i64 = self
            .enqueue
            .key(format!("{JOB_PREFIX}{job_id}"))
            .key(format!("{RESULT_PREFIX}{job_id}"))
            .key(&self.name)
            .arg(expires)
            .arg(job.encode(self.serializer))
            .arg(score)
            .arg(job_id)
            .invoke_async(&mut con)
            .await?;
        Ok(added == 1)
    }

    /// Writes a job key again unless one exists: for a job of ours whose
    /// key expired while it waited (Postgres says what the job is).
    pub async fn restore_job(&self, job_id: &str, job: &JobDef, expires_ms: i64) -> Result<Vec<u8>, QueueError> {
        let bytes = job.encode(self.serializer);
        let mut con = self.redis.clone();
        redis::cmd("SET")
            .arg(format!("{JOB_PREFIX}{job_id}"))
            .arg(&bytes)
            .arg("PX")
            .arg(expires_ms.max(1))
            .arg("NX")
            .query_async::<()>(&mut con)
            .await?;
        Ok(bytes)
    }

    /// Claims up to `want` due jobs (§6.1–6.3), looking at most at `read_limit` ids.
    pub async fn claim(&self, want: usize, read_limit: usize, lease_ms: i64) -> Result<Vec<Claimed>, QueueError> {
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut con = self.redis.clone();
        let reply: Value = self
            .claim
            .key(&self.name)
            .arg(now_ms())
            .arg(read_limit.max(want))
            .arg(want)
            .arg(lease_ms)
            .arg(RETRY_TTL_SECS)
            .invoke_async(&mut con)
            .await?;
        parse_claims(reply)
    }

    /// `SETEX arq:retry:<id> 88400 t`: a job dict's `t` above the counter wins.
    pub async fn set_try(&self, job_id: &str, t: i64) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        con.set_ex::<_, _, ()>(format!("{RETRY_PREFIX}{job_id}"), t.to_string(), RETRY_TTL_SECS as u64)
            .await?;
        Ok(())
    }

    /// Cancels a job wherever it is (see [`CancelOutcome`]). `result` is the
    /// arq result to store if the job was still waiting.
    pub async fn cancel(
        &self,
        job_id: &str,
        result: &JobResult,
        keep_result_ms: i64,
    ) -> Result<CancelOutcome, QueueError> {
        let mut con = self.redis.clone();
        let out: String = self
            .cancel
            .key(&self.name)
            .arg(job_id)
            .arg(now_ms())
            .arg(result.encode(self.serializer))
            .arg(keep_result_ms)
            .invoke_async(&mut con)
            .await?;
        Ok(match out.as_str() {
            "running" => CancelOutcome::Running,
            "queued" => CancelOutcome::Queued,
            _ => CancelOutcome::Unknown,
        })
    }

    /// Extends the lease on a running job (arq's in-progress key), and puts
    /// it back when Redis lost it (a restart without persistence), so nobody
    /// takes over a job that is still running. Returns false when it had to
    /// be restored.
    pub async fn renew(&self, job_id: &str, lease_ms: i64) -> Result<bool, QueueError> {
        let mut con = self.redis.clone();
        let key = format!("{IN_PROGRESS_PREFIX}{job_id}");
        let extended: bool = con.pexpire(&key, lease_ms).await?;
        if !extended {
            redis::cmd("SET")
                .arg(&key)
                .arg("1")
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async::<()>(&mut con)
                .await?;
        }
        Ok(extended)
    }

    /// Ends a job (§6.5 with finish=True, or §6.6): stores the result for
    /// `keep_result_ms` (none when 0) and removes every trace from the queue,
    /// in one MULTI so `Job.result()` never sees a gap.
    pub async fn finish(&self, job_id: &str, result: &JobResult, keep_result_ms: i64) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if keep_result_ms > 0 {
            pipe.cmd("SET")
                .arg(format!("{RESULT_PREFIX}{job_id}"))
                .arg(result.encode(self.serializer))
                .arg("PX")
                .arg(keep_result_ms)
                .ignore();
        }
        pipe.zrem(ABORT_SET, job_id).ignore();
        pipe.zrem(&self.name, job_id).ignore();
        pipe.del(&[
            format!("{IN_PROGRESS_PREFIX}{job_id}"),
            format!("{RETRY_PREFIX}{job_id}"),
            format!("{JOB_PREFIX}{job_id}"),
        ])
        .ignore();
        pipe.query_async::<()>(&mut con).await?;
        Ok(())
    }

    /// Hands a job back for another try (arq's Retry): the retry counter and
    /// job key stay; the score moves `defer_ms` into the future.
    pub async fn retry(&self, job_id: &str, defer_ms: i64) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if defer_ms > 0 {
            pipe.cmd("ZADD")
                .arg(&self.name)
                .arg("XX")
                .arg(now_ms() + defer_ms)
                .arg(job_id)
                .ignore();
        }
        pipe.del(format!("{IN_PROGRESS_PREFIX}{job_id}")).ignore();
        pipe.query_async::<()>(&mut con).await?;
        Ok(())
    }

    /// Ids whose abort was requested (`Job.abort()` adds them to `arq:abort`).
    pub async fn abort_requested(&self) -> Result<Vec<String>, QueueError> {
        let mut con = self.redis.clone();
        Ok(con.zrange(ABORT_SET, 0, -1).await?)
    }

    /// Says that this worker has `slots` job slots for the next `ttl_ms`
    /// (the fair-share admission sums the live workers' slots); entries that
    /// expired are removed on the way, so a crashed worker stops counting.
    pub async fn record_capacity(&self, slots: u32, ttl_ms: i64) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        let now = super::now_ms();
        let member_prefix = format!("{} ", self.worker_id);
        // One member per worker: drop this worker's previous entry first.
        let mine: Vec<String> = con.zrange(&self.workers_key, 0, -1).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for m in mine.iter().filter(|m| m.starts_with(&member_prefix)) {
            pipe.zrem(&self.workers_key, m).ignore();
        }
        pipe.zrembyscore(&self.workers_key, "-inf", now).ignore();
        pipe.zadd(&self.workers_key, format!("{member_prefix}{slots}"), now + ttl_ms)
            .ignore();
        pipe.query_async::<()>(&mut con).await?;
        Ok(())
    }

    /// Removes this worker from the capacity set (graceful shutdown).
    pub async fn drop_capacity(&self) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        let mine: Vec<String> = con.zrange(&self.workers_key, 0, -1).await?;
        for m in mine.iter().filter(|m| m.starts_with(&format!("{} ", self.worker_id))) {
            let _: i64 = con.zrem(&self.workers_key, m).await?;
        }
        Ok(())
    }

    /// Job slots of every live worker together (0 when none is known).
    pub async fn cluster_capacity(&self) -> Result<u64, QueueError> {
        let mut con = self.redis.clone();
        let live: Vec<String> = con.zrangebyscore(&self.workers_key, super::now_ms(), "+inf").await?;
        Ok(live
            .iter()
            .filter_map(|m| m.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }

    /// Writes `<queue>:health-check` in arq's format (§10).
    pub async fn record_health(
        &self,
        ttl_ms: i64,
        complete: u64,
        failed: u64,
        retried: u64,
        ongoing: u64,
    ) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        let queued: i64 = con.zcard(&self.name).await?;
        let line = format!(
            "{} j_complete={complete} j_failed={failed} j_retried={retried} j_ongoing={ongoing} queued={queued}",
            chrono::Local::now().format("%b-%d %H:%M:%S")
        );
        redis::cmd("PSETEX")
            .arg(&self.health_key)
            .arg(ttl_ms)
            .arg(line)
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    pub async fn clear_health(&self) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        con.del::<_, ()>(&self.health_key).await?;
        Ok(())
    }

    /// Number of ids in the queue (due, deferred and running).
    pub async fn depth(&self) -> Result<i64, QueueError> {
        let mut con = self.redis.clone();
        Ok(con.zcard(&self.name).await?)
    }

    /// Everything Redis knows of one job, in one round trip.
    pub async fn inspect(&self, job_id: &str) -> Result<QueueView, QueueError> {
        let mut con = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.zscore(&self.name, job_id)
            .exists(format!("{IN_PROGRESS_PREFIX}{job_id}"))
            .exists(format!("{RESULT_PREFIX}{job_id}"))
            .get(format!("{JOB_PREFIX}{job_id}"))
            .get(format!("{RETRY_PREFIX}{job_id}"));
        let (score, running, has_result, job_bytes, job_try): (Option<f64>, bool, bool, Option<Vec<u8>>, Option<i64>) =
            pipe.query_async(&mut con).await?;
        Ok(QueueView {
            queued: score.is_some(),
            running,
            has_result,
            job_bytes,
            job_try: job_try.unwrap_or(0),
        })
    }

    /// Takes a job away from the worker holding its lease and makes it due
    /// now, so any worker claims it at once (a stalled attempt handed over).
    pub async fn requeue_now(&self, job_id: &str) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(format!("{IN_PROGRESS_PREFIX}{job_id}"))
            .ignore()
            .cmd("ZADD")
            .arg(&self.name)
            .arg("XX")
            .arg(now_ms())
            .arg(job_id)
            .ignore();
        pipe.query_async::<()>(&mut con).await?;
        Ok(())
    }

    /// Forgets a job's stored result (arq refuses to enqueue an id that has one).
    pub async fn forget_result(&self, job_id: &str) -> Result<(), QueueError> {
        let mut con = self.redis.clone();
        con.del::<_, ()>(format!("{RESULT_PREFIX}{job_id}")).await?;
        Ok(())
    }

    /// Is the job known to Redis at all (queued, deferred, running, or with a result)?
    pub async fn knows(&self, job_id: &str) -> Result<bool, QueueError> {
        let mut con = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.zscore(&self.name, job_id)
            .exists(format!("{RESULT_PREFIX}{job_id}"))
            .exists(format!("{IN_PROGRESS_PREFIX}{job_id}"));
        let (score, result, running): (Option<f64>, bool, bool) = pipe.query_async(&mut con).await?;
        Ok(score.is_some() || result || running)
    }
}

fn parse_claims(reply: Value) -> Result<Vec<Claimed>, QueueError> {
    let Value::Array(items) = reply else {
        return Err(QueueError::Protocol(format!("claim returned {reply:?}")));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(fields) = item else {
                return Err(QueueError::Protocol("claim item is not an array".into()));
            };
            let mut it = fields.into_iter();
            let job_id = match it.next() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                other => return Err(QueueError::Protocol(format!("job id {other:?}"))),
            };
            let job_bytes = match it.next() {
                Some(Value::BulkString(b)) => Some(b),
                _ => None,
            };
            let job_try = match it.next() {
                Some(Value::Int(i)) => i,
                other => return Err(QueueError::Protocol(format!("try {other:?}"))),
            };
            let abort_requested = matches!(it.next(), Some(Value::Int(1)));
            let score = match it.next() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).parse::<f64>().unwrap_or(0.0) as i64,
                _ => 0,
            };
            Ok(Claimed {
                job_id,
                job_bytes,
                job_try,
                abort_requested,
                score,
            })
        })
        .collect()
}
