//! The messages lanes exchanges over AMQP, and the validation of what clients submit.
//!
//! Everything that crosses the broker is JSON. The submit message is part of the contract
//! (DESIGN.md); lane messages, events and control messages are internal between the server and
//! workers of the same version. Validation lives here, apart from I/O, so that the Dispatcher and
//! the HTTP API reject bad input with the same clear reasons.

use crate::{
    storable::{storable, storable_json},
    store::JobState,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Default number of attempts when a submit message does not say.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;
/// Upper bound for `max_attempts`, so that a typo cannot make a task retry forever.
pub const MAX_MAX_ATTEMPTS: i32 = 100;
/// Marks a shared resource in a task's resource list.
pub const SHARED_PREFIX: &str = "shared:";
/// Marks a claim on one of a resource's slots (its capacity, set per resource).
pub const SLOT_PREFIX: &str = "slot:";
/// Namespace for job ids derived from a `message_id` that is not itself a UUID.
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c61_6e65_735f_6d73_6769_645f_6e73_0001);

/// A validated task, ready to be routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: Uuid,
    pub task: String,
    pub args: Value,
    pub resources: Vec<String>,
    pub max_attempts: i32,
    /// Bounds each attempt: a handler still running after it is cancelled and the attempt
    /// fails as timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When it is due, if the submit asked for a time (`run_at`, `delay_ms`): until then it is
    /// recorded but in no order; then it joins its resources' order as if submitted then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
}

/// Why a submit message was refused. The text is what clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("payload too large: {size} bytes (limit {limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("submit message must be a JSON object, got {0}")]
    NotObject(&'static str),
    #[error("field `task` is required and must be a non-empty string")]
    BadTask,
    #[error("unknown task `{0}`")]
    UnknownTask(String),
    #[error("field `resources` must be a list of non-empty strings")]
    BadResources,
    #[error("field `max_attempts` must be an integer from 1 to {MAX_MAX_ATTEMPTS}")]
    BadMaxAttempts,
    #[error("field `timeout_ms` must be an integer from 1 to {MAX_TIMEOUT_MS}")]
    BadTimeout,
    #[error("field `id` must be a UUID")]
    BadId,
    #[error("field `run_at` must be a time in RFC 3339 (`2026-12-24T18:00:00Z`, `…+01:00`) at most {MAX_DELAY_DAYS} days ahead")]
    BadRunAt,
    #[error("field `delay_ms` must be an integer from 0 to {MAX_DELAY_MS}")]
    BadDelay,
    #[error("give `run_at` or `delay_ms`, not both")]
    TwoDueTimes,
    #[error("{0} contains a NUL character (\\u0000), which cannot be stored")]
    Nul(&'static str),
    #[error("too many resources: {count} (limit {limit})")]
    TooManyResources { count: usize, limit: usize },
    #[error("resource name too long: {len} bytes (limit {limit})")]
    ResourceTooLong { len: usize, limit: usize },
    #[error(
        "property `reply_to` names a queue of this deployment (`{0}.…`); name a queue of your own"
    )]
    ReplyToOwnQueue(String),
    #[error("the database refused to store it: {0}")]
    Refused(String),
    #[error("unknown field `{field}`{hint} (a submit has the fields {SUBMIT_FIELDS_TEXT})")]
    UnknownField { field: String, hint: String },
}

/// The fields of a submit document (HTTP also takes `id`).
pub const SUBMIT_FIELDS: [&str; 7] = [
    "task",
    "args",
    "resources",
    "max_attempts",
    "timeout_ms",
    "run_at",
    "delay_ms",
];
const SUBMIT_FIELDS_TEXT: &str = "`task`, `args`, `resources`, `max_attempts`, `timeout_ms`, \
     `run_at`, `delay_ms`; over HTTP also `id`";

impl Invalid {
    /// An unknown field, with the known one it is closest to when it looks like a typo of it.
    pub fn unknown_field(field: &str) -> Invalid {
        let closest = SUBMIT_FIELDS
            .iter()
            .map(|known| (strsim::jaro_winkler(field, known), *known))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|(score, _)| *score >= 0.8);
        Invalid::UnknownField {
            field: field.chars().take(64).collect(),
            hint: closest
                .map(|(_, known)| format!("; did you mean `{known}`?"))
                .unwrap_or_default(),
        }
    }
}

/// How far ahead a job may be due.
pub const MAX_DELAY_DAYS: i64 = 366;
/// The longest `delay_ms`.
pub const MAX_DELAY_MS: u64 = MAX_DELAY_DAYS as u64 * 24 * 3600 * 1000;

/// The longest `timeout_ms` (a week).
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most resources one task may name.
pub const MAX_RESOURCES: usize = 64;
/// Longest resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 256;

/// The job id a submit message asks for: its `message_id` (a UUID, or any other string mapped to
/// a stable UUID so that re-publishing it is still recognised as the same job).
pub fn job_id_from_message_id(message_id: &str) -> Uuid {
    Uuid::parse_str(message_id)
        .unwrap_or_else(|_| Uuid::new_v5(&MESSAGE_ID_NAMESPACE, message_id.as_bytes()))
}

