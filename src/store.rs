//! The job table in PostgreSQL: creating and migrating the database, batched writes (UNNEST,
//! one statement per batch), and the reads the API and the server's recovery need.
//!
//! State only moves forward: every update is guarded in SQL, so duplicate and late events
//! are harmless.

use crate::config::redact;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgPool,
};
use std::str::FromStr;
use uuid::Uuid;

pub mod sql;

use sql::{APPLY, INSERT, MARK_QUEUED, PLANNER};

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

/// The lifecycle of a job. The order of the variants is the order states move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Submitted,
    Waiting,
    Queued,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Submitted,
        JobState::Waiting,
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn is_final(self) -> bool {
        self >= JobState::Completed
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state `{s}`"))
    }
}

/// A job as stored, and as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub task: String,
    pub args: Option<Value>,
    pub resources: Vec<String>,
    pub queue: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub worker: Option<String>,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const JOB_COLUMNS: &str =
    "id, task, args, resources, queue, state, attempts, max_attempts, worker, \
     progress, result, error, created_at, queued_at, started_at, finished_at, updated_at";

/// A job to record.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub task: String,
    pub args: Value,
    pub resources: Vec<String>,
    pub max_attempts: i32,
    pub state: JobState,
    pub queue: Option<String>,
    pub error: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
}

/// A job that reached a final state in this batch.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Finished {
    pub id: Uuid,
    pub state: String,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
}

/// An unfinished job, as the server's recovery needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unfinished {
    pub id: Uuid,
    pub task: String,
    pub args: Option<Value>,
    pub resources: Vec<String>,
    pub queue: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Filters of `GET /jobs`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobFilter {
    pub state: Option<String>,
    pub task: Option<String>,
    pub resource: Option<String>,
    pub limit: Option<i64>,
}

/// What one batch of worker events does to one job, already folded (see `callback`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub id: Uuid,
    /// Attempts that started in this batch.
    pub runs: i32,
    /// The worker of the last attempt (of the final event, when there is one).
    pub worker: Option<String>,
    /// When the batch's first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// The latest progress, unless the job ended.
    pub progress: Option<Value>,
    pub end: Option<End>,
}

/// A job's final event.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    pub state: JobState,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl JobUpdate {
    pub fn new(id: Uuid) -> Self {
        JobUpdate {
            id,
            runs: 0,
            worker: None,
            started_at: None,
            progress: None,
            end: None,
        }
    }
}

