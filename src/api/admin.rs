//! Operator routes: `GET /workers`, `POST /workers/{id}/drain`, `GET /queues`, `GET /healthz`
//! and `GET /metrics`.
//!
//! Workers and lanes are known only to the running control plane's actors, so those routes
//! ask them through [`Active`](super::Active) and answer 503 on a standby; health and metrics
//! answer on every server.

use super::{
    access::{Allowed, Operate, Readable},
    short_id, ApiError, ApiState,
};
use crate::server::{
    dispatcher::GetStats,
    supervisor::{DrainWorker, GetAssignment, ListWorkers},
    Standing,
};
use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

/// `GET /workers`: the Supervisor's view of the live workers.
#[utoipa::path(
    get, path = "/workers", tag = "operations",
    responses(
        (status = 200, description = "The live workers", body = Vec<crate::server::supervisor::WorkerView>),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn workers(
    state: web::Data<ApiState>,
    _: Readable,
) -> Result<HttpResponse, ApiError> {
    let (_, supervisor) = state.active.get().ok_or(ApiError::Standby)?;
    let list = supervisor.send(ListWorkers).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// `POST /workers/{id}/drain`: the worker finishes what it holds and takes nothing new.
#[utoipa::path(
    post, path = "/workers/{id}/drain", tag = "operations",
    params(("id" = String, Path, description = "The worker's id, or a unique prefix of it")),
    responses(
        (status = 202, description = "It finishes what it runs and leaves"),
        (status = 404, description = "No such worker", body = crate::api::schemas::ErrorBody),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn drain(
    state: web::Data<ApiState>,
    _: Allowed<Operate>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, supervisor) = state.active.get().ok_or(ApiError::Standby)?;
    let live = supervisor.send(ListWorkers).await?;
    let named = short_id::workers_named(&path, live.iter().map(|w| w.id.as_str()));
    let id = short_id::the_one(&path, "worker", named)?;
    if supervisor.send(DrainWorker(id.clone())).await? {
        Ok(HttpResponse::Accepted().json(json!({"worker": id, "draining": true})))
    } else {
        Err(ApiError::NotFound(format!("no worker {path}")))
    }
}

/// `GET /queues`: every lane with its owner and unfinished jobs, plus the waiting jobs.
#[utoipa::path(
    get, path = "/queues", tag = "operations",
    responses(
        (status = 200, description = "Every lane with its owner and unfinished jobs, and the waiting line", body = crate::api::schemas::Queues),
        crate::api::schemas::Failures,
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn queues(
    state: web::Data<ApiState>,
    _: Readable,
) -> Result<HttpResponse, ApiError> {
    let (dispatcher, supervisor) = state.active.get().ok_or(ApiError::Standby)?;
    let (stats, assignment) = match (
        dispatcher.send(GetStats).await,
        supervisor.send(GetAssignment).await,
    ) {
        (Ok(s), Ok(a)) => (s, a),
        _ => {
            return Err(ApiError::Unavailable(
                "control plane is restarting".to_owned(),
            ))
        }
    };
    let mut lanes: Vec<Value> =
        vec![json!({"queue": state.topo.default_queue(), "owner": "every worker"})];
    for (n, load) in stats.loads {
        lanes.push(json!({
            "queue": state.topo.lane(n),
            "owner": assignment.get(&n),
            "unfinished": load,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({
        "lanes": lanes,
        "waiting": stats.waiting,
        "reserved_resources": stats.reserved,
    })))
}

/// How long `/healthz` waits for the database before it answers `degraded`.
const HEALTH_DB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /healthz`: 200 when the database answers and this server is the active one with its
/// control plane running, or a standby; else 503. The body says which, and whether this
/// server is the active one. A server that is starting (it does not know yet whether it is
/// the active one, or builds its control plane) is not ready: a submit published then may find
/// no exchange yet, or nobody consuming it.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "The database answers; this server runs the control plane, or stands by for the one that does", body = crate::api::schemas::Health),
        (status = 503, description = "The database does not answer, the broker blocks publishers, or this server is starting", body = crate::api::schemas::Health),
    )
)]
pub(super) async fn healthz(state: web::Data<ApiState>) -> HttpResponse {
    // Bounded: a database behind a partition does not refuse, it stays silent.
    let db = tokio::time::timeout(HEALTH_DB_TIMEOUT, state.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let standing = state.active.standing();
    let blocked = state.broker_blocked();
    let status = health(db, blocked.is_some(), standing);
    let active = standing == Standing::Active;
    let mut body = json!({"status": status, "database": db, "active": active});
    if let Some(reason) = blocked {
        body["broker_blocked"] = json!(reason);
    }
    if status == "ok" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// What `/healthz` says: `ok`, `starting` or `degraded` (the database does not answer, or the
/// broker blocks publishers).
fn health(db: bool, broker_blocked: bool, standing: Standing) -> &'static str {
    match (db && !broker_blocked, standing) {
        (false, _) => "degraded",
        (true, Standing::Starting) => "starting",
        (true, Standing::Standby | Standing::Active) => "ok",
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
)]
pub(super) async fn metrics() -> Result<HttpResponse, ApiError> {
    let handle = crate::telemetry::metrics()
        .ok_or_else(|| ApiError::Unavailable("metrics are off in this process".to_owned()))?;
    handle.run_upkeep();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_control_plane_or_a_standby_is_healthy() {
        assert_eq!(health(true, false, Standing::Active), "ok");
        // A standby answers as before: the active server takes the submits.
        assert_eq!(health(true, false, Standing::Standby), "ok");
        assert_eq!(health(true, false, Standing::Starting), "starting");
        assert_eq!(health(false, false, Standing::Active), "degraded");
        assert_eq!(health(true, true, Standing::Active), "degraded");
    }
}
