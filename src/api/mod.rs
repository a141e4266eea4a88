//! The HTTP API (actix-web): submit and read jobs, see workers and lanes, health.
//!
//! `POST /jobs` validates exactly like the Dispatcher and then publishes a submit message with
//! the job id as `message_id`, so the Dispatcher stays the single ordering point and a retried
//! POST with the same `id` creates one job. Errors are JSON: `{"error": "..."}`.
//!
//! This module holds what every route shares: [`ApiState`], the bearer-token check and the
//! route table ([`serve`]). The handlers live by concept: `jobs` (submit and read jobs),
//! `steer` (cancel and retry one job), `report` (external executors' callback API),
//! `admin` (workers, lanes, health, metrics), `schedules`, `limits` (resource capacity and
//! rate); failures are one [`ApiError`]; the server hands its running control plane to the API as
//! an `Active`.

mod access;
mod admin;
mod blocked;
mod dashboard;
mod error;
mod estimate;
mod jobs;
mod limits;
mod openapi;
mod publishing;
mod report;
mod schedules;
mod schemas;
mod short_id;
mod steer;
pub mod tokens;

pub use error::ApiError;

use crate::{
    broker::{json_properties, Topology},
    config::{BrokerConfig, ServerConfig},
    server::{dispatcher::SUBMITTED_BY_HEADER, Active, KnownTasks},
    store::Store,
};
use actix_web::{
    dev::Server, error::InternalError, web, App, HttpRequest, HttpServer, ResponseError,
};
use publishing::{ApiPublisher, PublishError};
use std::sync::{Arc, RwLock};
use tokens::{Scope, Tokens};
use uuid::Uuid;

/// What every handler shares. The fields are private to this module and its handler modules.
#[derive(Clone)]
pub struct ApiState {
    store: Store,
    topo: Topology,
    /// Who may do what (`tokens`); empty: the API is open.
    tokens: Arc<RwLock<Tokens>>,
    protect_reads: bool,
    max_payload: usize,
    /// The API serves HTTPS: the dashboard's cookie is `Secure`.
    https: bool,
    tasks: KnownTasks,
    active: Active,
    publisher: Arc<ApiPublisher>,
    /// The tasks' recent run times, for estimated starts.
    run_times: Arc<estimate::RunTimes>,
}

impl ApiState {
    pub fn new(
        store: Store,
        broker: BrokerConfig,
        cfg: ServerConfig,
        tasks: KnownTasks,
        active: Active,
        trust: crate::tls::Trust,
        tokens: Tokens,
    ) -> Self {
        ApiState {
            store,
            topo: Topology::new(&broker.prefix),
            publisher: Arc::new(ApiPublisher::new(broker.amqp_url.clone(), trust)),
            run_times: Arc::default(),
            tokens: Arc::new(RwLock::new(tokens)),
            protect_reads: cfg.protect_reads,
            max_payload: cfg.max_payload,
            https: cfg.tls_cert.is_some(),
            tasks,
            active,
        }
    }

    /// Publishes a submit message, (re)connecting to the broker when needed. 503 when the
    /// broker cannot be reached, blocks publishers, or does not confirm in time (then the
    /// answer names the id to send again: the broker may still take it, and the same id makes
    /// one job).
    async fn submit(&self, id: Uuid, body: &[u8], caller: &Caller) -> Result<(), ApiError> {
        let props = self.submit_props(id, caller);
        let published = self
            .publisher
            .publish(&self.topo.exchange(), "submit", body, props)
            .await;
        match published {
            Err(e @ PublishError::NotConfirmed(_)) => Err(ApiError::Unavailable(format!(
                "{e}; it may still be recorded: send it again with \"id\": \"{id}\""
            ))),
            other => other.map_err(ApiError::from),
        }
    }

    /// Publishes (confirmed) on the API's own connection (`publishing`).
    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: lapin::BasicProperties,
    ) -> Result<(), ApiError> {
        Ok(self.publisher.publish(exchange, key, body, props).await?)
    }

    /// The broker's reason while it blocks this API's publishes, for `/healthz`.
    fn broker_blocked(&self) -> Option<String> {
        self.publisher.blocked()
    }
}

/// The token holder a request comes from (None: the API has no tokens, it is open).
pub(super) struct Caller {
    pub name: Option<String>,
}

impl ApiState {
    /// The tokens, for reloading them (SIGHUP).
    pub fn tokens(&self) -> Arc<RwLock<Tokens>> {
        self.tokens.clone()
    }

