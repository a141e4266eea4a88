-- Cancel requests (`POST /jobs/{id}/cancel`) of jobs that may be in a lane or running: the
-- active server tells every worker, and again each worker that comes online, until the job
-- ends. The partial index holds only those jobs, so finding them is no scan of the table.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz;
CREATE INDEX IF NOT EXISTS jobs_cancel_requested ON jobs (id) WHERE cancel_requested_at IS NOT NULL;
