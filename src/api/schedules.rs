//! Schedule routes: `POST /schedules`, `GET /schedules`, `GET/PATCH/DELETE /schedules/{name}`.
//! The table is the record; the active control plane's loop reads it (see
//! `server::dispatcher::schedules`), so any server can take these. A change, a pause or a
//! delete leaves out the job already made for the coming tick; the next is made from the
//! schedule as it is then.

use super::{
    access::{Allowed, Operate, Readable},
    jobs::learn_task,
    ApiError, ApiState,
};
use crate::{
    schedule::{job_id, Schedule, ScheduleError},
    store::{Job, StoredSchedule},
};
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many coming ticks a schedule shows.
const UPCOMING: usize = 5;
/// How many of its latest jobs one schedule shows.
const RECENT: usize = 10;

/// A schedule as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The tick its last job was made for.
    pub last_tick: Option<DateTime<Utc>>,
    /// Its coming ticks (none while paused).
    pub next: Vec<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its latest jobs, newest first (one schedule only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub jobs: Option<Vec<Job>>,
}

impl ScheduleView {
    pub fn of(stored: StoredSchedule) -> ScheduleView {
        let next = match (stored.schedule.paused, stored.schedule.compile()) {
            (false, Ok(c)) => c.upcoming(Utc::now(), UPCOMING),
            _ => Vec::new(),
        };
        ScheduleView {
            schedule: stored.schedule,
            last_tick: stored.last_tick,
            next,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
            jobs: None,
        }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

/// Reads a schedule body, refusing unknown fields by name.
fn body<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| ApiError::BadRequest(format!("a schedule: {e}")))
}

/// Checks a schedule against the tasks workers offer.
async fn check(state: &ApiState, s: &Schedule) -> Result<(), ApiError> {
    learn_task(state, &s.task).await?;
    let tasks = state.tasks.names();
    s.check(|t| tasks.contains(t))?;
    Ok(())
}

/// Leaves out the job a schedule made for a tick still to come.
async fn leave_out(state: &ApiState, name: &str, last: Option<DateTime<Utc>>, why: &str) {
    if let Some(tick) = last.filter(|t| *t > Utc::now()) {
        if let Err(e) = state.store.skip_scheduled(&[job_id(name, tick)], why).await {
            tracing::warn!(schedule = name, error = %e, "the coming tick's job was not left out");
        }
    }
}

/// `POST /schedules`: a new schedule (201); 409 if the name is taken.
#[utoipa::path(
    post, path = "/schedules", tag = "schedules",
    request_body = Schedule,
    responses(
        (status = 201, description = "Created; its first job is made for its next tick", body = ScheduleView),
        (status = 409, description = "A schedule of that name exists", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn create(
    state: web::Data<ApiState>,
    _: Allowed<Operate>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let s: Schedule = body(&raw)?;
    check(&state, &s).await?;
    if !state.store.create_schedule(&s).await? {
        return Err(ApiError::Conflict(format!(
            "a schedule named {} exists",
            s.name
        )));
    }
    let stored = state.store.schedule(&s.name).await?;
    let view = stored.map(ScheduleView::of);
    Ok(HttpResponse::Created().json(view))
}

/// `GET /schedules`: every schedule, by name, with its coming ticks.
#[utoipa::path(
    get, path = "/schedules", tag = "schedules",
    responses(
        (status = 200, description = "Every schedule", body = Vec<ScheduleView>),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn list(
    state: web::Data<ApiState>,
    _: Readable,
) -> Result<HttpResponse, ApiError> {
    let all: Vec<ScheduleView> = state
        .store
        .schedules()
        .await?
        .into_iter()
        .map(ScheduleView::of)
        .collect();
    Ok(HttpResponse::Ok().json(all))
}

/// The ids of the jobs of a schedule's latest `n` ticks (ids derive from the ticks), newest
/// first: its jobs, found by primary key.
pub(super) fn latest_job_ids(stored: &StoredSchedule, n: usize) -> Vec<uuid::Uuid> {
    let name = &stored.schedule.name;
    let (Ok(c), Some(mut tick)) = (stored.schedule.compile(), stored.last_tick) else {
        return Vec::new();
    };
    let mut ids = vec![job_id(name, tick)];
    while ids.len() < n {
        match c.at_or_before(tick - chrono::Duration::milliseconds(1)) {
            Some(t) => {
                ids.push(job_id(name, t));
                tick = t;
            }
            None => break,
        }
    }
    ids
}

/// One schedule with its coming ticks and its latest jobs.
async fn view_of(state: &ApiState, name: &str) -> Result<ScheduleView, ApiError> {
    let Some(stored) = state.store.schedule(name).await? else {
        return Err(ApiError::NotFound(format!("no schedule {name}")));
    };
    // Missed ticks made no job: look further back than the count shown.
    let ids = latest_job_ids(&stored, RECENT * 3);
    let mut view = ScheduleView::of(stored);
    let mut jobs = state.store.jobs_by_ids(&ids).await?;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.run_at));
    jobs.truncate(RECENT);
    view.jobs = Some(jobs);
    Ok(view)
}

/// `GET /schedules/{name}`.
#[utoipa::path(
    get, path = "/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "The schedule, its coming ticks and its latest jobs", body = ScheduleView),
        (status = 404, description = "No such schedule", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn get(
    state: web::Data<ApiState>,
    _: Readable,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(view_of(&state, &name).await?))
}

/// `PATCH /schedules/{name}`: changes any of its fields (`{"paused": true}` pauses it); the
/// job made for its coming tick is left out and the next is made from the schedule as it is
/// now (after a pause, from the first tick after the resume).
#[utoipa::path(
    patch, path = "/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    request_body(content = Object, description = "The fields to change",
        example = json!({"paused": true})),
    responses(
        (status = 200, description = "Changed", body = ScheduleView),
        (status = 404, description = "No such schedule", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn patch(
    state: web::Data<ApiState>,
    _: Allowed<Operate>,
    name: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(stored) = state.store.schedule(&name).await? else {
        return Err(ApiError::NotFound(format!("no schedule {name}")));
    };
    let changes: Value = body(&raw)?;
    let Value::Object(changes) = changes else {
        return Err(ApiError::BadRequest("a change is a JSON object".to_owned()));
    };
    if changes.get("name").is_some_and(|n| n != name.as_str()) {
        return Err(ApiError::BadRequest(
            "a schedule's name does not change".to_owned(),
        ));
    }
    let mut doc = serde_json::to_value(&stored.schedule).expect("a schedule serializes");
    doc.as_object_mut().expect("an object").extend(changes);
    let s: Schedule = serde_json::from_value(doc)
        .map_err(|e| ApiError::BadRequest(format!("a schedule: {e}")))?;
    check(&state, &s).await?;
    let Some(last) = state.store.replace_schedule(&s).await? else {
        return Err(ApiError::NotFound(format!("no schedule {name}")));
    };
    leave_out(&state, &name, last, "its schedule changed").await;
    Ok(HttpResponse::Ok().json(view_of(&state, &name).await?))
}

/// `DELETE /schedules/{name}`: no more ticks; the job made for the coming one is left out.
#[utoipa::path(
    delete, path = "/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such schedule", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn delete(
    state: web::Data<ApiState>,
    _: Allowed<Operate>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(last) = state.store.delete_schedule(&name).await? else {
        return Err(ApiError::NotFound(format!("no schedule {name}")));
    };
    leave_out(&state, &name, last, "its schedule was deleted").await;
    Ok(HttpResponse::NoContent().finish())
}
