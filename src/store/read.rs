//! The reads behind `GET /jobs/{id}`, `GET /jobs` and the dashboard's lists. A list is bounded twice: by rows
//! (`limit`, at most `MAX_LIST`) and by bytes (rows are streamed and written out as JSON one at
//! a time, and the list stops once that text passes `MAX_LIST_BYTES`), so no request can make
//! the server hold a large part of the table in memory, nor a page twice (as rows and as text).

use super::{retry::retrying, Job, JobFilter, JobState, Result, Store, JOB_COLUMNS};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use uuid::Uuid;

/// Most rows one `GET /jobs` returns.
pub const MAX_LIST: i64 = 1_000;
/// A list stops after the row that takes its JSON text past this many bytes.
pub const MAX_LIST_BYTES: usize = 16 << 20;

/// Where a list looks. Jobs in a rare state are found through `rare_states`, scheduled ones
/// through `delayed` and unfinished ones through `open_jobs` (each kept by triggers; see their
/// migrations), rather than a walk of the whole table newest first, which reads every row
/// when, say, ten failures hide among ten million completed jobs.
fn source(state: Option<&str>) -> &'static str {
    match state {
        Some("failed" | "canceled") => "rare_states JOIN jobs USING (state, seq)",
        Some("scheduled") => "(SELECT seq FROM delayed) AS d JOIN jobs USING (seq)",
        Some("submitted" | "waiting" | "queued" | "running") => "open_jobs JOIN jobs USING (seq)",
        _ => "jobs",
    }
}

/// A page of `GET /jobs` as its JSON text (an array of jobs), and whether the byte budget cut
/// it short.
#[derive(Debug, Default)]
pub struct Listed {
    pub json: Vec<u8>,
    pub truncated: bool,
}

impl Store {
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

    /// The jobs of these ids that exist.
    pub async fn jobs_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1)");
        retrying(|| async { Ok(sqlx::query_as(&sql).bind(ids).fetch_all(&self.pool).await?) }).await
    }

    /// At most `limit` ids in `low..=high`: the jobs a short id may mean.
    pub async fn job_ids_between(&self, low: Uuid, high: Uuid, limit: i64) -> Result<Vec<Uuid>> {
        retrying(|| async {
            Ok(sqlx::query_scalar(
                "SELECT id FROM jobs WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3",
            )
            .bind(low)
            .bind(high)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Newest first.
    pub async fn list(&self, f: &JobFilter) -> Result<Listed> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {}
             WHERE ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR task = $2)
               AND ($3::text IS NULL OR resources @> ARRAY[$3::text])
             ORDER BY seq DESC LIMIT $4",
            source(f.state.as_deref())
        );
        retrying(|| async {
            // Planned with its values each time (an unnamed statement): a plan made once for
            // any values walks the table newest first for a rare task or resource.
            let mut rows = sqlx::query_as::<_, Job>(&sql)
                .persistent(false)
                .bind(&f.state)
                .bind(&f.task)
                .bind(&f.resource)
                .bind(f.limit.unwrap_or(100).clamp(1, MAX_LIST))
                .fetch(&self.pool);
            let mut out = Listed {
                json: b"[".to_vec(),
                truncated: false,
            };
            while let Some(job) = rows.try_next().await? {
                if out.json.len() > 1 {
                    out.json.push(b',');
                }
                serde_json::to_writer(&mut out.json, &job).expect("jobs serialize");
                if out.json.len() > MAX_LIST_BYTES {
                    out.truncated = true;
                    break;
                }
            }
            out.json.push(b']');
            Ok(out)
        })
        .await
    }
}

/// One line of the dashboard's job lists: no arguments or results, so a page stays small.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobLine {
    pub seq: i64,
    pub id: Uuid,
    pub task: String,
    pub state: JobState,
    pub resources: Vec<String>,
    pub attempts: i32,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The first 200 characters of the error.
    pub error: Option<String>,
}

/// A page of job lines: filters, and where it starts (below `before`, a `seq`).
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub filter: JobFilter,
    pub before: Option<i64>,
}

impl Store {
    /// Newest first, from `before` down: a walk of the `seq` index (with the GIN index on
    /// resources when one is named, or of `rare_states` for a rare state).
    pub async fn page(&self, q: &PageQuery) -> Result<Vec<JobLine>> {
        let f = &q.filter;
        let sql = format!(
            "SELECT seq, id, task, state, resources, attempts, worker, created_at,
                    started_at, finished_at, left(error, 200) AS error
             FROM {}
             WHERE ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR task = $2)
               AND ($3::text IS NULL OR resources @> ARRAY[$3::text])
               AND ($4::bigint IS NULL OR seq < $4)
             ORDER BY seq DESC LIMIT $5",
            source(f.state.as_deref())
        );
        retrying(|| async {
            Ok(sqlx::query_as(&sql)
                .persistent(false)
                .bind(&f.state)
                .bind(&f.task)
                .bind(&f.resource)
                .bind(q.before)
                .bind(f.limit.unwrap_or(50).clamp(1, 500))
                .fetch_all(&self.pool)
                .await?)
        })
        .await
    }

    /// The states and end times of the newest `n` jobs (an index walk, however large the
    /// table), for the overview's recent counts and throughput.
    pub async fn recent(&self, n: i64) -> Result<Vec<(JobState, Option<DateTime<Utc>>)>> {
        retrying(|| async {
            Ok(
                sqlx::query_as("SELECT state, finished_at FROM jobs ORDER BY seq DESC LIMIT $1")
                    .bind(n)
                    .fetch_all(&self.pool)
                    .await?,
            )
        })
        .await
    }

    /// The planner's estimate of the table's rows (no count, which would read it all).
    pub async fn estimated_rows(&self) -> Result<i64> {
        retrying(|| async {
            Ok(sqlx::query_scalar(
                "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = 'jobs'::regclass",
            )
            .fetch_one(&self.pool)
            .await?)
        })
        .await
    }
}
