//! The overview, the job list and one job's page.

use super::{
    html, may_act, refused,
    views::{
        encode, short, BlockerRow, Chrome, JobPage, JobRow, JobsPage, LiveFigures, Minute,
        OverviewPage, StateCount,
    },
    Page,
};
use crate::{
    api::{
        blocked,
        short_id::{self, JobRef},
        ApiState,
    },
    server::{dispatcher::GetStats, supervisor::ListWorkers},
    store::{JobFilter, JobState, PageQuery},
};
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use chrono::{Duration, DurationRound, Utc};
use serde::Deserialize;
use serde_json::Value;

/// How many of the newest jobs the overview counts (an index walk of this many rows).
const RECENT: i64 = 5_000;
/// Minutes of the throughput chart.
const MINUTES: i64 = 10;

/// `/`: live figures, the newest jobs by state, and what ended in each recent minute.
pub(super) async fn overview(state: web::Data<ApiState>, req: HttpRequest) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let live = match state.active.get() {
        Some((dispatcher, supervisor)) => {
            let stats = dispatcher.send(GetStats).await?;
            let workers = supervisor.send(ListWorkers).await?;
            Some(LiveFigures {
                workers: workers.len(),
                lanes: stats.loads.len(),
                waiting: stats.waiting,
                reserved: stats.reserved,
            })
        }
        None => None,
    };
    let recent = state.store.recent(RECENT).await?;
    let counts = JobState::ALL
        .iter()
        .map(|s| StateCount {
            state: s.as_str(),
            count: recent.iter().filter(|(r, _)| r == s).count(),
        })
        .collect();
    let now = Utc::now()
        .duration_trunc(Duration::minutes(1))
        .unwrap_or_else(|_| Utc::now());
    let mut minutes: Vec<Minute> = (0..MINUTES)
        .rev()
        .map(|i| {
            let start = now - Duration::minutes(i);
            let ended = |s: JobState| {
                recent
                    .iter()
                    .filter(|(r, f)| {
                        *r == s && f.is_some_and(|f| f >= start && f < start + Duration::minutes(1))
                    })
                    .count()
            };
            Minute {
                label: start.format("%H:%M").to_string(),
                completed: ended(JobState::Completed),
                failed: ended(JobState::Failed),
                completed_pct: 0,
                failed_pct: 0,
            }
        })
        .collect();
    let top = minutes
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    for m in &mut minutes {
        m.completed_pct = m.completed * 100 / top;
        m.failed_pct = m.failed * 100 / top;
    }
    html(OverviewPage {
        c: Chrome::new("overview", &state),
        live,
        // Fewer than asked for: that is every job. Else the planner's estimate.
        rows: match recent.len() < RECENT as usize {
            true => recent.len().to_string(),
            false => format!("≈ {}", state.store.estimated_rows().await?.max(RECENT)),
        },
        recent: recent.len(),
        counts,
        minutes,
    })
}

#[derive(Deserialize)]
pub(super) struct JobsQuery {
    state: Option<String>,
    task: Option<String>,
    resource: Option<String>,
    before: Option<i64>,
}

/// An empty form field is no filter.
fn given(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// `/ui/jobs`: newest first, filtered, 50 a page.
pub(super) async fn jobs(
    state: web::Data<ApiState>,
    req: HttpRequest,
    q: web::Query<JobsQuery>,
) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let filter = JobFilter {
        state: given(&q.state).filter(|s| s.parse::<JobState>().is_ok()),
        task: given(&q.task),
        resource: given(&q.resource),
        limit: Some(50),
    };
    let lines = state
        .store
        .page(&PageQuery {
            filter: filter.clone(),
            before: q.before,
        })
        .await?;
    let older = (lines.len() == 50).then(|| {
        let mut url = String::from("/ui/jobs?");
        let filters = [
            ("state", &filter.state),
            ("task", &filter.task),
            ("resource", &filter.resource),
        ];
        for (k, v) in filters {
            if let Some(v) = v {
                url.push_str(&format!("{k}={}&", encode(v)));
            }
        }
        format!("{url}before={}", lines[lines.len() - 1].seq)
    });
    html(JobsPage {
        c: Chrome::new("jobs", &state),
        rows: lines.iter().map(JobRow::from).collect(),
        state: filter.state.unwrap_or_default(),
        task: filter.task.unwrap_or_default(),
        resource: filter.resource.unwrap_or_default(),
        states: JobState::ALL.iter().map(|s| s.as_str()).collect(),
        older,
    })
}