/// The connection pool and every query lanes runs.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects, creating the database if it does not exist, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let opts = connect_options(url)?;
        create_database_if_missing(url, &opts).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // A ping before every statement would cost a round trip each; a connection idle
            // for a while (as across a database restart) is pinged, and a statement that
            // still meets a broken one is retried where that is safe (`retrying`).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        sqlx::migrate!().run(&pool).await?;
        Ok(Store { pool })
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
        let mut retried = false;
        retrying(|| {
            let again = std::mem::replace(&mut retried, true);
            self.insert_once(jobs, again)
        })
        .await
    }

    async fn insert_once(&self, jobs: &[NewJob], retried: bool) -> Result<Vec<Uuid>> {
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
        }
        let ours = if retried {
            // The statement's snapshot predates its own inserts: these rows were there before.
            format!(
                "WITH ins AS ({INSERT})
                 SELECT id FROM ins
                 UNION ALL
                 SELECT jobs.id FROM jobs JOIN UNNEST($1::uuid[]) AS x(id) ON jobs.id = x.id
                 WHERE jobs.state IN ('submitted', 'waiting')"
            )
        } else {
            INSERT.to_owned()
        };
        let inserted: Vec<(Uuid,)> = sqlx::query_as(&ours)
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
            .fetch_all(&self.pool)
            .await?;
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
        let (ids, queues): (Vec<Uuid>, Vec<&str>) =
            jobs.iter().map(|(id, q)| (*id, q.as_str())).unzip();
        sqlx::query(MARK_QUEUED)
            .bind(&ids)
            .bind(&queues)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Jobs that must wait for their resources.
    pub async fn mark_waiting(&self, ids: &[Uuid]) -> Result<()> {
        retrying(|| self.mark_waiting_once(ids)).await
    }

    async fn mark_waiting_once(&self, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE jobs SET state = 'waiting', updated_at = now()
             WHERE id = ANY($1) AND state = 'submitted'",
        )
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
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
        let runs: Vec<i32> = updates.iter().map(|u| u.runs).collect();
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
            .bind(&runs)
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

    /// The state and started attempts of these jobs (those that exist).
    pub async fn records(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String, i32)>> {
        retrying(|| async {
            Ok(
                sqlx::query_as("SELECT id, state, attempts FROM jobs WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(&self.pool)
                    .await?,
            )
        })
        .await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        retrying(|| async {
            Ok(sqlx::query_as(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
        })
        .await
    }

    /// Newest first.
    pub async fn list(&self, f: &JobFilter) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR task = $2)
               AND ($3::text IS NULL OR resources @> ARRAY[$3::text])
             ORDER BY seq DESC LIMIT $4"
        );
        retrying(|| async {
            Ok(sqlx::query_as(&sql)
                .bind(&f.state)
                .bind(&f.task)
                .bind(&f.resource)
                .bind(f.limit.unwrap_or(100).clamp(1, 10_000))
                .fetch_all(&self.pool)
                .await?)
        })
        .await
    }

    /// These jobs, if still queued or running, in submit order (to dispatch them again).
    pub async fn unfinished_of(&self, ids: &[Uuid]) -> Result<Vec<Unfinished>> {
        retrying(|| async {
            Ok(sqlx::query_as(
                "SELECT id, task, args, resources, queue, state, attempts, max_attempts FROM jobs
                 WHERE id = ANY($1) AND state IN ('queued', 'running') ORDER BY seq",
            )
            .bind(ids)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Every unfinished job in submit order, for the server's recovery.
    pub async fn unfinished(&self) -> Result<Vec<Unfinished>> {
        retrying(|| async {
            Ok(sqlx::query_as(
                "SELECT id, task, args, resources, queue, state, attempts, max_attempts FROM jobs
                 WHERE state IN ('submitted', 'waiting', 'queued', 'running') ORDER BY seq",
            )
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }
}

/// The options of the store's connections: the URL's, with the planner settings the batch
/// statements rely on (`sql::PLANNER`).
pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(StoreError::BadUrl)?
        .options(PLANNER))
}

/// Connections idle longer than this are pinged before use.
pub const PING_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a statement again when Postgres aborted it as a deadlock victim or a serialization
/// failure, or when its connection turned out to be broken or shut down (as after a database
/// restart). Only for statements that are safe to run twice: reads, idempotent updates, and
/// `insert`, which knows it may be a retry.
async fn retrying<T, F, Fut>(f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry_if(f, |e| conflict(e) || broken(e)).await
}

/// Runs a statement again only when Postgres aborted it (deadlock, serialization failure):
/// then nothing of it was committed.
async fn retrying_conflicts<T, F, Fut>(f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry_if(f, conflict).await
}

async fn retry_if<T, F, Fut>(mut f: F, transient: impl Fn(&sqlx::Error) -> bool) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0u64;
    loop {
        match f().await {
            Err(StoreError::Sql(e)) if transient(&e) && attempt < 10 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transient database error; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(2 * attempt)).await;
            }
            other => return other,
        }
    }
}

fn conflict(e: &sqlx::Error) -> bool {
    db_code(e).is_some_and(|c| c == "40P01" || c == "40001")
}

/// The connection broke, or the server is shutting down or starting up.
fn broken(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_))
        || db_code(e).is_some_and(|c| matches!(c.as_str(), "57P01" | "57P02" | "57P03"))
}

fn db_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

async fn create_database_if_missing(url: &str, opts: &PgConnectOptions) -> Result<()> {
    let Some(name) = opts.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = opts.clone().database("postgres");
    let mut conn = admin
        .connect()
        .await
        .map_err(|source| StoreError::Connect {
            url: redact(url),
            source,
        })?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it at the same time.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_order() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!(JobState::Queued < JobState::Running);
        assert!(JobState::Failed.is_final() && !JobState::Running.is_final());
        assert!("nope".parse::<JobState>().is_err());
    }
}
