//! Before a job runs: reading the job dict as arq left it in Redis and
//! arq's pre-run checks (`spec/arq-wire.md` §6.3), in the job's own actor and
//! under a time limit, so a bad job fails itself and nobody else.

use crate::arq::wire::{cancelled_error, job_execution_failed};
use crate::arq::{now_ms, Claimed, JobDef, PyValue};
use crate::jobs::{self, NOOP, PROCESS_DOCUMENT, REEMBED_DOCUMENT};
use crate::pipeline::StageError;
use crate::services::Services;

/// The pre-run phase (reading the job, arq's checks) may take this long.
pub const PRERUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Decoding a job dict (bounded by the decoder's own limits) may take this long.
const DECODE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the pre-run checks decided.
pub enum Admitted {
    /// A `process_document` job to run.
    Run(JobDef),
    /// Ended already (failed with arq's reason, or a `noop` that completed).
    Ended,
}

/// arq's checks before a job runs (`spec/arq-wire.md` §6.3), in its order:
/// the job dict exists (ours are rebuilt from Postgres if their key
/// expired), decodes, was not aborted, names a known function, and has tries
/// left. A job that fails one ends here with arq's failed result and a
/// readable reason; the daemon carries on.
pub async fn prerun(s: &Services, claimed: &mut Claimed) -> Result<Admitted, StageError> {
    let fail = |claimed: &Claimed, job: Option<&JobDef>, reason: String, exception: PyValue| {
        let (claimed, job) = (claimed.clone(), job.cloned());
        async move {
            jobs::fail_without_actor(s, &claimed, job.as_ref(), &reason, exception).await;
            Ok(Admitted::Ended)
        }
    };
    let bytes = match &claimed.job_bytes {
        Some(b) => b.clone(),
        None => match jobs::restore_expired(s, &claimed.job_id).await {
            Some(b) => {
                claimed.job_bytes = Some(b.clone());
                b
            }
            None => return fail(claimed, None, "job expired".into(), job_execution_failed("job expired")).await,
        },
    };
    let serializer = s.queue.serializer;
    let decoded = tokio::time::timeout(
        DECODE_LIMIT,
        tokio::task::spawn_blocking(move || JobDef::decode(&bytes, serializer)),
    )
    .await;
    let job = match decoded {
        Ok(Ok(Ok(job))) => job,
        Ok(Ok(Err(reason))) => {
            let msg = format!("unable to deserialize job: {reason}");
            return fail(claimed, None, msg.clone(), job_execution_failed(msg)).await;
        }
        Ok(Err(_)) => {
            let msg = "unable to deserialize job: the decoder crashed on it".to_string();
            return fail(claimed, None, msg.clone(), job_execution_failed(msg)).await;
        }
        Err(_) => {
            let msg = format!(
                "unable to deserialize job: not done within {} s",
                DECODE_LIMIT.as_secs()
            );
            return fail(claimed, None, msg.clone(), job_execution_failed(msg)).await;
        }
    };
    if claimed.abort_requested {
        return fail(
            claimed,
            Some(&job),
            "cancelled before it started".into(),
            cancelled_error(),
        )
        .await;
    }
    let known = job.function == PROCESS_DOCUMENT
        || job.function == REEMBED_DOCUMENT
        || (job.function == NOOP && s.settings.queue.enable_noop);
    if !known {
        let msg = format!("function '{}' not found", job.function);
        return fail(claimed, Some(&job), msg.clone(), job_execution_failed(msg)).await;
    }
    // A `_job_try` given to enqueue_job raises the try count (arq §6.3 step 5).
    if let Some(t) = job.job_try.filter(|t| *t > claimed.job_try) {
        claimed.job_try = t;
        if let Err(e) = s.queue.set_try(&claimed.job_id, t).await {
            tracing::warn!(job_id = %claimed.job_id, error = %e, "cannot store the job's try count");
        }
    }
    let max_tries = s.settings.queue.max_tries;
    if claimed.job_try > max_tries as i64 {
        let msg = format!("max {max_tries} retries exceeded");
        return fail(claimed, Some(&job), msg, jobs::max_tries_exceeded(max_tries)).await;
    }
    if job.function == NOOP {
        jobs::arq_finish(s, claimed, Some(&job), now_ms(), true, PyValue::None).await;
        return Ok(Admitted::Ended);
    }
    Ok(Admitted::Run(job))
}
