//! What goes into the job table and what comes out of it: the rows the store reads, the jobs
//! and folded events it writes, and the API's filters. Kept apart from the statements so the
//! callers' data is readable without the SQL.

use super::JobState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A job as stored, and as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub task: String,
    #[schema(value_type = Option<Object>)]
    pub args: Option<Value>,
    pub resources: Vec<String>,
    pub queue: Option<String>,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_ms: Option<i64>,
    pub worker: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Who submitted it: the API token's name, `amqp` for a publisher on the broker (null when
    /// the API has no tokens, and for jobs older than this column).
    pub submitted_by: Option<String>,
    /// When it was due, for a job submitted with `run_at` or `delay_ms`: it joined its
    /// resources' order then.
    pub run_at: Option<DateTime<Utc>>,
}

/// The columns of a `Job`, in its order.
pub(super) const JOB_COLUMNS: &str =
    "id, task, args, resources, queue, state, attempts, max_attempts, timeout_ms, worker, \
     progress, result, error, created_at, queued_at, started_at, finished_at, updated_at, \
     submitted_by, run_at";

/// Who canceled or retried a job through the API, and when.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Steer {
    /// `cancel` or `retry`.
    pub action: String,
    /// The API token's name (null when the API has no tokens).
    pub by: Option<String>,
    pub at: DateTime<Utc>,
}

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
    pub timeout_ms: Option<i64>,
    /// The API token's name, `amqp` for a publisher on the broker.
    pub submitted_by: Option<String>,
    /// Its due time, if it was submitted with one.
    pub run_at: Option<DateTime<Utc>>,
}

/// A job that reached a final state in this batch.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Finished {
    pub id: Uuid,
    pub state: JobState,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    /// For the duration metrics: its task, and when it was submitted, started and ended.
    pub task: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An unfinished job, as the server's recovery needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unfinished {
    pub id: Uuid,
    pub task: String,
    pub args: Option<Value>,
    pub resources: Vec<String>,
    pub queue: Option<String>,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_ms: Option<i64>,
}

/// Filters of `GET /jobs`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs of this task.
    pub task: Option<String>,
    /// Only jobs that name this resource.
    pub resource: Option<String>,
    /// At most this many (1 to 1,000; 100 when not given).
    pub limit: Option<i64>,
}

/// What one batch of worker events does to one job, already folded (see `callback`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub id: Uuid,
    /// The highest attempt number the batch shows started (0: none). Attempts are numbered by
    /// the workers from the server's record, so applying a batch twice (events redelivered
    /// after their commit) counts nothing twice.
    pub attempt: i32,
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
            attempt: 0,
            worker: None,
            started_at: None,
            progress: None,
            end: None,
        }
    }
}