/// Validates a submit body. `id` is the job id (from `message_id` or freshly assigned);
/// `now` is when it arrived (a `delay_ms` counts from then); `known_task` says whether a task
/// name is registered.
pub fn parse_submit(
    body: &[u8],
    id: Uuid,
    limit: usize,
    now: DateTime<Utc>,
    known_task: impl Fn(&str) -> bool,
) -> Result<TaskSpec, Invalid> {
    if body.len() > limit {
        return Err(Invalid::TooLarge {
            size: body.len(),
            limit,
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| Invalid::NotJson(e.to_string()))?;
    validate_submit(value, id, now, known_task)
}

/// Validates an already parsed submit document.
pub fn validate_submit(
    value: Value,
    id: Uuid,
    now: DateTime<Utc>,
    known_task: impl Fn(&str) -> bool,
) -> Result<TaskSpec, Invalid> {
    let Value::Object(mut map) = value else {
        return Err(Invalid::NotObject(json_kind(&value)));
    };
    let task = match map.remove("task") {
        Some(Value::String(t)) if !t.trim().is_empty() => t,
        _ => return Err(Invalid::BadTask),
    };
    if !storable(&task) {
        return Err(Invalid::Nul("field `task`"));
    }
    if !known_task(&task) {
        return Err(Invalid::UnknownTask(task));
    }
    let resources = match map.remove("resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            if items.len() > MAX_RESOURCES {
                return Err(Invalid::TooManyResources {
                    count: items.len(),
                    limit: MAX_RESOURCES,
                });
            }
            for item in items {
                match item {
                    Value::String(s) if s.len() > MAX_RESOURCE_LEN => {
                        return Err(Invalid::ResourceTooLong {
                            len: s.len(),
                            limit: MAX_RESOURCE_LEN,
                        })
                    }
                    Value::String(s) if !storable(&s) => {
                        return Err(Invalid::Nul("a resource name"))
                    }
                    Value::String(s) if !resource_kind(&s).0.is_empty() => out.push(s),
                    _ => return Err(Invalid::BadResources),
                }
            }
            out.sort();
            out.dedup();
            out
        }
        Some(_) => return Err(Invalid::BadResources),
    };
    let max_attempts = match map.remove("max_attempts") {
        None | Some(Value::Null) => DEFAULT_MAX_ATTEMPTS,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (1..=MAX_MAX_ATTEMPTS as i64).contains(&v) => v as i32,
            _ => return Err(Invalid::BadMaxAttempts),
        },
        Some(_) => return Err(Invalid::BadMaxAttempts),
    };
    let timeout_ms = match map.remove("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (1..=MAX_TIMEOUT_MS).contains(&v) => Some(v),
            _ => return Err(Invalid::BadTimeout),
        },
        Some(_) => return Err(Invalid::BadTimeout),
    };
    let run_at = due_time(map.remove("run_at"), map.remove("delay_ms"), now)?;
    let args = map.remove("args").unwrap_or(Value::Null);
    if !storable_json(&args) {
        return Err(Invalid::Nul("field `args`"));
    }
    // A typo must not pass: `resource` for `resources` would run with no exclusion at all.
    if let Some(field) = map.keys().next() {
        return Err(Invalid::unknown_field(field));
    }
    Ok(TaskSpec {
        id,
        task,
        args,
        resources,
        max_attempts,
        timeout_ms,
        run_at,
    })
}

/// A submit's due time, from `run_at` or `delay_ms` (counted from `now`).
fn due_time(
    run_at: Option<Value>,
    delay_ms: Option<Value>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Invalid> {
    let latest = now + chrono::Duration::days(MAX_DELAY_DAYS);
    match (run_at, delay_ms) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ok(None),
        (Some(Value::String(at)), None | Some(Value::Null)) => {
            let at = DateTime::parse_from_rfc3339(&at)
                .map_err(|_| Invalid::BadRunAt)?
                .with_timezone(&Utc);
            match at <= latest {
                true => Ok(Some(at)),
                false => Err(Invalid::BadRunAt),
            }
        }
        (Some(_), None | Some(Value::Null)) => Err(Invalid::BadRunAt),
        (None | Some(Value::Null), Some(Value::Number(n))) => match n.as_u64() {
            Some(ms) if ms <= MAX_DELAY_MS => {
                Ok(Some(now + chrono::Duration::milliseconds(ms as i64)))
            }
            _ => Err(Invalid::BadDelay),
        },
        (None | Some(Value::Null), Some(_)) => Err(Invalid::BadDelay),
        (Some(_), Some(_)) => Err(Invalid::TwoDueTimes),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How a task holds a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Alone (`r`).
    Exclusive,
    /// With other readers, never with a writer or slot holder (`shared:r`).
    Shared,
    /// One of the resource's slots, beside other slot holders up to its capacity
    /// (`slot:r`); never with a writer or reader.
    Slot,
}

impl Access {
    /// Whether holders of these two kinds may hold one resource at once (slots aside).
    pub fn compatible(self, other: Access) -> bool {
        self == other && self != Access::Exclusive
    }
}

/// Every way a task may name resource `name` (as the `jobs` table records it).
pub fn spellings(name: &str) -> [String; 3] {
    [
        name.to_owned(),
        format!("{SHARED_PREFIX}{name}"),
        format!("{SLOT_PREFIX}{name}"),
    ]
}

/// Splits a resource as a task names it into (name, access).
pub fn resource_kind(resource: &str) -> (&str, Access) {
    if let Some(name) = resource.strip_prefix(SHARED_PREFIX) {
        (name, Access::Shared)
    } else if let Some(name) = resource.strip_prefix(SLOT_PREFIX) {
        (name, Access::Slot)
    } else {
        (resource, Access::Exclusive)
    }
}

/// A task as published to a lane (or the default queue) for a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaneMessage {
    pub id: Uuid,
    pub task: String,
    #[serde(default)]
    pub args: Value,
    pub max_attempts: i32,
    /// Bounds each attempt (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A copy the server published again (recovery, reconciliation): the first message may
    /// have run already, so the worker asks what is recorded before running it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
}

