//! The HTTP API described as OpenAPI 3, generated from the handlers' annotations
//! (`utoipa`): served at `/openapi.json`, with an interactive explorer at `/docs` whose assets
//! (swagger-ui, `assets/swagger-ui/`) are built into the binary. The shapes of the answers that
//! handlers write as ad hoc JSON are described in `schemas`.

use super::{
    admin, asset, jobs, limits, report, schedules,
    schemas::{Accepted, ErrorBody, Health, LaneEntry, Queues, SubmitRequest},
    steer,
};
use crate::{
    server::supervisor::WorkerView,
    store::{Job, JobState},
};
use actix_web::{web, HttpResponse};
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

/// The bearer token scheme (`LANES_API_TOKEN`).
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        api.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "lanes", description = "Tasks that name the resources they touch: one at a time \
        per resource, in submit order. Writes need `Authorization: Bearer $LANES_API_TOKEN` when \
        the server has one; reads too with LANES_PROTECT_READS."),
    paths(
        jobs::submit, jobs::list_jobs, jobs::get_job, report::report, steer::cancel,
        steer::retry, admin::workers, admin::drain, admin::queues, admin::healthz,
        admin::metrics, schedules::create, schedules::list, schedules::get, schedules::patch,
        schedules::delete, limits::list, limits::get, limits::put, limits::delete
    ),
    components(schemas(
        SubmitRequest, Accepted, ErrorBody, Job, JobState, WorkerView, Queues, LaneEntry,
        Health, report::Report, report::ReportedState, crate::schedule::Schedule,
        crate::schedule::Missed, schedules::ScheduleView, crate::limit::Limit,
        crate::limit::Rate, limits::LimitView
    )),
    modifiers(&Bearer),
    tags(
        (name = "jobs", description = "Submit, read and steer jobs"),
        (name = "executors", description = "External executors report through it"),
        (name = "operations", description = "Workers, lanes, health and metrics"),
        (name = "schedules", description = "Recurring schedules: a job per cron tick"),
        (name = "limits", description = "Resource capacity (`slot:` holders at once) and rate"),
    )
)]
pub struct ApiDoc;

/// Adds `/openapi.json` and the explorer at `/docs`.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(document))
        .route(
            "/docs",
            web::get().to(|| asset(EXPLORER, "text/html", HOUR)),
        )
        .route(
            "/docs/init.js",
            web::get().to(|| asset(INIT, "text/javascript", HOUR)),
        )
        .route(
            "/docs/swagger-ui.css",
            web::get().to(|| asset(CSS, "text/css", HOUR)),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            web::get().to(|| asset(BUNDLE, "text/javascript", HOUR)),
        );
}

/// How long a browser may keep the explorer's files.
const HOUR: u32 = 3600;
const CSS: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");
const BUNDLE: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");

const EXPLORER: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lanes HTTP API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="explorer"></div>
<script src="/docs/swagger-ui-bundle.js"></script><script src="/docs/init.js"></script>
</body></html>"#;

const INIT: &str =
    r##"window.explorer = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#explorer" });"##;

async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}
