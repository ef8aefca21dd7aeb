-- Progress events update their job's row once each (seq, progress, message,
-- last_update). With last_update in an index, every such update was a new
-- row version with a new entry in each of job_progress's indexes. With no
-- index on a column an intermediate event changes, and room left on each
-- page, those updates are HOT: the new version stays on its page and no
-- index is touched (job_progress_history still gets its row per event).
--
-- The watchdog's scan (unfinished jobs idle for a while) reads the
-- unfinished jobs through this partial index and checks last_update on the
-- rows themselves: there are only as many as are queued or running.
DROP INDEX IF EXISTS idx_job_progress_active;
CREATE INDEX idx_job_progress_active ON job_progress (created_at)
    WHERE stage NOT IN ('completed', 'failed');
ALTER TABLE job_progress SET (fillfactor = 70);
