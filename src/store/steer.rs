//! Steering single jobs: cancel (`POST /jobs/{id}/cancel`) and retry (`POST /jobs/{id}/retry`),
//! and pruning finished ones (retention). Each Dispatcher write carries the control plane's
//! epoch (`lanes_fence`).

use super::{JobState, Result, Store, Unfinished};
use uuid::Uuid;

/// Another job as `blocked_by` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Brief {
    pub id: Uuid,
    pub seq: i64,
    pub state: JobState,
    pub worker: Option<String>,
    pub queue: Option<String>,
    pub task: String,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Store {
    /// Cancels a job that waits for its resources (it has no message anywhere); false if it
    /// no longer waits.
    pub async fn cancel_waiting(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'canceled', error = 'canceled', finished_at = now(),
                    updated_at = now()
             WHERE id = $1 AND state = 'waiting' AND (SELECT lanes_fence($2::text, $3::bigint))",
        )
        .bind(id)
        .bind(self.fence.as_ref().map(|l| l.prefix.as_str()))
        .bind(self.fence.as_ref().map(|l| l.epoch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a cancel request for a job that has not ended; returns its state then, or None
    /// if it has ended (or does not exist).
    pub async fn request_cancel(&self, id: Uuid) -> Result<Option<JobState>> {
        let row: Option<(JobState,)> = sqlx::query_as(
            "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, now()),
                    updated_at = now()
             WHERE id = $1 AND state NOT IN ('completed', 'failed', 'canceled')
             RETURNING state",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(s,)| s))
    }

    /// Deletes up to `batch` finished jobs that ended over `older` ago, oldest first; returns
    /// how many. Rows locked by another statement are left for the next time.
    pub async fn prune_finished(&self, older: std::time::Duration, batch: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                WHERE state IN ('completed', 'failed', 'canceled')
                  AND finished_at < now() - make_interval(secs => $1)
                ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(older.as_secs_f64())
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// What `blocked_by` shows of other jobs.
    pub async fn briefs(&self, ids: &[Uuid]) -> Result<Vec<Brief>> {
        Ok(sqlx::query_as(
            "SELECT id, seq, state, worker, queue, task, started_at FROM jobs WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How long each task's jobs ran (ms, the mean), over the latest `limit` completed jobs.
    pub async fn recent_run_times(&self, limit: i64) -> Result<Vec<(String, f64)>> {
        Ok(sqlx::query_as(
            "SELECT task, avg(extract(epoch FROM finished_at - started_at) * 1000)::float8
             FROM (SELECT task, started_at, finished_at FROM jobs
                   WHERE state = 'completed' AND started_at IS NOT NULL
                   ORDER BY seq DESC LIMIT $1) AS recent
             GROUP BY task",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The jobs with a cancel request that have not ended.
    pub async fn pending_cancels(&self) -> Result<Vec<Uuid>> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE cancel_requested_at IS NOT NULL
               AND state NOT IN ('completed', 'failed', 'canceled')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Makes a failed or canceled job new again (`waiting`, no lane, no attempts, nothing
    /// recorded of its runs) for the Dispatcher to route; None if it is in neither state.
    pub async fn reset_for_retry(&self, id: Uuid) -> Result<Option<Unfinished>> {
        Ok(sqlx::query_as(
            "UPDATE jobs SET state = 'waiting', attempts = 0, worker = NULL, queue = NULL,
                    progress = NULL, result = NULL, error = NULL, queued_at = NULL,
                    started_at = NULL, finished_at = NULL, cancel_requested_at = NULL,
                    updated_at = now()
             WHERE id = $1 AND state IN ('failed', 'canceled')
               AND (SELECT lanes_fence($2::text, $3::bigint))
             RETURNING id, task, args, resources, queue, state, attempts, max_attempts, timeout_ms",
        )
        .bind(id)
        .bind(self.fence.as_ref().map(|l| l.prefix.as_str()))
        .bind(self.fence.as_ref().map(|l| l.epoch))
        .fetch_optional(&self.pool)
        .await?)
    }
}
