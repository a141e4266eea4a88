//! `PATCH /jobs/{id}`: the callback API of external executors (the `webhook` task's, or any
//! program's that runs a job outside lanes). A report is `{"attempt", "state": "running" |
//! "completed" | "failed", "progress": 0–100, "message", "result", "error"}`; `attempt` (the
//! attempt of the delivery it answers) is required, the rest optional. It is turned into the
//! events a worker would publish and sent through `<prefix>.events`, so the Callback applies it
//! exactly as a worker's: state only moves forward, and a final report ends the job and
//! releases its resources. A job that has ended (canceled, say) refuses reports with 409, and
//! so does a job whose current attempt is another: a late report of an attempt that timed out,
//! or whose worker died and another took the job over, cannot end the attempt that replaced it.

use super::{
    access::{Allowed, Execute},
    ApiError, ApiState,
};
use crate::{
    broker::json_properties,
    protocol::{Event, Progress},
    store::JobState,
};
use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

/// An executor's report: progress while it runs, then its end (`completed` with a result, or
/// `failed` with an error).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Report {
    /// The attempt of the delivery this report answers (the `attempt` lanes posted).
    attempt: i32,
    state: Option<ReportedState>,
    /// Percent done, 0 to 100.
    progress: Option<f32>,
    message: Option<String>,
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum ReportedState {
    Running,
    Completed,
    Failed,
}

/// The worker name reports are recorded under when the job has none yet.
const EXECUTOR: &str = "executor";

#[utoipa::path(
    patch, path = "/jobs/{id}", tag = "executors",
    params(("id" = String, Path, description = "The running job's id, or a unique prefix of it")),
    request_body(content = Report, example = json!({"attempt": 1, "progress": 50.0, "message": "halfway"})),
    responses(
        (status = 202, description = "Recorded as the job's worker would report it", body = crate::api::schemas::Accepted),
        (status = 404, description = "No such job", body = crate::api::schemas::ErrorBody),
        (status = 409, description = "The job is not running (it ended, or no worker started it), or it is on another attempt than the report's", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn report(
    state: web::Data<ApiState>,
    _: Allowed<Execute>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = super::short_id::job_id(&state.store, &path).await?;
    let report: Report = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "a report is {{\"attempt\", \"state\": \"running\"|\"completed\"|\"failed\", \
             \"progress\", \"message\", \"result\", \"error\"}}: {e}"
        ))
    })?;
    if report.progress.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
        return Err(ApiError::BadRequest(
            "`progress` must be from 0 to 100".to_owned(),
        ));
    }
    let Some(job) = state.store.get(id).await? else {
        return Err(ApiError::NotFound(format!("no job {id}")));
    };
    if job.state.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}: it takes no more reports",
            job.state.as_str()
        )));
    }
    // Only a job a worker started has an executor: ending a queued one would release its
    // resources before its lane message ran.
    if job.state != JobState::Running {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}: only a running job takes reports",
            job.state.as_str()
        )));
    }
    if report.attempt != job.attempts {
        return Err(ApiError::Conflict(format!(
            "job {id} is on attempt {}: a report for attempt {} is too late (or too early)",
            job.attempts, report.attempt
        )));
    }
    let events = events_of(id, &report, job.worker.as_deref(), job.attempts);
    if !events.is_empty() {
        let body = serde_json::to_vec(&events).expect("events serialize");
        state
            .publish(
                &state.topo.worker_events(),
                "events",
                &body,
                json_properties(),
            )
            .await?;
    }
    let now = match report.state {
        Some(ReportedState::Completed) => JobState::Completed,
        Some(ReportedState::Failed) => JobState::Failed,
        _ => job.state,
    };
    Ok(HttpResponse::Accepted().json(json!({"id": id, "state": now})))
}

/// The worker events a report stands for.
fn events_of(job: Uuid, r: &Report, worker: Option<&str>, attempts: i32) -> Vec<Event> {
    let worker = worker.unwrap_or(EXECUTOR).to_owned();
    let (attempt, at) = (attempts.max(1), Utc::now());
    let mut events = Vec::new();
    if r.progress.is_some() || r.message.is_some() {
        let progress = Progress {
            percent: r.progress.unwrap_or(0.0),
            message: r.message.clone(),
        };
        events.push(Event::Progress { job, progress });
    }
    match r.state {
        Some(ReportedState::Completed) => events.push(Event::Completed {
            job,
            worker,
            result: r.result.clone().unwrap_or(Value::Null),
            attempt,
            at,
        }),
        Some(ReportedState::Failed) => events.push(Event::Failed {
            job,
            worker,
            error: r
                .error
                .clone()
                .unwrap_or_else(|| "failed by its executor".into()),
            attempt,
            at,
        }),
        // `running` moves nothing: the worker that holds the job recorded its start (an
        // executor's start must not take the job's worker from it; liveness checks use it).
        Some(ReportedState::Running) | None => {}
    }
    events
}