/// `/ui/jobs/{id}`: everything about one job, and what holds it back.
pub(super) async fn job(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Page {
    if let Some(to) = refused(&state, &req) {
        return Ok(to);
    }
    let (job, why) = blocked::job_and_why(&state, &path).await?;
    let id = job.id;
    let steers = state.store.steers(id).await?;
    let (mut position, blocked) = in_words(why.as_ref());
    if let (JobState::Scheduled, Some(at)) = (job.state, job.run_at) {
        position = format!(
            "scheduled: joins its resources' order at {}",
            at.to_rfc3339()
        );
    }
    let pretty = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
            .unwrap_or_default()
    };
    let time = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    html(JobPage {
        c: Chrome::new("jobs", &state),
        id: id.to_string(),
        task: job.task.clone(),
        state: job.state.as_str(),
        resources: job.resources.clone(),
        attempts: format!("{} of {}", job.attempts, job.max_attempts),
        worker: job.worker.clone().unwrap_or_default(),
        queue: job.queue.clone().unwrap_or_default(),
        submitted_by: job.submitted_by.clone().unwrap_or_default(),
        steers: steers
            .iter()
            .map(|s| {
                let by = s.by.as_deref().unwrap_or("someone");
                format!("{} by {by} at {}", s.action, s.at.to_rfc3339())
            })
            .collect(),
        times: vec![
            ("created", job.created_at.to_rfc3339()),
            ("due", time(job.run_at)),
            ("queued", time(job.queued_at)),
            ("started", time(job.started_at)),
            ("finished", time(job.finished_at)),
            ("updated", job.updated_at.to_rfc3339()),
        ],
        args: pretty(&job.args),
        result: pretty(&job.result),
        error: job.error.clone().unwrap_or_default(),
        progress: pretty(&job.progress),
        position,
        blocked,
        can_cancel: !job.state.is_final(),
        can_retry: matches!(job.state, JobState::Failed | JobState::Canceled),
        may_act: may_act(&state, &req),
    })
}

/// `blocked_by` as the page shows it.
fn in_words(why: Option<&Value>) -> (String, Vec<BlockerRow>) {
    let Some(why) = why else {
        return (String::new(), Vec::new());
    };
    let mut position = match (
        why["waiting_position"].as_u64(),
        why["lane_position"].as_u64(),
    ) {
        (Some(p), _) => format!("number {} in the waiting line", p + 1),
        (_, Some(p)) => format!("{p} ahead of it in its lane"),
        _ => String::new(),
    };
    if let Some(held) = crate::limit::held_in_words(&why["held"]) {
        position = format!("{position}; {held}");
    }
    if let Some(at) = why["estimated_start"].as_str() {
        position = format!("{position}; estimated start {at}");
    }
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let rows = why["blocked_by"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| BlockerRow {
            id: text(&b["id"]),
            short: short(&text(&b["id"])),
            state: text(&b["state"]),
            resource: text(&b["resource"]),
            lane: text(&b["lane"]),
            worker: text(&b["worker"]),
        })
        .collect();
    (position, rows)
}

#[derive(Deserialize)]
pub(super) struct Find {
    q: Option<String>,
}

/// The search box: a job id, or a unique prefix of one, opens the job; anything else the
/// resource of that name.
pub(super) async fn find(
    state: web::Data<ApiState>,
    req: HttpRequest,
    q: web::Query<Find>,
) -> HttpResponse {
    if let Some(to) = refused(&state, &req) {
        return to;
    }
    let q = q.q.as_deref().unwrap_or_default().trim();
    let job = match JobRef::parse(q) {
        Ok(JobRef::Full(id)) => Some(id),
        Ok(JobRef::Prefix { .. }) => short_id::job_id(&state.store, q).await.ok(),
        Err(_) => None,
    };
    let to = match job {
        Some(id) => format!("/ui/jobs/{id}"),
        None if q.is_empty() => "/ui/jobs".to_owned(),
        None => format!("/ui/resources?name={}", encode(q)),
    };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}
