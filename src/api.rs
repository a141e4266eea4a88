//! The HTTP API (actix-web): submit and read jobs, see workers and lanes, health.
//!
//! `POST /jobs` validates exactly like the Dispatcher and then publishes a submit message with
//! the job id as `message_id`, so the Dispatcher stays the single ordering point and a retried
//! POST with the same `id` creates one job. Errors are JSON: `{"error": "..."}`.

use crate::{
    broker::{self, json_properties, Publisher, Topology},
    config::{BrokerConfig, ServerConfig},
    dispatcher::{GetStats, KnownTasks},
    protocol::{validate_submit, Invalid},
    server::Active,
    store::{JobFilter, JobState, Store},
    supervisor::{DrainWorker, GetAssignment, ListWorkers},
};
use actix_web::{
    dev::Server, error::InternalError, http::StatusCode, web, App, HttpRequest, HttpResponse,
    HttpServer,
};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::warn;
use uuid::Uuid;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    store: Store,
    broker: BrokerConfig,
    topo: Topology,
    token: Option<String>,
    max_payload: usize,
    tasks: KnownTasks,
    active: Active,
    publisher: Arc<Mutex<Option<(lapin::Connection, Publisher)>>>,
}

impl ApiState {
    pub fn new(
        store: Store,
        broker: BrokerConfig,
        cfg: ServerConfig,
        tasks: KnownTasks,
        active: Active,
    ) -> Self {
        ApiState {
            store,
            topo: Topology::new(&broker.prefix),
            broker,
            token: cfg.api_token.filter(|t| !t.is_empty()),
            max_payload: cfg.max_payload,
            tasks,
            active,
            publisher: Arc::new(Mutex::new(None)),
        }
    }

    /// Publishes a submit message, (re)connecting to the broker when needed.
    async fn submit(&self, id: Uuid, body: &[u8]) -> Result<(), String> {
        let mut slot = self.publisher.lock().await;
        for _ in 0..2 {
            if slot.is_none() {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                let conn = broker::connect(&self.broker.amqp_url, &format!("lanes-api@{host}"))
                    .await
                    .map_err(|e| e.to_string())?;
                let publisher = Publisher::new(&conn).await.map_err(|e| e.to_string())?;
                *slot = Some((conn, publisher));
            }
            let (_, publisher) = slot.as_ref().expect("connected above");
            let props = json_properties().with_message_id(id.to_string().into());
            match publisher
                .publish(&self.topo.exchange(), "submit", body, props)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, "submit publish failed; reconnecting");
                    *slot = None;
                }
            }
        }
        Err("the broker did not accept the task".to_owned())
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.to_string() }))
}

fn authorized(state: &ApiState, req: &HttpRequest) -> Result<(), Box<HttpResponse>> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(token.as_str()) {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer $LANES_API_TOKEN)",
        )))
    }
}

async fn submit(state: web::Data<ApiState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(resp) = authorized(&state, &req) {
        return *resp;
    }
    if body.len() > state.max_payload {
        let e = Invalid::TooLarge {
            size: body.len(),
            limit: state.max_payload,
        };
        return error(StatusCode::PAYLOAD_TOO_LARGE, e);
    }
    let mut doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, Invalid::NotJson(e.to_string())),
    };
    let id = match doc.as_object_mut().and_then(|m| m.remove("id")) {
        None | Some(Value::Null) => Uuid::new_v4(),
        Some(Value::String(s)) => match Uuid::parse_str(&s) {
            Ok(id) => id,
            Err(_) => return error(StatusCode::BAD_REQUEST, Invalid::BadId),
        },
        Some(_) => return error(StatusCode::BAD_REQUEST, Invalid::BadId),
    };
    let spec = {
        let tasks = state.tasks.read().expect("task names lock");
        match validate_submit(doc, id, |t| tasks.contains(t)) {
            Ok(spec) => spec,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    };
    let message = json!({
        "task": spec.task, "args": spec.args, "resources": spec.resources,
        "max_attempts": spec.max_attempts,
    });
    let bytes = serde_json::to_vec(&message).expect("json serializes");
    if let Err(e) = state.submit(id, &bytes).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e);
    }
    let mut out = message;
    out["id"] = json!(id);
    out["state"] = json!(JobState::Submitted);
    HttpResponse::Accepted().json(out)
}

async fn get_job(state: web::Data<ApiState>, path: web::Path<String>) -> HttpResponse {
    let Ok(id) = Uuid::parse_str(&path) else {
        return error(StatusCode::BAD_REQUEST, "job id must be a UUID");
    };
    match state.store.get(id).await {
        Ok(Some(job)) => HttpResponse::Ok().json(job),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn list_jobs(state: web::Data<ApiState>, query: web::Query<JobFilter>) -> HttpResponse {
    if let Some(s) = &query.state {
        if let Err(e) = s.parse::<JobState>() {
            return error(StatusCode::BAD_REQUEST, e);
        }
    }
    match state.store.list(&query).await {
        Ok(jobs) => HttpResponse::Ok().json(jobs),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn healthz(state: web::Data<ApiState>) -> HttpResponse {
    let db = state.store.ping().await.is_ok();
    let active = state.active.get().is_some();
    let body =
        json!({"status": if db { "ok" } else { "degraded" }, "database": db, "active": active});
    if db {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn not_active() -> HttpResponse {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this server is a standby; ask the active one",
    )
}

async fn workers(state: web::Data<ApiState>) -> HttpResponse {
    let Some((_, supervisor)) = state.active.get() else {
        return not_active();
    };
    match supervisor.send(ListWorkers).await {
        Ok(list) => HttpResponse::Ok().json(list),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn drain(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    if let Err(resp) = authorized(&state, &req) {
        return *resp;
    }
    let Some((_, supervisor)) = state.active.get() else {
        return not_active();
    };
    match supervisor.send(DrainWorker(path.clone())).await {
        Ok(true) => HttpResponse::Accepted().json(json!({"worker": *path, "draining": true})),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no worker {path}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn queues(state: web::Data<ApiState>) -> HttpResponse {
    let Some((dispatcher, supervisor)) = state.active.get() else {
        return not_active();
    };
    let (stats, assignment) = match (
        dispatcher.send(GetStats).await,
        supervisor.send(GetAssignment).await,
    ) {
        (Ok(s), Ok(a)) => (s, a),
        _ => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "control plane is restarting",
            )
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
    HttpResponse::Ok().json(json!({
        "lanes": lanes,
        "waiting": stats.waiting,
        "reserved_resources": stats.reserved,
    }))
}

/// Prometheus text format.
async fn metrics() -> HttpResponse {
    match crate::telemetry::metrics() {
        Some(handle) => {
            handle.run_upkeep();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4")
                .body(handle.render())
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are off in this process",
        ),
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.path()),
    )
}

/// Builds the HTTP server (not yet running).
pub fn serve(state: ApiState, addr: &str) -> std::io::Result<Server> {
    let limit = state.max_payload;
    let data = web::Data::new(state);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(limit + 1024))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let resp = error(StatusCode::BAD_REQUEST, format!("bad query: {e}"));
                InternalError::from_response(e, resp).into()
            }))
            .route("/jobs", web::post().to(submit))
            .route("/jobs", web::get().to(list_jobs))
            .route("/jobs/{id}", web::get().to(get_job))
            .route("/workers", web::get().to(workers))
            .route("/workers/{id}/drain", web::post().to(drain))
            .route("/queues", web::get().to(queues))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .default_service(web::to(not_found))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(addr)?
    .run())
}
