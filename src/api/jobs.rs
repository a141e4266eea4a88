//! Job routes: `POST /jobs` (submit), `GET /jobs` (list) and `GET /jobs/{id}` (one job).
//!
//! A submit is validated here exactly as the Dispatcher validates it, so a client learns of a
//! bad body from its POST; the job itself is created by the Dispatcher from the published
//! message, which keeps the Dispatcher the single ordering point.

use super::{
    access::{Allowed, Readable, Submit},
    blocked, ApiError, ApiState,
};
use crate::{
    protocol::{validate_submit, Invalid},
    store::{JobFilter, JobState},
};
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;

/// `POST /jobs`: validates, publishes the submit message and answers 202 with the job.
#[utoipa::path(
    post, path = "/jobs", tag = "jobs",
    request_body = crate::api::schemas::SubmitRequest,
    responses(
        (status = 202, description = "Submitted; the Dispatcher records and routes it", body = crate::api::schemas::Accepted),
        crate::api::schemas::Failures,
        (status = 413, description = "Payload too large", body = crate::api::schemas::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn submit(
    state: web::Data<ApiState>,
    Allowed(caller, _): Allowed<Submit>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    if body.len() > state.max_payload {
        return Err(Invalid::TooLarge {
            size: body.len(),
            limit: state.max_payload,
        }
        .into());
    }
    let mut doc: Value =
        serde_json::from_slice(&body).map_err(|e| Invalid::NotJson(e.to_string()))?;
    let id = match doc.as_object_mut().and_then(|m| m.remove("id")) {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(s)) => Uuid::parse_str(&s).map_err(|_| Invalid::BadId)?,
        Some(_) => return Err(Invalid::BadId.into()),
    };
    if let Some(name) = doc.get("task").and_then(Value::as_str) {
        learn_task(&state, name).await?;
    }
    let spec = {
        let tasks = state.tasks.names();
        validate_submit(doc, id, chrono::Utc::now(), |t| tasks.contains(t))?
    };
    let mut message = json!({
        "task": spec.task, "args": spec.args, "resources": spec.resources,
        "max_attempts": spec.max_attempts,
    });
    if let Some(t) = spec.timeout_ms {
        message["timeout_ms"] = json!(t);
    }
    // A delay counts from now: the message carries the time it makes.
    if let Some(at) = spec.run_at {
        message["run_at"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    }
    let bytes = serde_json::to_vec(&message).expect("json serializes");
    state.submit(id, &bytes, &caller).await?;
    let mut out = message;
    out["id"] = json!(id);
    let later = spec.run_at.is_some_and(|at| at > chrono::Utc::now());
    out["state"] = json!(match later {
        true => JobState::Scheduled,
        false => JobState::Submitted,
    });
    Ok(HttpResponse::Accepted().json(out))
}

/// A task name this server has not heard a worker offer may have been offered to another
/// (this one is a standby, or restarted): the table of offered names decides.
pub(super) async fn learn_task(state: &ApiState, name: &str) -> Result<(), ApiError> {
    let known = state.tasks.contains(name);
    if !known && state.store.knows_task(name).await? {
        state.tasks.learn([name.to_owned()]);
    }
    Ok(())
}

/// `GET /jobs/{id}`.
#[utoipa::path(
    get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id, or a unique prefix of it (at least 4 hex digits)")),
    responses(
        (status = 200, description = "The job; a waiting or queued one also carries `blocked_by` and its position", body = crate::store::Job),
        (status = 404, description = "No such job", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn get_job(
    state: web::Data<ApiState>,
    _: Readable,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (job, why) = blocked::job_and_why(&state, &path).await?;
    let steers = state.store.steers(job.id).await?;
    let mut out = serde_json::to_value(&job).expect("jobs serialize");
    if let Some(Value::Object(why)) = why {
        out.as_object_mut().expect("a job is an object").extend(why);
    }
    out["steers"] = serde_json::to_value(steers).expect("steers serialize");
    Ok(HttpResponse::Ok().json(out))
}

/// A page above this many bytes gives the memory that read it back to the system.
const LARGE_PAGE: usize = 1 << 20;

/// `GET /jobs?state=&task=&resource=&limit=`, newest first.
#[utoipa::path(
    get, path = "/jobs", tag = "jobs",
    params(crate::store::JobFilter),
    responses(
        (status = 200, description = "Newest first; header `Lanes-Truncated: true` when the 16 MiB budget cut the page", body = Vec<crate::store::Job>),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn list_jobs(
    state: web::Data<ApiState>,
    _: Readable,
    query: web::Query<JobFilter>,
) -> Result<HttpResponse, ApiError> {
    if let Some(s) = &query.state {
        s.parse::<JobState>()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let listed = state.store.list(&query).await?;
    if listed.json.len() > LARGE_PAGE {
        // Reading the page's rows took several times its size, all free again now.
        crate::allocator::give_back();
    }
    let mut resp = HttpResponse::Ok();
    if listed.truncated {
        // The byte budget ended the page early: ask again with a smaller limit or a filter.
        resp.insert_header(("Lanes-Truncated", "true"));
    }
    Ok(resp.content_type("application/json").body(listed.json))
}
