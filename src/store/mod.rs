//! The job table in PostgreSQL: creating and migrating the database, batched writes (UNNEST,
//! one statement per batch), and the reads the API and the server's recovery need.
//!
//! State only moves forward: every update is guarded in SQL, so duplicate and late events
//! are harmless.
//!
//! Here are the statements; `connect` opens the pool and migrates, `retry` decides which
//! failures a statement is run again after, `rows` and `state` are the data they exchange.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

mod connect;
mod dead;
mod delayed;
mod isolate;
mod lease;
mod limits;
mod marks;
mod read;
mod retry;
mod rows;
mod schedules;
pub mod sql;
mod state;
mod steer;
mod task_names;

pub use connect::{connect_options, PING_IDLE};
pub use dead::DeadRecord;
pub use delayed::Due;
pub use isolate::{Applied, Inserted};
pub use lease::{Lease, LeaseConn};
pub use marks::digest;
pub use read::{JobLine, Listed, PageQuery, MAX_LIST, MAX_LIST_BYTES};
pub use rows::{End, Finished, Job, JobFilter, JobUpdate, NewJob, Steer, Unfinished};
pub use schedules::Stored as StoredSchedule;
pub use state::JobState;
pub use steer::Brief;

use retry::{retrying, retrying_conflicts};
use rows::JOB_COLUMNS;
use sql::{APPLY, INSERT, MARK_QUEUED};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach PostgreSQL at {url} (is it running?)")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid DATABASE_URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The connection pool and every query lanes runs.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// The lease the inserts are fenced by (a control plane's store), if any.
    fence: Option<Lease>,
}

impl Store {
    /// A dedicated connection for the leader lease (with the store's connect options).
    pub async fn lease_conn(&self) -> Result<LeaseConn> {
        use sqlx::ConnectOptions;
        let opts = self.pool.connect_options();
        Ok(LeaseConn(opts.connect().await?))
    }

    /// This store, with inserts that fail once `lease` no longer holds the lease.
    pub fn fenced_by(&self, lease: Lease) -> Store {
        Store {
            pool: self.pool.clone(),
            fence: Some(lease),
        }
    }

