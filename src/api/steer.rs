//! `POST /jobs/{id}/cancel` and `POST /jobs/{id}/retry`: the active server's Dispatcher does
//! both (see `server::dispatcher::steer`); a standby answers 503. Both need the token when one
//! is set.

use super::{
    access::{Allowed, Operate},
    ApiError, ApiState, Caller,
};
use crate::server::dispatcher::{CancelJob, DispatchError, RetryJob, Steered};
use actix_web::{web, HttpResponse};
use serde_json::json;
use uuid::Uuid;

/// The answer to a cancel or retry.
fn answer(
    id: Uuid,
    steered: Result<Steered, DispatchError>,
    what: &str,
) -> Result<HttpResponse, ApiError> {
    match steered.map_err(|e| ApiError::ControlPlane(e.to_string()))? {
        Steered::Canceled => Ok(HttpResponse::Ok().json(json!({"id": id, "state": "canceled"}))),
        Steered::Canceling => Ok(HttpResponse::Accepted()
            .json(json!({"id": id, "state": "canceling", "cancel_requested": true}))),
        Steered::Retried => {
            Ok(HttpResponse::Accepted().json(json!({"id": id, "state": "submitted"})))
        }
        Steered::Refused(None) => Err(ApiError::NotFound(format!("no job {id}"))),
        Steered::Refused(Some(state)) => Err(ApiError::Conflict(format!(
            "job {id} is {}: {what}",
            state.as_str()
        ))),
    }
}

/// `POST /jobs/{id}/cancel`: a waiting job is canceled at once (200); a queued or running one
/// is canceled by its worker (202, then its state becomes `canceled`); an ended one is 409.
#[utoipa::path(
    post, path = "/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id, or a unique prefix of it (at least 4 hex digits)")),
    responses(
        (status = 200, description = "Cancels: a waiting job at once (200), a queued or running one by its worker (202)", body = crate::api::schemas::Accepted),
        (status = 202, description = "Requested", body = crate::api::schemas::Accepted),
        (status = 404, description = "No such job", body = crate::api::schemas::ErrorBody),
        (status = 409, description = "Its state does not allow it", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn cancel(
    state: web::Data<ApiState>,
    Allowed(caller, _): Allowed<Operate>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let why = "only a job that has not ended can be canceled";
    steer(&state, caller, &path, ("cancel", why), CancelJob).await
}

/// `POST /jobs/{id}/retry`: a failed or canceled job runs again under the same id, with a new
/// attempt budget, behind what was submitted before the retry (202); any other state is 409.
#[utoipa::path(
    post, path = "/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "The job's id, or a unique prefix of it (at least 4 hex digits)")),
    responses(
        (status = 200, description = "Runs a failed or canceled job again (same id, new attempts)", body = crate::api::schemas::Accepted),
        (status = 202, description = "Requested", body = crate::api::schemas::Accepted),
        (status = 404, description = "No such job", body = crate::api::schemas::ErrorBody),
        (status = 409, description = "Its state does not allow it", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn retry(
    state: web::Data<ApiState>,
    Allowed(caller, _): Allowed<Operate>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let why = "only a failed or canceled job can be retried";
    steer(&state, caller, &path, ("retry", why), RetryJob).await
}

/// Asks the active server's Dispatcher to steer the job.
async fn steer<M>(
    state: &ApiState,
    caller: Caller,
    path: &str,
    (action, why): (&str, &str),
    message: impl FnOnce(Uuid) -> M,
) -> Result<HttpResponse, ApiError>
where
    M: actix::Message<Result = Result<Steered, DispatchError>> + Send + 'static,
    crate::server::dispatcher::Dispatcher: actix::Handler<M>,
{
    let id = super::short_id::job_id(&state.store, path).await?;
    let (dispatcher, _) = state.active.get().ok_or(ApiError::Standby)?;
    let steered = dispatcher.send(message(id)).await?;
    let answer = answer(id, steered, why)?;
    state
        .store
        .record_steer(id, action, caller.name.as_deref())
        .await?;
    Ok(answer)
}
