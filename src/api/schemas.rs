//! The shapes of what the API takes and answers where the handlers write ad hoc JSON, for the
//! OpenAPI document (`openapi`); the handlers' annotations name them.

use utoipa::{IntoResponses, ToSchema};

/// The body of `POST /jobs` (the same fields as a submit message over AMQP).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(example = json!({"task": "echo", "args": {"hello": "world"}, "resources": ["repo:1"]}))]
pub struct SubmitRequest {
    /// A task some worker offers.
    task: String,
    /// Any JSON; `null` when not given.
    #[schema(value_type = Option<Object>)]
    args: Option<serde_json::Value>,
    /// The resources it touches (`shared:` for shared access); at most 64, each at most 256 bytes.
    resources: Option<Vec<String>>,
    /// 1 to 100 (3 when not given).
    max_attempts: Option<i32>,
    /// Each attempt's time limit in ms, at most a week.
    timeout_ms: Option<u64>,
    /// When it is due (RFC 3339): until then it is `scheduled`, then it joins its resources'
    /// order as if submitted then. At most 366 days ahead; a time past is due at once.
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Due this many milliseconds from now (instead of `run_at`).
    delay_ms: Option<u64>,
    /// The job's id, to make a retried POST create one job.
    id: Option<uuid::Uuid>,
}

/// A job that was accepted or steered, and its state now.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Accepted {
    id: uuid::Uuid,
    /// `submitted`, `scheduled` (due later), `canceled`, `canceling` (its worker stops it), ...
    state: String,
}

/// Every failure: the reason in words.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ErrorBody {
    error: String,
}

/// One lane (or the default queue) in `GET /queues`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct LaneEntry {
    queue: String,
    /// The worker that owns it.
    owner: Option<String>,
    /// Unfinished jobs routed to it.
    unfinished: Option<u32>,
}

/// `GET /queues`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Queues {
    lanes: Vec<LaneEntry>,
    /// Jobs in the waiting line.
    waiting: usize,
    reserved_resources: usize,
}

/// `GET /healthz`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct Health {
    /// `ok`, `starting` (this server does not run its control plane yet, and is no standby:
    /// a submit may not be taken yet) or `degraded` (the database does not answer, or the
    /// broker blocks publishers).
    status: String,
    database: bool,
    /// Whether this server runs the control plane.
    active: bool,
    /// While the broker blocks publishers (a memory or disk alarm): its reason.
    broker_blocked: Option<String>,
}

/// The failures every route may answer with (each route lists its own besides).
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum Failures {
    /// Invalid: the reason.
    #[response(status = 400, description = "Invalid: the reason")]
    Invalid(ErrorBody),
    #[response(status = 401, description = "Missing or wrong bearer token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 503,
        description = "Database, broker or control plane unavailable, or a standby"
    )]
    Unavailable(ErrorBody),
}
