//! Delayed jobs in the table: the due ones, in the order they fall due; firing them (out of
//! `scheduled`, into `waiting` with a new `seq`: their place in submit order is the moment
//! they joined it); canceling one before it fires. The `delayed` table (kept by triggers, see
//! its migration) holds the due times of the scheduled jobs.

use super::{Result, Store, Unfinished};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The jobs due now, oldest due first, and when the next one after them is due.
#[derive(Debug, Default)]
pub struct Due {
    /// Without their arguments: those stay in the table until the job is sent.
    pub jobs: Vec<(Unfinished, DateTime<Utc>)>,
    pub next: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    id: Uuid,
    task: String,
    resources: Vec<String>,
    max_attempts: i32,
    timeout_ms: Option<i64>,
    run_at: DateTime<Utc>,
}

impl Store {
    /// Up to `limit` scheduled jobs due now, in due order (then submit order), and the due
    /// time of the first one after them.
    pub async fn due(&self, limit: i64) -> Result<Due> {
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT jobs.id, jobs.task, jobs.resources, jobs.max_attempts, jobs.timeout_ms,
                    d.run_at
             FROM (SELECT run_at, seq, id FROM delayed WHERE run_at <= now()
                   ORDER BY run_at, seq LIMIT $1) AS d
             JOIN jobs ON jobs.id = d.id
             WHERE jobs.state = 'scheduled'
             ORDER BY d.run_at, d.seq",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let next: Option<(DateTime<Utc>,)> =
            sqlx::query_as("SELECT run_at FROM delayed ORDER BY run_at, seq OFFSET $1 LIMIT 1")
                .bind(rows.len() as i64)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Due {
            jobs: rows
                .into_iter()
                .map(|r| {
                    let job = Unfinished {
                        id: r.id,
                        task: r.task,
                        args: None,
                        resources: r.resources,
                        queue: None,
                        state: super::JobState::Scheduled,
                        attempts: 0,
                        max_attempts: r.max_attempts,
                        timeout_ms: r.timeout_ms,
                    };
                    (job, r.run_at)
                })
                .collect(),
            next: next.map(|(at,)| at),
        })
    }

    /// Moves these scheduled jobs to `waiting`, each with a new `seq` in the given order (the
    /// order they were routed in); returns the ids moved. A job canceled meanwhile stays as
    /// it is.
    pub async fn fire(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "WITH given AS (SELECT id, ord FROM UNNEST($1::uuid[]) WITH ORDINALITY AS u(id, ord)),
                  locked AS (SELECT given.id, given.ord FROM given JOIN jobs ON jobs.id = given.id
                             WHERE jobs.state = 'scheduled'
                             ORDER BY jobs.id FOR UPDATE OF jobs),
                  numbered AS (SELECT id, nextval(pg_get_serial_sequence('jobs', 'seq')) AS seq
                               FROM (SELECT id FROM locked ORDER BY ord) AS o)
             UPDATE jobs SET state = 'waiting', seq = numbered.seq, updated_at = now()
             FROM numbered
             WHERE jobs.id = numbered.id AND (SELECT lanes_fence($2::text, $3::bigint))
             RETURNING jobs.id",
        )
        .bind(ids)
        .bind(self.fence.as_ref().map(|l| l.prefix.as_str()))
        .bind(self.fence.as_ref().map(|l| l.epoch))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Cancels a job that has not fired yet; false if it is not (or no longer) scheduled.
    pub async fn cancel_scheduled(&self, id: Uuid) -> Result<bool> {
        Ok(self.skip_scheduled(&[id], "canceled").await? == 1)
    }

    /// Ends jobs that have not fired yet as `canceled`, with `reason`; returns how many.
    pub async fn skip_scheduled(&self, ids: &[Uuid], reason: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'canceled', error = $2, finished_at = now(),
                    updated_at = now()
             WHERE id = ANY($1) AND state = 'scheduled'
               AND (SELECT lanes_fence($3::text, $4::bigint))",
        )
        .bind(ids)
        .bind(reason)
        .bind(self.fence.as_ref().map(|l| l.prefix.as_str()))
        .bind(self.fence.as_ref().map(|l| l.epoch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// How many jobs are scheduled.
    pub async fn scheduled_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM delayed")
            .fetch_one(&self.pool)
            .await?)
    }
}
