//! `blocked_by` of `GET /jobs/{id}`: why a waiting or queued job is not running. The active
//! server's Router says which jobs hold it back (`routing::blockers`); their records add
//! state, worker and order, and an estimated start (`estimate`). A standby, which has no
//! Router, leaves it out.

use super::{
    estimate::{estimate, first_free, Ahead},
    ApiError, ApiState,
};
use crate::{
    server::{
        dispatcher::GetBlockers,
        routing::{Blocked, Held},
    },
    store::{Brief, Job, JobState},
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// The job named by a path segment, and, when it has not started, what holds it back (the
/// fields `blocked_by` gives): what `GET /jobs/{id}` and the job page show.
pub(super) async fn job_and_why(
    state: &ApiState,
    path: &str,
) -> Result<(Job, Option<Value>), ApiError> {
    let id = super::short_id::job_id(&state.store, path).await?;
    let Some(job) = state.store.get(id).await? else {
        return Err(ApiError::NotFound(format!("no job {id}")));
    };
    let waits = matches!(
        job.state,
        JobState::Submitted | JobState::Waiting | JobState::Queued
    );
    let why = match waits {
        true => blocked_by(state, id).await?,
        false => None,
    };
    Ok((job, why))
}

/// The fields to add to the job: `blocked_by`, and its place in the waiting line or lane.
pub(super) async fn blocked_by(state: &ApiState, id: Uuid) -> Result<Option<Value>, ApiError> {
    let Some((dispatcher, _)) = state.active.get() else {
        return Ok(None);
    };
    let Some(blocked) = dispatcher.send(GetBlockers(id)).await? else {
        return Ok(None);
    };
    let ids: Vec<Uuid> = match &blocked {
        Blocked::Waiting { by, held, .. } => by
            .iter()
            .map(|b| b.job)
            .chain(held.iter().flat_map(|(_, h)| held_jobs(h)))
            .collect(),
        Blocked::Routed { with, .. } => with.iter().map(|(j, _)| *j).chain([id]).collect(),
    };
    let briefs: HashMap<Uuid, Brief> = state
        .store
        .briefs(&ids)
        .await?
        .into_iter()
        .map(|b| (b.id, b))
        .collect();
    let shown = |job: &Uuid, resource: Option<&str>, lane: Option<String>, position: usize| {
        let brief = briefs.get(job);
        json!({
            "id": job, "resource": resource, "position": position,
            "state": brief.map(|b| b.state),
            "lane": lane.or_else(|| brief.and_then(|b| b.queue.clone())),
            "worker": brief.and_then(|b| b.worker.clone()),
        })
    };
    let means = state.run_times.means(&state.store).await?;
    let ahead_of =
        |jobs: &[(Uuid, Option<&str>)]| estimate(&aheads(jobs, &briefs), &means, Utc::now());
    Ok(Some(match blocked {
        Blocked::Waiting { position, by, held } => {
            let list: Vec<Value> = by
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    shown(
                        &b.job,
                        Some(&b.resource),
                        b.lane.map(|l| state.topo.lane(l)),
                        i,
                    )
                })
                .collect();
            let jobs: Vec<(Uuid, Option<&str>)> = by
                .iter()
                .map(|b| (b.job, Some(b.resource.as_str())))
                .collect();
            let mut start = ahead_of(&jobs);
            let held = held.map(|(resource, held)| {
                // Not before the limit lets it go (unknown when a holder's task has no
                // recent run to go by).
                let free = match &held {
                    Held::Slots { by, .. } => {
                        let holders: Vec<(Uuid, Option<&str>)> =
                            by.iter().map(|j| (*j, Some(resource.as_str()))).collect();
                        first_free(&aheads(&holders, &briefs), &means, Utc::now())
                    }
                    Held::Rate { until_ms } => at_ms(*until_ms),
                    Held::Starting(_) => start,
                };
                start = start.zip(free).map(|(s, f)| s.max(f));
                held_json(&resource, &held)
            });
            json!({"waiting_position": position, "blocked_by": list, "held": held,
                   "estimated_start": start})
        }
        Blocked::Routed { lane, with } => {
            // Ahead in the lane: submitted (recorded) before this one.
            let mine = briefs.get(&id).map(|b| b.seq).unwrap_or(i64::MAX);
            let mut ahead: Vec<(i64, Uuid, Option<String>)> = with
                .into_iter()
                .filter_map(|(job, res)| Some((briefs.get(&job)?.seq, job, res)))
                .filter(|(seq, _, _)| *seq < mine)
                .collect();
            ahead.sort();
            let lane = state.topo.lane(lane);
            let list: Vec<Value> = ahead
                .iter()
                .enumerate()
                .map(|(i, (_, job, res))| shown(job, res.as_deref(), Some(lane.clone()), i))
                .collect();
            let jobs: Vec<(Uuid, Option<&str>)> =
                ahead.iter().map(|(_, j, _)| (*j, None)).collect();
            json!({"lane_position": list.len(), "blocked_by": list,
                   "estimated_start": ahead_of(&jobs)})
        }
    }))
}

/// The jobs of `jobs` whose records were found, as the estimate takes them.
fn aheads<'a>(
    jobs: &[(Uuid, Option<&'a str>)],
    briefs: &'a HashMap<Uuid, Brief>,
) -> Vec<Ahead<'a>> {
    jobs.iter()
        .filter_map(|(job, resource)| {
            let b = briefs.get(job)?;
            Some(Ahead {
                task: &b.task,
                state: b.state,
                started_at: b.started_at,
                resource: *resource,
            })
        })
        .collect()
}

/// The jobs a limit's reason names.
fn held_jobs(held: &Held) -> Vec<Uuid> {
    match held {
        Held::Starting(job) => vec![*job],
        Held::Slots { by, .. } => by.clone(),
        Held::Rate { .. } => Vec::new(),
    }
}

fn at_ms(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms as i64)
}

/// Why a limited resource holds a waiter back, as `GET /jobs/{id}` shows it in `held`.
fn held_json(resource: &str, held: &Held) -> Value {
    match held {
        Held::Starting(job) => json!({"resource": resource, "reason": "starting",
            "jobs": [job]}),
        Held::Slots { slots, by } => json!({"resource": resource, "reason": "slots",
            "slots": slots, "jobs": by}),
        Held::Rate { until_ms } => json!({"resource": resource, "reason": "rate",
            "until": at_ms(*until_ms)}),
    }
}
