//! `blocked_by` of `GET /jobs/{id}`: why a waiting or queued job is not running. The active
//! server's Router says which jobs hold it back (`routing::blockers`); their records add
//! state, worker and order. A standby, which has no Router, leaves it out.

use super::{ApiError, ApiState};
use crate::{
    server::{dispatcher::GetBlockers, routing::Blocked},
    store::{Brief, Job, JobState},
};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// The job named by a path segment, and, when it has not started, what holds it back (the
/// fields `blocked_by` gives): what `GET /jobs/{id}` and the job page show.
pub(super) async fn job_and_why(
    state: &ApiState,
    path: &str,
) -> Result<(Job, Option<Value>), ApiError> {
    let id = Uuid::parse_str(path)
        .map_err(|_| ApiError::BadRequest("job id must be a UUID".to_owned()))?;
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
        Blocked::Waiting { by, .. } => by.iter().map(|b| b.job).collect(),
        Blocked::Routed { with, .. } => with.iter().map(|(j, _)| *j).chain([id]).collect(),
    };
    let briefs: HashMap<Uuid, Brief> = state
        .store
        .briefs(&ids)
        .await?
        .into_iter()
        .map(|b| (b.0, b))
        .collect();
    let shown = |job: &Uuid, resource: Option<&str>, lane: Option<String>, position: usize| {
        let brief = briefs.get(job);
        json!({
            "id": job, "resource": resource, "position": position,
            "state": brief.map(|b| b.2),
            "lane": lane.or_else(|| brief.and_then(|b| b.4.clone())),
            "worker": brief.and_then(|b| b.3.clone()),
        })
    };
    Ok(Some(match blocked {
        Blocked::Waiting { position, by } => {
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
            json!({"waiting_position": position, "blocked_by": list})
        }
        Blocked::Routed { lane, with } => {
            // Ahead in the lane: submitted (recorded) before this one.
            let mine = briefs.get(&id).map(|b| b.1).unwrap_or(i64::MAX);
            let mut ahead: Vec<(i64, Uuid, Option<String>)> = with
                .into_iter()
                .filter_map(|(job, res)| Some((briefs.get(&job)?.1, job, res)))
                .filter(|(seq, _, _)| *seq < mine)
                .collect();
            ahead.sort();
            let lane = state.topo.lane(lane);
            let list: Vec<Value> = ahead
                .iter()
                .enumerate()
                .map(|(i, (_, job, res))| shown(job, res.as_deref(), Some(lane.clone()), i))
                .collect();
            json!({"lane_position": list.len(), "blocked_by": list})
        }
    }))
}
