//! The statements of the hot path, and the planner settings they rely on. Each is one
//! statement per batch: the batch travels as arrays (`UNNEST`), so a thousand jobs cost one
//! round trip and one commit.

/// Planner settings of the store's connections. Every statement here finds jobs by id (a
/// batch's ids joined to the primary key) or walks an index; none is better served by reading
/// the whole table. The planner does not always know that: the job table grows from empty
/// faster than autovacuum analyzes it, and a cached generic plan made while it was small
/// keeps a hash join over a scan of the whole table, or loops over such a scan once per id.
/// Measured in `lanes bench` (40,000 tasks), batch updates then took up to 685 ms each and
/// throughput fell by half. With these off, a batch is always one index lookup per id.
pub const PLANNER: [(&str, &str); 3] = [
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// Records a batch of jobs in submit order; returns the ids that were new. Fails once the
/// control plane's lease epoch (`$11`, `$12`) is no longer the leader's. `$13`: timeouts,
/// `$15`: due times.
pub const INSERT: &str =
    "INSERT INTO jobs (id, task, args, resources, max_attempts, state, queue, error,
                       reply_to, correlation_id, finished_at, timeout_ms, submitted_by, run_at)
     SELECT u.id, u.task, u.args,
            ARRAY(SELECT jsonb_array_elements_text(u.resources)),
            u.max_attempts, u.state, u.queue, u.error, u.reply_to, u.correlation_id,
            CASE WHEN u.state IN ('completed', 'failed', 'canceled') THEN now() END,
            u.timeout_ms, u.submitted_by, u.run_at
     FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::int[], $6::text[],
                 $7::text[], $8::text[], $9::text[], $10::text[], $13::bigint[], $14::text[],
                 $15::timestamptz[])
          WITH ORDINALITY AS u(id, task, args, resources, max_attempts, state, queue,
                               error, reply_to, correlation_id, timeout_ms, submitted_by,
                               run_at, ord)
     WHERE (SELECT lanes_fence($11::text, $12::bigint))
     ORDER BY u.ord
     ON CONFLICT (id) DO NOTHING
     RETURNING id";

/// Marks jobs whose lane messages are durable `queued`, and gives each its lane.
///
/// Rows are locked in id order (the CTE runs first), like every batch update, so
/// batches racing on the same jobs wait for each other instead of deadlocking.
/// A job a worker has already reported on is left alone, unless it still lacks
/// its lane (a woken job, recorded `waiting`): its record has moved past `queued`
/// (the Callback set `queued_at`), and a write would only race the Callback's.
/// `locked` decides which rows: the lock re-checks its condition on the newest
/// row version, and nothing can change a row between the lock and the update.
pub const MARK_QUEUED: &str = "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::text[]) AS u(id, queue)),
          locked AS (SELECT u.* FROM u JOIN jobs ON jobs.id = u.id
                     WHERE jobs.state IN ('submitted', 'waiting') OR jobs.queue IS NULL
                     ORDER BY jobs.id FOR UPDATE OF jobs)
     UPDATE jobs SET queue = u.queue,
            state = CASE WHEN jobs.state IN ('submitted', 'waiting') THEN 'queued' ELSE jobs.state END,
            queued_at = COALESCE(jobs.queued_at, now()), updated_at = now()
     FROM locked AS u
     WHERE jobs.id = u.id";

/// Applies a batch of folded worker events; returns the jobs that ended.
///
/// Rows are locked in id order first (the CTE runs before the update), like every
/// batch update, so that concurrent batches wait for each other, never deadlock.
/// `started_at` comes from `started` events only: a job that ends without one (canceled
/// before it ran, skipped) never started, whatever its end says.
pub const APPLY: &str = "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::text[],
                                     $4::timestamptz[], $5::jsonb[], $6::text[],
                                     $7::jsonb[], $8::text[], $9::timestamptz[])
                AS u(id, attempt, worker, started_at, progress, state, result, error,
                     finished_at)),
          locked AS (SELECT u.* FROM u JOIN jobs ON jobs.id = u.id
                     ORDER BY jobs.id FOR UPDATE OF jobs),
          applied AS (
     UPDATE jobs SET
            attempts = GREATEST(jobs.attempts, u.attempt),
            state = COALESCE(u.state,
                             CASE WHEN u.attempt > 0 THEN 'running' ELSE jobs.state END),
            worker = COALESCE(u.worker, jobs.worker),
            started_at = COALESCE(jobs.started_at, u.started_at),
            queued_at = COALESCE(jobs.queued_at, u.started_at, u.finished_at),
            progress = CASE WHEN u.state = 'completed'
                            THEN jsonb_build_object('percent', 100)
                            ELSE COALESCE(u.progress, jobs.progress) END,
            result = CASE WHEN u.state IS NULL THEN jobs.result ELSE u.result END,
            error = CASE WHEN u.state IS NULL THEN jobs.error ELSE u.error END,
            finished_at = COALESCE(u.finished_at, jobs.finished_at),
            updated_at = now()
     FROM locked AS u
     WHERE jobs.id = u.id AND jobs.state NOT IN ('completed', 'failed', 'canceled')
     RETURNING jobs.id, jobs.state, u.state IS NOT NULL AS ended, jobs.result,
               jobs.error, jobs.reply_to, jobs.correlation_id, jobs.task, jobs.created_at,
               jobs.started_at, jobs.finished_at)
     SELECT id, state, result, error, reply_to, correlation_id, task, created_at, started_at,
            finished_at FROM applied
     WHERE ended";