    /// Sends the submits it publishes as its broker user, naming the caller's token.
    fn submit_props(&self, id: Uuid, caller: &Caller) -> lapin::BasicProperties {
        let mut props = json_properties().with_message_id(id.to_string().into());
        // Without tokens the API knows no name: it still says the submit came through it.
        let name = caller.name.as_deref().unwrap_or("api");
        if let Some(user) = self.publisher.user() {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert(
                SUBMITTED_BY_HEADER.into(),
                lapin::types::AMQPValue::LongString(name.into()),
            );
            props = props.with_user_id(user.into()).with_headers(headers);
        }
        props
    }
}

/// The token a request presents: its bearer token or, when `cookie` counts, the dashboard's.
fn presented(req: &HttpRequest, cookie: bool) -> Option<String> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    header.or_else(|| {
        cookie
            .then(|| req.cookie(dashboard::TOKEN_COOKIE))
            .flatten()
            .map(|c| c.value().to_owned())
    })
}

/// Whether the request's token may do what `scope` allows: 401 without a known token, 403
/// naming the scope it lacks.
fn check(
    state: &ApiState,
    req: &HttpRequest,
    scope: Scope,
    cookie: bool,
) -> Result<Caller, ApiError> {
    let tokens = state.tokens.read().expect("tokens lock");
    if tokens.is_empty() {
        return Ok(Caller { name: None });
    }
    let given = presented(req, cookie).unwrap_or_default();
    match tokens.holder(&given) {
        None => Err(ApiError::Unauthorized),
        Some(h) if h.may(scope) => Ok(Caller {
            name: Some(h.name.clone()),
        }),
        Some(h) => Err(ApiError::Forbidden(format!(
            "the token `{}` lacks the scope `{scope}`",
            h.name
        ))),
    }
}

/// Reads need the `read` scope when `LANES_PROTECT_READS` is on.
fn may_read(state: &ApiState, req: &HttpRequest) -> Result<(), ApiError> {
    match state.protect_reads {
        true => check(state, req, Scope::Read, true).map(drop),
        false => Ok(()),
    }
}

/// A file built into the binary (the dashboard's and the explorer's), cached `max_age` s.
async fn asset(body: &'static str, kind: &'static str, max_age: u32) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type(format!("{kind}; charset=utf-8"))
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            format!("max-age={max_age}"),
        ))
        .body(body)
}

/// Any path or method the route table does not know.
async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Builds the HTTP server (not yet running).
/// Serves the API on `addr`, over HTTPS when given a TLS configuration.
pub fn serve(
    state: ApiState,
    addr: &str,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let limit = state.max_payload;
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(limit + 1024))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let resp = ApiError::BadRequest(format!("bad query: {e}")).error_response();
                InternalError::from_response(e, resp).into()
            }))
            .route("/jobs", web::post().to(jobs::submit))
            .route("/jobs", web::get().to(jobs::list_jobs))
            .route("/jobs/{id}", web::get().to(jobs::get_job))
            .route("/jobs/{id}", web::patch().to(report::report))
            .route("/jobs/{id}/cancel", web::post().to(steer::cancel))
            .route("/jobs/{id}/retry", web::post().to(steer::retry))
            .route("/workers", web::get().to(admin::workers))
            .route("/workers/{id}/drain", web::post().to(admin::drain))
            .route("/queues", web::get().to(admin::queues))
            .route("/schedules", web::post().to(schedules::create))
            .route("/schedules", web::get().to(schedules::list))
            .route("/schedules/{name}", web::get().to(schedules::get))
            .route("/schedules/{name}", web::patch().to(schedules::patch))
            .route("/schedules/{name}", web::delete().to(schedules::delete))
            .route("/limits", web::get().to(limits::list))
            .route("/limits/{resource:.+}", web::get().to(limits::get))
            .route("/limits/{resource:.+}", web::put().to(limits::put))
            .route("/limits/{resource:.+}", web::delete().to(limits::delete))
            .route("/healthz", web::get().to(admin::healthz))
            .route("/metrics", web::get().to(admin::metrics))
            .configure(dashboard::routes)
            .configure(openapi::routes)
            .default_service(web::to(not_found))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5);
    let bound = match tls {
        Some(tls) => server.bind_rustls_0_23(addr, tls)?,
        None => server.bind(addr)?,
    };
    Ok(bound.run())
}
