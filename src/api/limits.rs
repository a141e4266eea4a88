//! Resource limit routes: `GET /limits`, `GET/PUT/DELETE /limits/{resource}`. The table is the
//! record; the active control plane reads it again within a second, and before the answer
//! when this server is the active one, so any server can take these. A change applies to tasks
//! already waiting.

use super::{
    access::{Allowed, Operate, Readable},
    ApiError, ApiState,
};
use crate::{
    limit::{Limit, LimitError},
    protocol::{resource_kind, Access, MAX_RESOURCE_LEN},
    server::dispatcher::ReloadLimits,
};
use actix_web::{web, HttpResponse};
use serde::Serialize;

/// A resource's limit as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimitView {
    pub resource: String,
    #[serde(flatten)]
    pub limit: Limit,
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

/// A limit belongs to a resource's plain name.
fn resource(name: &str) -> Result<&str, ApiError> {
    let (plain, access) = resource_kind(name);
    if access != Access::Exclusive {
        return Err(ApiError::BadRequest(format!(
            "a limit belongs to the resource, not to a claim on it: use `{plain}`"
        )));
    }
    if plain.is_empty() || plain.len() > MAX_RESOURCE_LEN || plain.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "a resource name is 1 to {MAX_RESOURCE_LEN} bytes, without NUL"
        )));
    }
    Ok(plain)
}

/// `GET /limits`: every limited resource.
#[utoipa::path(
    get, path = "/limits", tag = "limits",
    responses(
        (status = 200, description = "Every limited resource, by name", body = Vec<LimitView>),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn list(
    state: web::Data<ApiState>,
    _: Readable,
) -> Result<HttpResponse, ApiError> {
    let all: Vec<LimitView> = state
        .store
        .limits()
        .await?
        .into_iter()
        .map(|(resource, limit)| LimitView { resource, limit })
        .collect();
    Ok(HttpResponse::Ok().json(all))
}

/// `GET /limits/{resource}`.
#[utoipa::path(
    get, path = "/limits/{resource}", tag = "limits",
    params(("resource" = String, Path, description = "The resource's name")),
    responses(
        (status = 200, description = "Its limit", body = LimitView),
        (status = 404, description = "It has none (one slot, no rate)", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn get(
    state: web::Data<ApiState>,
    _: Readable,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = resource(&name)?;
    match state.store.limit(name).await? {
        Some(limit) => Ok(HttpResponse::Ok().json(LimitView {
            resource: name.to_owned(),
            limit,
        })),
        None => Err(ApiError::NotFound(format!(
            "{name} has no limit: one slot, no rate"
        ))),
    }
}

/// `PUT /limits/{resource}`: sets its capacity and rate; tasks already waiting are held to
/// the new limit.
#[utoipa::path(
    put, path = "/limits/{resource}", tag = "limits",
    params(("resource" = String, Path, description = "The resource's name")),
    request_body(content = Limit, description = "`slots`: how many `slot:` holders at once (1 if left out); `rate`: at most `starts` starts in any `per_ms` ms",
        example = json!({"slots": 4, "rate": {"starts": 10, "per_ms": 1000}})),
    responses(
        (status = 200, description = "Set", body = LimitView),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn put(
    state: web::Data<ApiState>,
    _: Allowed<Operate>,
    name: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let name = resource(&name)?;
    let limit: Limit =
        serde_json::from_slice(&raw).map_err(|e| ApiError::BadRequest(format!("a limit: {e}")))?;
    let limit = limit.checked()?;
    state.store.set_limit(name, &limit).await?;
    reload(&state).await?;
    Ok(HttpResponse::Ok().json(LimitView {
        resource: name.to_owned(),
        limit,
    }))
}

/// `DELETE /limits/{resource}`: back to one slot and no rate.
#[utoipa::path(
    delete, path = "/limits/{resource}", tag = "limits",
    params(("resource" = String, Path, description = "The resource's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "It had none", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn delete(
    state: web::Data<ApiState>,
    _: Allowed<Operate>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = resource(&name)?;
    if !state.store.remove_limit(name).await? {
        return Err(ApiError::NotFound(format!("{name} has no limit")));
    }
    reload(&state).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The active control plane, when it runs here, puts the change in force before the answer
/// (another server's reads it within a second).
async fn reload(state: &ApiState) -> Result<(), ApiError> {
    if let Some((dispatcher, _)) = state.active.get() {
        dispatcher.send(ReloadLimits).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_limit_names_the_resource_not_a_claim() {
        assert_eq!(resource("api:github").unwrap(), "api:github");
        for bad in ["slot:api", "shared:api", "", "slot:"] {
            assert!(resource(bad).is_err(), "{bad}");
        }
        assert!(resource(&"x".repeat(MAX_RESOURCE_LEN + 1)).is_err());
    }

    #[test]
    fn a_limit_reads_with_defaults_and_refuses_unknown_fields() {
        let l: Limit =
            serde_json::from_value(json!({"rate": {"starts": 2, "per_ms": 10}})).unwrap();
        assert_eq!(l.slots, 1);
        assert!(serde_json::from_value::<Limit>(json!({"slot": 3})).is_err());
    }
}
