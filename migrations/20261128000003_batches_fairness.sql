-- Batches (seed plan 4.1) and fair sharing of workers between users.

-- A batch groups documents uploaded together. Its progress is a job row of
-- its own (`batch:{id}` in job_progress, stage `batch_processing`), so batch
-- events get a seq, are stored in the history and can be resumed like any job.
CREATE TABLE batches (
    id         uuid PRIMARY KEY,
    owner_id   uuid NOT NULL,
    total      integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_owner_idx ON batches (owner_id, created_at DESC);

-- Fairness: our own uploads put at most `queue.per_user_active_jobs` jobs of
-- one user into the Redis queue at a time; the rest wait here (enqueued_at
-- IS NULL) and are released as that user's jobs finish, so one user's
-- thousand-document batch and another user's single file both move.
--   managed      true: doculearn enqueues the job; false: the caller's own
--                arq client does (upload with ?enqueue=false)
--   enqueued_at  when the job was put into Redis (NULL: held back, or not
--                yet enqueued by the caller)
ALTER TABLE job_progress ADD COLUMN managed boolean NOT NULL DEFAULT true;
ALTER TABLE job_progress ADD COLUMN enqueued_at timestamptz;
UPDATE job_progress SET enqueued_at = created_at;
CREATE INDEX idx_job_progress_held ON job_progress (user_id, created_at)
    WHERE enqueued_at IS NULL AND managed AND stage = 'queued';