/// Progress reported by a running task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub percent: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a worker tells the server, on `<prefix>.events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Online(WorkerInfo),
    Heartbeat {
        worker: String,
        /// The lanes the worker consumes right now (level-triggered assignment).
        lanes: Vec<String>,
        running: Vec<Uuid>,
        at: DateTime<Utc>,
        /// The task names it offers (so a server that restarted learns them again).
        #[serde(default)]
        tasks: Vec<String>,
        /// This session's exclusive control queue. The broker deletes it when the session's
        /// connection closes, so the server can tell at once that the session runs nothing
        /// any more (absent from older workers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        control: Option<String>,
        /// Tasks it runs at once (its concurrency; absent from older workers). A server that
        /// took over hears it here, not from `Online`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<usize>,
    },
    Offline {
        worker: String,
    },
    Started {
        job: Uuid,
        worker: String,
        attempt: i32,
        at: DateTime<Utc>,
    },
    Progress {
        job: Uuid,
        progress: Progress,
    },
    Completed {
        job: Uuid,
        worker: String,
        result: Value,
        attempt: i32,
        at: DateTime<Utc>,
    },
    Failed {
        job: Uuid,
        worker: String,
        error: String,
        attempt: i32,
        at: DateTime<Utc>,
    },
    /// The task was canceled (`POST /jobs/{id}/cancel`): it did not start, or its attempt was
    /// stopped.
    Canceled {
        job: Uuid,
        worker: String,
        attempt: i32,
        at: DateTime<Utc>,
    },
    /// A task came back to this worker from the broker (its previous holder died, or let go of
    /// it unstarted): what has been recorded for it? Answered with `Control::Record` once every
    /// event published before this one is applied.
    Redelivered {
        job: Uuid,
        worker: String,
    },
    /// Tasks this worker hands back to the broker without having started them (it lets go of
    /// a lane, or drains), published before the broker has them back: their next holder need
    /// not count them as possibly started (`Control::Record`'s `unstarted`).
    HandedBack {
        worker: String,
        jobs: Vec<Uuid>,
        /// The lane let go of, when it is one: this worker ran nothing of it that is not
        /// settled, so the first unfinished task of the lane that comes back never ran here
        /// (the broker may hand back deliveries that never reached this worker, which `jobs`
        /// cannot name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lane: Option<String>,
    },
}

/// A worker's self-description, sent when it comes online.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    pub worker: String,
    pub host: String,
    pub pid: u32,
    pub concurrency: usize,
    pub version: String,
    pub tasks: Vec<String>,
}

/// What the server tells one worker, on `<prefix>.control` with the worker id as routing key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// The complete set of lanes the worker owns and those it stands by for (level-triggered:
    /// not a delta). It consumes both; owners subscribe first.
    Assign {
        lanes: Vec<String>,
        #[serde(default)]
        standby: Vec<String>,
        /// Lanes to subscribe to afresh: the broker shows no consumer on them although this
        /// worker counts itself as consuming them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        restart: Vec<String>,
    },
    /// Stop taking tasks, finish or hand back what runs, say goodbye and exit.
    Drain,
    /// These jobs were canceled: skip them when they are delivered, stop them if they run.
    Cancel { jobs: Vec<Uuid> },
    /// These canceled jobs ended: forget their cancels (a retry runs them again).
    Uncancel { jobs: Vec<Uuid> },
    /// What the server has recorded for a redelivered task: its state (none if the job is
    /// unknown) and how many attempts started.
    Record {
        job: Uuid,
        state: Option<JobState>,
        attempts: i32,
        /// The live worker whose attempt is running now (recorded `running` by a worker whose
        /// latest heartbeat lists the task): the asker waits for that run instead of running
        /// the task beside it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        running_on: Option<String>,
        /// Its last holder, a live worker, handed it back without starting it and said so
        /// (`Event::HandedBack`) before the broker had it back.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unstarted: bool,
    },
}

#[cfg(test)]
mod tests;
