//! The reads behind `GET /jobs/{id}` and `GET /jobs`. A list is bounded twice: by rows
//! (`limit`, at most `MAX_LIST`) and by bytes (rows are streamed, and the list stops once
//! their arguments, results and errors pass `MAX_LIST_BYTES`), so no request can make the
//! server hold a large part of the table in memory.

use super::{retry::retrying, Job, JobFilter, Result, Store, JOB_COLUMNS};
use futures::TryStreamExt;
use uuid::Uuid;

/// Most rows one `GET /jobs` returns.
pub const MAX_LIST: i64 = 1_000;
/// A list stops after the row that takes its payloads past this many bytes.
pub const MAX_LIST_BYTES: usize = 16 << 20;

/// A page of `GET /jobs`, and whether the byte budget cut it short.
#[derive(Debug, Default)]
pub struct Listed {
    pub jobs: Vec<Job>,
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

    /// Newest first.
    pub async fn list(&self, f: &JobFilter) -> Result<Listed> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR task = $2)
               AND ($3::text IS NULL OR resources @> ARRAY[$3::text])
             ORDER BY seq DESC LIMIT $4"
        );
        retrying(|| async {
            let mut rows = sqlx::query_as::<_, Job>(&sql)
                .bind(&f.state)
                .bind(&f.task)
                .bind(&f.resource)
                .bind(f.limit.unwrap_or(100).clamp(1, MAX_LIST))
                .fetch(&self.pool);
            let mut out = Listed::default();
            let mut bytes = 0;
            while let Some(job) = rows.try_next().await? {
                bytes += payload_bytes(&job);
                out.jobs.push(job);
                if bytes > MAX_LIST_BYTES {
                    out.truncated = true;
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Roughly what a row's payloads take (their JSON text).
fn payload_bytes(job: &Job) -> usize {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map_or(0, |v| v.to_string().len());
    json(&job.args)
        + json(&job.result)
        + json(&job.progress)
        + job.error.as_ref().map_or(0, String::len)
}
