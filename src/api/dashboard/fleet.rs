//! The pages about the fleet: lanes (owner, standby, depth, the running task, reserved
//! resources), workers (heartbeat, lanes, held tasks, Drain) and one resource (who holds it,
//! who waits, and a timeline of its recent tasks, where order and exclusion show at a glance)
//! and the dead letters.

use super::{
    html, may_act, refused,
    views::{
        short, span, Bar, Chrome, DeadPage, DeadRow, JobRow, LaneRow, LanesPage, ResourcePage,
        WorkerRow, WorkersPage,
    },
    Page,
};
use crate::{
    api::{ApiError, ApiState},
    protocol::resource_kind,
    server::{
        dispatcher::{GetLanes, GetResource, GetStats},
        routing::ResourceView,
        supervisor::ListWorkers,
    },
    store::{JobFilter, JobState, PageQuery},
};
use actix_web::{web, HttpRequest};
use chrono::Utc;
use serde::Deserialize;
use std::collections::HashMap;

/// `/ui/lanes`: the open lanes as the Router and the Supervisor hold them.
pub(super) async fn lanes(state: web::Data<ApiState>, req: HttpRequest) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let c = Chrome::new("lanes", &state);
    let Some((dispatcher, supervisor)) = state.active.get() else {
        return html(LanesPage {
            c,
            lanes: Vec::new(),
            waiting: 0,
        });
    };
    let (views, stats, workers) = (
        dispatcher.send(GetLanes).await?,
        dispatcher.send(GetStats).await?,
        supervisor.send(ListWorkers).await?,
    );
    let mut owner: HashMap<&str, &str> = HashMap::new();
    let mut standby: HashMap<&str, &str> = HashMap::new();
    for w in &workers {
        owner.extend(w.assigned.iter().map(|l| (l.as_str(), w.id.as_str())));
        standby.extend(w.standby.iter().map(|l| (l.as_str(), w.id.as_str())));
    }
    // What runs: the tasks the workers' heartbeats list (a few), placed by their lanes; not
    // every job routed to a lane, which may be hundreds of thousands.
    let running: Vec<_> = workers
        .iter()
        .flat_map(|w| w.running.iter().copied())
        .collect();
    let briefs = state.store.briefs(&running).await?;
    let lanes = views
        .into_iter()
        .map(|v| {
            let name = state.topo.lane(v.lane);
            let running = briefs
                .iter()
                .filter(|b| b.2 == JobState::Running && b.4.as_deref() == Some(name.as_str()))
                .map(|b| (b.0.to_string(), short(&b.0.to_string())))
                .collect();
            LaneRow {
                owner: owner
                    .get(name.as_str())
                    .copied()
                    .unwrap_or("none")
                    .to_owned(),
                standby: standby
                    .get(name.as_str())
                    .copied()
                    .unwrap_or("none")
                    .to_owned(),
                depth: v.load,
                running,
                resources: v.resources,
                name,
            }
        })
        .collect();
    html(LanesPage {
        c,
        lanes,
        waiting: stats.waiting,
    })
}

/// `/ui/workers`: the live workers.
pub(super) async fn workers(state: web::Data<ApiState>, req: HttpRequest) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let c = Chrome::new("workers", &state);
    let may_act = may_act(&state, &req);
    let Some((_, supervisor)) = state.active.get() else {
        return html(WorkersPage {
            c,
            workers: Vec::new(),
            may_act,
        });
    };
    let mut list = supervisor.send(ListWorkers).await?;
    list.sort_by(|a, b| a.id.cmp(&b.id));
    let workers = list
        .into_iter()
        .map(|w| WorkerRow {
            host: w.host.unwrap_or_default(),
            heartbeat: format!(
                "{} ago",
                span(chrono::TimeDelta::milliseconds(w.heartbeat_age_ms as i64))
            ),
            owns: w.assigned.join(", "),
            standby: w.standby.join(", "),
            running: w.running.len(),
            concurrency: w.concurrency.map(|c| c.to_string()).unwrap_or_default(),
            draining: w.draining,
            id: w.id,
        })
        .collect();
    html(WorkersPage {
        c,
        workers,
        may_act,
    })
}

#[derive(Deserialize)]
pub(super) struct ResourceQuery {
    name: Option<String>,
}

/// How many of a resource's newest tasks its page shows.
const TIMELINE: i64 = 40;

/// `/ui/resources?name=`: who holds a resource, who waits, and its recent tasks.
pub(super) async fn resource(
    state: web::Data<ApiState>,
    req: HttpRequest,
    q: web::Query<ResourceQuery>,
) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let Some(given) = q.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
        return Err(ApiError::BadRequest("name a resource: ?name=".to_owned()));
    };
    let (name, _) = resource_kind(given);
    let view = match state.active.get() {
        Some((dispatcher, _)) => dispatcher.send(GetResource(name.to_owned())).await?,
        None => ResourceView::default(),
    };
    // Its tasks are recorded under either spelling.
    let mut lines = Vec::new();
    for spelled in [name.to_owned(), format!("shared:{name}")] {
        let filter = JobFilter {
            resource: Some(spelled),
            limit: Some(TIMELINE),
            ..JobFilter::default()
        };
        lines.extend(
            state
                .store
                .page(&PageQuery {
                    filter,
                    before: None,
                })
                .await?,
        );
    }
    lines.sort_by_key(|l| std::cmp::Reverse(l.seq));
    lines.truncate(TIMELINE as usize);
    let holders = view
        .holders
        .iter()
        .map(|h| match (h.exclusive, h.shared) {
            (0, s) => format!("{} (shared by {s})", state.topo.lane(h.lane)),
            _ => format!("{} (exclusive)", state.topo.lane(h.lane)),
        })
        .collect();
    // The timeline: each run as a bar over the window from the first start to now.
    let starts = lines.iter().filter_map(|l| l.started_at);
    let (from, to) = (starts.min(), Utc::now());
    let bars = match from {
        Some(from) if to > from => {
            let whole = (to - from).num_milliseconds().max(1) as f64;
            let at =
                |t: chrono::DateTime<Utc>| (t - from).num_milliseconds() as f64 * 100.0 / whole;
            lines
                .iter()
                .rev()
                .filter_map(|l| {
                    let start = l.started_at?;
                    let end = l.finished_at.unwrap_or(to);
                    Some(Bar {
                        id: l.id.to_string(),
                        short: short(&l.id.to_string()),
                        state: l.state.as_str(),
                        left: at(start),
                        width: (at(end) - at(start)).max(0.4),
                        label: format!("{} {}", l.task, span(end - start)),
                    })
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let window = from.map(|f| span(to - f)).unwrap_or_default();
    html(ResourcePage {
        c: Chrome::new("resources", &state),
        name: name.to_owned(),
        holders,
        waiting: view
            .waiting
            .iter()
            .map(|id| (id.to_string(), short(&id.to_string())))
            .collect(),
        bars,
        window,
        rows: lines.iter().map(JobRow::from).collect(),
    })
}

/// `/ui/dead`: what the control plane set aside, newest first, with the reasons.
pub(super) async fn dead(state: web::Data<ApiState>, req: HttpRequest) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let rows = state
        .store
        .dead_letters(200)
        .await?
        .into_iter()
        .map(|d| {
            let job = d.job.map(|j| j.to_string()).unwrap_or_default();
            DeadRow {
                at: d.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                source: d.source,
                short: short(&job),
                job,
                reason: d.reason,
                body: d.body,
            }
        })
        .collect();
    html(DeadPage {
        c: Chrome::new("dead", &state),
        rows,
    })
}
