//! The pages about the fleet: lanes (owner, standby, depth, the running task, reserved
//! resources), workers (heartbeat, lanes, held tasks, Drain) and one resource (who holds it,
//! who waits, and a timeline of its recent tasks, where order and exclusion show at a glance)
//! and the dead letters.

use super::{
    html, may_act, refused,
    views::{
        short, span, Bar, Chrome, DeadPage, DeadRow, JobRow, LaneRow, LanesPage, ResourcePage,
        ScheduleRow, SchedulesPage, WorkerRow, WorkersPage,
    },
    Page,
};
use crate::{
    api::{ApiError, ApiState},
    protocol::{resource_kind, spellings},
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
                .filter(|b| {
                    b.state == JobState::Running && b.queue.as_deref() == Some(name.as_str())
                })
                .map(|b| (b.id.to_string(), short(&b.id.to_string())))
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
    // Its tasks are recorded under any of its spellings.
    let mut lines = Vec::new();
    for spelled in spellings(name) {
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
        .map(|h| match (h.exclusive, h.shared, h.slot) {
            (0, 0, n) => format!("{} ({n} of its slots)", state.topo.lane(h.lane)),
            (0, s, _) => format!("{} (shared by {s})", state.topo.lane(h.lane)),
            _ => format!("{} (exclusive)", state.topo.lane(h.lane)),
        })
        .collect();
    let limit = match state.store.limit(name).await? {
        Some(l) => {
            let rate = l.rate.map(|r| format!(", at most {r}")).unwrap_or_default();
            format!(
                "{} slot{}{rate}",
                l.slots,
                if l.slots == 1 { "" } else { "s" }
            )
        }
        None => "none: one slot".to_owned(),
    };
    // Why the first waiter waits, when the limit holds it back.
    let held = match view.waiting.first() {
        Some(id) => crate::api::blocked::blocked_by(&state, *id)
            .await?
            .and_then(|why| crate::limit::held_in_words(&why["held"]))
            .unwrap_or_default(),
        None => String::new(),
    };
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
        limit,
        held,
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

/// `/ui/schedules`: every schedule, its next runs and the jobs it made last (one read of the
/// jobs for all of them).
pub(super) async fn schedules(state: web::Data<ApiState>, req: HttpRequest) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let all = state.store.schedules().await?;
    let ids: Vec<Vec<uuid::Uuid>> = all
        .iter()
        .map(|s| crate::api::schedules::latest_job_ids(s, 5))
        .collect();
    let every: Vec<uuid::Uuid> = ids.iter().flatten().copied().collect();
    let jobs: HashMap<uuid::Uuid, crate::store::Job> = state
        .store
        .jobs_by_ids(&every)
        .await?
        .into_iter()
        .map(|j| (j.id, j))
        .collect();
    let time = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let rows = all
        .into_iter()
        .zip(ids)
        .map(|(stored, ids)| {
            let view = crate::api::schedules::ScheduleView::of(stored);
            ScheduleRow {
                next: view.next.iter().take(3).map(|t| time(*t)).collect(),
                jobs: ids
                    .iter()
                    .filter_map(|id| jobs.get(id))
                    .map(|j| {
                        let at = j.run_at.map(time).unwrap_or_default();
                        (j.id.to_string(), at, j.state.as_str())
                    })
                    .collect(),
                state: if view.schedule.paused {
                    "paused"
                } else {
                    "active"
                },
                name: view.schedule.name,
                cron: view.schedule.cron,
                tz: view.schedule.tz,
                task: view.schedule.task,
            }
        })
        .collect();
    html(SchedulesPage {
        c: Chrome::new("schedules", &state),
        rows,
    })
}