    /// Whether the database answers (a broken pooled connection is not an answer).
    pub async fn ping(&self) -> Result<()> {
        retrying(|| async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Records jobs; returns the ids that were new (an id already present is a duplicate).
    ///
    /// The caller holds every unfinished job in memory and passes none of them, so after a
    /// broken connection the retry counts an unfinished row it finds as its own: the first
    /// attempt may have committed before the connection broke.
    pub async fn insert(&self, jobs: &[NewJob]) -> Result<Vec<Uuid>> {
        self.insert_marked(jobs, &[]).await
    }

    /// Records jobs, and with them the `(job, digest)` marks of those that came from submit
    /// messages without a message id (see `marks`), in one transaction.
    pub async fn insert_marked(
        &self,
        jobs: &[NewJob],
        marks: &[(Uuid, Uuid)],
    ) -> Result<Vec<Uuid>> {
        let mut retried = false;
        retrying(|| {
            let again = std::mem::replace(&mut retried, true);
            self.insert_once(jobs, marks, again)
        })
        .await
    }

    async fn insert_once(
        &self,
        jobs: &[NewJob],
        marks: &[(Uuid, Uuid)],
        retried: bool,
    ) -> Result<Vec<Uuid>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(jobs.len());
        let mut tasks = Vec::with_capacity(jobs.len());
        let mut args = Vec::with_capacity(jobs.len());
        let mut resources = Vec::with_capacity(jobs.len());
        let mut max_attempts = Vec::with_capacity(jobs.len());
        let mut states = Vec::with_capacity(jobs.len());
        let mut queues = Vec::with_capacity(jobs.len());
        let mut errors = Vec::with_capacity(jobs.len());
        let mut reply_to = Vec::with_capacity(jobs.len());
        let mut correlation = Vec::with_capacity(jobs.len());
        let mut timeouts = Vec::with_capacity(jobs.len());
        let mut submitted_by = Vec::with_capacity(jobs.len());
        let mut run_at = Vec::with_capacity(jobs.len());
        for j in jobs {
            ids.push(j.id);
            tasks.push(j.task.as_str());
            args.push(j.args.clone());
            // Postgres arrays of arrays must be rectangular, so resources travel as JSON.
            resources.push(Value::from(j.resources.clone()));
            max_attempts.push(j.max_attempts);
            states.push(j.state.as_str());
            queues.push(j.queue.as_deref());
            errors.push(j.error.as_deref());
            reply_to.push(j.reply_to.as_deref());
            correlation.push(j.correlation_id.as_deref());
            timeouts.push(j.timeout_ms);
            submitted_by.push(j.submitted_by.as_deref());
            run_at.push(j.run_at);
        }
        let ours = if retried {
            // The statement's snapshot predates its own inserts: these rows were there before.
            format!(
                "WITH ins AS ({INSERT})
                 SELECT id FROM ins
                 UNION ALL
                 SELECT jobs.id FROM jobs JOIN UNNEST($1::uuid[]) AS x(id) ON jobs.id = x.id
                 WHERE jobs.state IN ('scheduled', 'submitted', 'waiting')"
            )
        } else {
            INSERT.to_owned()
        };
        let query = sqlx::query_as::<_, (Uuid,)>(&ours)
            .bind(&ids)
            .bind(&tasks)
            .bind(&args)
            .bind(&resources)
            .bind(&max_attempts)
            .bind(&states)
            .bind(&queues)
            .bind(&errors)
            .bind(&reply_to)
            .bind(&correlation)
            .bind(self.fence.as_ref().map(|l| l.prefix.as_str()))
            .bind(self.fence.as_ref().map(|l| l.epoch))
            .bind(&timeouts)
            .bind(&submitted_by)
            .bind(&run_at);
        // The hot path (every message with an id) is one statement; marks need a transaction.
        let inserted = if marks.is_empty() {
            query.fetch_all(&self.pool).await?
        } else {
            let mut tx = self.pool.begin().await?;
            let inserted = query.fetch_all(&mut *tx).await?;
            let new: Vec<Uuid> = inserted.iter().map(|(id,)| *id).collect();
            marks::write(&mut tx, marks, &new).await?;
            tx.commit().await?;
            inserted
        };
        Ok(inserted.into_iter().map(|(id,)| id).collect())
    }

    /// The jobs' lane messages are in the broker: they are `queued` (unless already further).
    pub async fn mark_queued(&self, jobs: &[(Uuid, String)]) -> Result<()> {
        retrying(|| self.mark_queued_once(jobs)).await
    }

    async fn mark_queued_once(&self, jobs: &[(Uuid, String)]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let (ids, queues) = columns(jobs);
        sqlx::query(MARK_QUEUED)
            .bind(&ids)
            .bind(&queues)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the lanes of woken jobs before their messages go out. A job recorded `waiting`
    /// has no message anywhere, so recovery routes it afresh; one recorded `submitted` with a
    /// lane may have a message there, so recovery keeps it in that lane.
    pub async fn mark_routed(&self, jobs: &[(Uuid, String)]) -> Result<HashMap<Uuid, Value>> {
        retrying(|| self.mark_routed_once(jobs)).await
    }

    /// Also returns the jobs' arguments: a waiting job's stay in the table, not in memory,
    /// until it is sent (see `Router`). Every given job's, updated now or before (a retry).
    async fn mark_routed_once(&self, jobs: &[(Uuid, String)]) -> Result<HashMap<Uuid, Value>> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let (ids, queues) = columns(jobs);
        let rows: Vec<(Uuid, Option<Value>)> = sqlx::query_as(
            "WITH routed AS (
                UPDATE jobs SET state = 'submitted', queue = u.queue, updated_at = now()
                FROM UNNEST($1::uuid[], $2::text[]) AS u(id, queue)
                WHERE jobs.id = u.id AND jobs.state = 'waiting'
                  AND (SELECT lanes_fence($3::text, $4::bigint))
                RETURNING jobs.id)
             SELECT id, args FROM jobs WHERE id = ANY($1)",
        )
        .bind(&ids)
        .bind(&queues)
        .bind(self.fence.as_ref().map(|l| l.prefix.as_str()))
        .bind(self.fence.as_ref().map(|l| l.epoch))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, args)| (id, args.unwrap_or_default()))
            .collect())
    }

    /// Applies a batch of worker events in one statement; returns the jobs that ended.
    pub async fn apply(&self, updates: &[JobUpdate]) -> Result<Vec<Finished>> {
        // Not retried on a broken connection: the batch may have committed before it broke,
        // and attempts would be counted twice. The control plane restarts instead.
        retrying_conflicts(|| self.apply_once(updates)).await
    }

    async fn apply_once(&self, updates: &[JobUpdate]) -> Result<Vec<Finished>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = updates.iter().map(|u| u.id).collect();
        let attempts: Vec<i32> = updates.iter().map(|u| u.attempt).collect();
        let workers: Vec<Option<&str>> = updates.iter().map(|u| u.worker.as_deref()).collect();
        let started: Vec<Option<DateTime<Utc>>> = updates.iter().map(|u| u.started_at).collect();
        let progress: Vec<Option<Value>> = updates.iter().map(|u| u.progress.clone()).collect();
        let ends: Vec<Option<&End>> = updates.iter().map(|u| u.end.as_ref()).collect();
        let states: Vec<Option<&str>> = ends.iter().map(|&e| Some(e?.state.as_str())).collect();
        let results: Vec<Option<Value>> = ends.iter().map(|&e| e?.result.clone()).collect();
        let errors: Vec<Option<&str>> = ends.iter().map(|&e| e?.error.as_deref()).collect();
        let finished_at: Vec<Option<DateTime<Utc>>> = ends.iter().map(|&e| Some(e?.at)).collect();
        // State only moves forward: a job already ended is left alone, a start never
        // overrides an end of the same batch, and duplicate events change nothing.
        let finished: Vec<Finished> = sqlx::query_as(APPLY)
            .bind(&ids)
            .bind(&attempts)
            .bind(&workers)
            .bind(&started)
            .bind(&progress)
            .bind(&states)
            .bind(&results)
            .bind(&errors)
            .bind(&finished_at)
            .fetch_all(&self.pool)
            .await?;
        Ok(finished)
    }

    /// Records who canceled or retried a job through the API.
    pub async fn record_steer(&self, job: Uuid, action: &str, by: Option<&str>) -> Result<()> {
        retrying(|| async {
            sqlx::query("INSERT INTO steers (job, action, by_name) VALUES ($1, $2, $3)")
                .bind(job)
                .bind(action)
                .bind(by)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Who canceled or retried a job through the API, oldest first.
    pub async fn steers(&self, job: Uuid) -> Result<Vec<Steer>> {
        retrying(|| async {
            Ok(sqlx::query_as(
                "SELECT action, by_name AS by, at FROM steers WHERE job = $1 ORDER BY seq",
            )
            .bind(job)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Each job's state, attempts started, the worker of its latest attempt and its lane (those
    /// that exist).
    pub async fn records(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<(Uuid, JobState, i32, Option<String>, Option<String>)>> {
        retrying(|| async {
            Ok(sqlx::query_as(
                "SELECT id, state, attempts, worker, queue FROM jobs WHERE id = ANY($1)",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// These jobs, if still queued or running, in submit order (to dispatch them again).
    pub async fn unfinished_of(&self, ids: &[Uuid]) -> Result<Vec<Unfinished>> {
        retrying(|| async {
            Ok(sqlx::query_as(
                "SELECT id, task, args, resources, queue, state, attempts, max_attempts, timeout_ms FROM jobs
                 WHERE id = ANY($1) AND state IN ('queued', 'running') ORDER BY seq",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Unfinished jobs in submit order after `seq` (at most `limit`), for the server's
    /// recovery, which reads them a page at a time; with arguments only where recovery may
    /// send a job at once (`submitted`): the others' stay in the table, so a restart with a
    /// long waiting line holds neither every row nor every argument in memory at once.
    pub async fn unfinished_after(&self, seq: i64, limit: i64) -> Result<Vec<(i64, Unfinished)>> {
        let rows: Vec<Paged> = retrying(|| async {
            Ok(sqlx::query_as(
                "SELECT seq, id, task, CASE WHEN state = 'submitted' THEN args END AS args,
                        resources, queue, state, attempts, max_attempts, timeout_ms
                 FROM open_jobs JOIN jobs USING (seq)
                 WHERE state IN ('submitted', 'waiting', 'queued', 'running') AND seq > $1
                 ORDER BY seq LIMIT $2",
            )
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        })
        .await?;
        Ok(rows.into_iter().map(|p| (p.seq, p.job)).collect())
    }
}

/// An unfinished job and its place in submit order.
#[derive(sqlx::FromRow)]
struct Paged {
    seq: i64,
    #[sqlx(flatten)]
    job: Unfinished,
}

/// A batch of (job, queue) as the two arrays a statement binds.
fn columns(jobs: &[(Uuid, String)]) -> (Vec<Uuid>, Vec<&str>) {
    jobs.iter().map(|(id, q)| (*id, q.as_str())).unzip()
}
