//! The Dispatcher's decisions, as pure code: what a batch of submit messages becomes (`plan`:
//! classify, route in submit order, the rows to insert and the messages to send), what the
//! insert's answer changes (`settle`: jobs the database already had leave the Router, and the
//! waiters they blocked may go), and what a restart recovers (`recover`). The actor around it
//! (`mod.rs`) only does the I/O.

use crate::{
    broker::Topology,
    protocol::{job_id_from_message_id, parse_submit, Invalid, TaskSpec},
    server::routing::{Decision, Router, Target},
    storable::{sanitize, storable},
    store::{JobState, NewJob, Unfinished},
};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One submit message, as the plan needs it.
pub struct Incoming<'a> {
    pub message_id: Option<&'a str>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    pub body: &'a [u8],
    /// Without a message id: the message's digest, and the job id given to it (a fresh one,
    /// or its first job's when it is a redelivery with a mark, see `store::marks`).
    pub idless: Option<(Uuid, Uuid)>,
    /// Who submitted it (see `submitted_by`).
    pub submitted_by: Option<String>,
}

/// A submit message that did not pass validation: dead-lettered with its reason, and recorded
/// `failed` when it named its job id.
#[derive(Debug)]
pub struct Rejected {
    pub id: Option<Uuid>,
    pub reason: Invalid,
    /// The body, cut at the payload limit.
    pub body: Vec<u8>,
}

/// What to do with one batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// One insert: routed jobs `submitted` with their lane, the rest `waiting`, invalid ones
    /// `failed`.
    pub rows: Vec<NewJob>,
    /// Jobs to publish to their lanes once recorded.
    pub routed: Vec<(TaskSpec, Target)>,
    /// The accepted jobs' ids: those the insert does not report as new were recorded before.
    pub accepted: Vec<Uuid>,
    pub rejected: Vec<Rejected>,
    /// Messages for a job this batch or the Router holds already.
    pub duplicates: usize,
    /// (job, digest) of the accepted jobs whose messages had no id: marked until acked.
    pub marks: Vec<(Uuid, Uuid)>,
    /// The earliest due time among the jobs recorded `scheduled`.
    pub first_due: Option<DateTime<Utc>>,
}

/// Classifies and routes a batch, in submit order; a job due later (`run_at` after `now`) is
/// recorded `scheduled` and left out of routing until then. `known_task` says whether a task
/// name is offered by someone.
pub fn plan(
    batch: &[Incoming],
    router: &mut Router<TaskSpec>,
    topo: &Topology,
    max_payload: usize,
    now: DateTime<Utc>,
    known_task: impl Fn(&str) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let mut seen = HashSet::with_capacity(batch.len());
    for m in batch {
        let given = m.message_id.map(job_id_from_message_id);
        let id = given
            .or(m.idless.map(|(id, _)| id))
            .unwrap_or_else(Uuid::now_v7);
        if !seen.insert(id) {
            plan.duplicates += 1;
            continue;
        }
        let properties = [
            (&m.reply_to, "property `reply_to`"),
            (&m.correlation_id, "property `correlation_id`"),
        ];
        let checked = match properties
            .into_iter()
            .find(|(p, _)| p.as_deref().is_some_and(|p| !storable(p)))
        {
            Some((_, what)) => Err(Invalid::Nul(what)),
            // Replies go through the default exchange: never into lanes' own queues.
            None if m.reply_to.as_deref().is_some_and(|q| topo.owns(q)) => {
                Err(Invalid::ReplyToOwnQueue(topo.prefix.clone()))
            }
            None => parse_submit(m.body, id, max_payload, now, &known_task),
        };
        let spec = match checked {
            Ok(spec) => spec,
            Err(reason) => {
                plan.rejected.push(Rejected {
                    id: given,
                    reason,
                    body: m.body[..m.body.len().min(max_payload)].to_vec(),
                });
                continue;
            }
        };
        if router.knows(&id) {
            plan.duplicates += 1;
            continue;
        }
        let mut row = new_row(&spec, m.reply_to.clone(), m.correlation_id.clone());
        row.submitted_by = m.submitted_by.clone();
        if let Some(at) = spec.run_at.filter(|at| *at > now) {
            row.state = JobState::Scheduled;
            plan.first_due = Some(plan.first_due.map_or(at, |first| first.min(at)));
            plan.accepted.push(id);
            plan.rows.push(row);
            if let (None, Some((_, digest))) = (given, m.idless) {
                plan.marks.push((id, digest));
            }
            continue;
        }
        match router.submit(id, &row.resources, spec) {
            Decision::Routed(spec, target) => {
                row.queue = Some(target.queue(topo));
                plan.routed.push((spec, target));
            }
            Decision::Waiting => {
                row.state = JobState::Waiting;
                park_light(router, &id);
            }
        }
        plan.accepted.push(id);
        plan.rows.push(row);
        if let (None, Some((_, digest))) = (given, m.idless) {
            plan.marks.push((id, digest));
        }
    }
    plan.rows.extend(plan.rejected.iter().filter_map(|r| {
        Some(NewJob {
            error: Some(format!("invalid submit message: {}", r.reason)),
            state: JobState::Failed,
            max_attempts: 0,
            ..new_row(&empty_spec(r.id?), None, None)
        })
    }));
    plan
}

/// The batch after its insert: what to send.
#[derive(Debug, Default)]
pub struct Settled {
    /// The batch's own jobs, recorded with their lanes.
    pub routed: Vec<(TaskSpec, Target)>,
    /// Waiters woken by jobs the database already had: recorded `waiting`, so their lanes
    /// are recorded before they are sent.
    pub woken: Vec<(TaskSpec, Target)>,
    /// Jobs recorded by this insert.
    pub new: usize,
    /// Messages for jobs that existed already (in the batch, the Router or the database).
    pub duplicates: usize,
}

/// Applies the insert's answer to a batch's plan: jobs the database recorded before leave
/// the Router, and rows it refused (with the reason) leave it too and are set aside as dead
/// letters (the row as it was to be stored) with a `failed` row of their own; the waiters
/// either kind blocked may go.
pub fn settle(
    plan: &mut Plan,
    inserted: &[Uuid],
    refused: &[(NewJob, String)],
    router: &mut Router<TaskSpec>,
) -> Settled {
    let new: HashSet<&Uuid> = inserted.iter().collect();
    let refused_ids: HashSet<Uuid> = refused.iter().map(|(row, _)| row.id).collect();
    let known: HashSet<Uuid> = plan
        .accepted
        .iter()
        .filter(|id| !new.contains(id) && !refused_ids.contains(id))
        .copied()
        .collect();
    let routed: Vec<_> = std::mem::take(&mut plan.routed)
        .into_iter()
        .filter(|(spec, _)| !known.contains(&spec.id) && !refused_ids.contains(&spec.id))
        .collect();
    for (row, reason) in refused {
        plan.rejected.push(Rejected {
            id: Some(row.id),
            reason: Invalid::Refused(sanitize(reason.clone())),
            body: serde_json::to_vec(&serde_json::json!({
                "task": row.task, "args": row.args, "resources": row.resources,
                "max_attempts": row.max_attempts, "timeout_ms": row.timeout_ms,
                "reply_to": row.reply_to, "correlation_id": row.correlation_id,
            }))
            .expect("JSON serializes"),
        });
    }
    // A job leaving may wake another that leaves too: only those that stay are sent.
    let gone: HashSet<Uuid> = known.iter().chain(&refused_ids).copied().collect();
    let woken = release(router, &gone)
        .into_iter()
        .filter(|(spec, _)| !gone.contains(&spec.id))
        .collect();
    Settled {
        routed,
        woken,
        new: inserted.len(),
        duplicates: plan.duplicates + known.len(),
    }
}

/// The `failed` rows that record jobs the database refused, each with its reason.
pub fn refused_rows(refused: &[(NewJob, String)]) -> Vec<NewJob> {
    refused
        .iter()
        .map(|(row, reason)| NewJob {
            error: Some(format!("{}", Invalid::Refused(sanitize(reason.clone())))),
            state: JobState::Failed,
            max_attempts: 0,
            ..new_row(&empty_spec(row.id), None, None)
        })
        .collect()
}

/// Takes jobs out of the Router (they ended, or the database already had them); returns the
/// waiters that can go now, with their targets.
pub fn release<'a>(
    router: &mut Router<TaskSpec>,
    ids: impl IntoIterator<Item = &'a Uuid>,
) -> Vec<(TaskSpec, Target)> {
    ids.into_iter().flat_map(|id| router.finish(id)).collect()
}

/// What a restarted Dispatcher does with the unfinished jobs of the table.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Jobs recorded `submitted` with a queue: their message may or may not be there (the
    /// previous control plane died between recording and confirming it), so a copy goes to
    /// the same queue, never another lane, and asks the server before it runs.
    pub resend: Vec<(TaskSpec, Target)>,
    /// Waiting jobs that can go now: they have no message anywhere yet.
    pub publish: Vec<(TaskSpec, Target)>,
}

/// Rebuilds the Router from the unfinished jobs, in submit order: jobs with a lane (`queued`,
/// `running`, or `submitted` to it) keep it and reserve their resources there; `waiting` ones
/// are routed afresh.
pub fn recover(rows: Vec<Unfinished>, router: &mut Router<TaskSpec>, topo: &Topology) -> Recovery {
    let mut out = Recovery::default();
    for row in rows {
        let target = match row.queue.as_deref() {
            Some(q) if q == topo.default_queue() => Some(Target::Default),
            // A lane beyond the pool (the limit was lowered) is not one the Router can hold.
            Some(q) => topo
                .lane_index(q)
                .filter(|n| *n < router.max_lanes())
                .map(Target::Lane),
            None => None,
        };
        match (row.state, target) {
            (JobState::Queued | JobState::Running, Some(Target::Lane(lane))) => {
                let started = row.state == JobState::Running;
                router.restore(row.id, &row.resources, lane, started);
            }
            (JobState::Submitted, Some(target)) => {
                if let Target::Lane(lane) = target {
                    router.restore(row.id, &row.resources, lane, false);
                }
                out.resend.push((spec_of(row), target));
            }
            (JobState::Submitted | JobState::Waiting, _) => {
                let spec = spec_of(row);
                let resources = spec.resources.clone();
                let id = spec.id;
                match router.submit(id, &resources, spec) {
                    Decision::Routed(spec, target) => out.publish.push((spec, target)),
                    Decision::Waiting => park_light(router, &id),
                }
            }
            _ => {}
        }
    }
    out
}

/// A task in the waiting line keeps its arguments in the table, not in memory: however long
/// the line grows, it holds ids, names and resources only. Sending it (`fill_args`) reads them
/// back in the statement that records its lane.
fn park_light(router: &mut Router<TaskSpec>, id: &Uuid) {
    if let Some(spec) = router.waiting_task_mut(id) {
        spec.args = serde_json::Value::Null;
    }
}

/// Gives tasks that left the waiting line their arguments, as the table holds them.
pub fn fill_args(jobs: &mut [(TaskSpec, Target)], args: &mut HashMap<Uuid, serde_json::Value>) {
    for (spec, _) in jobs {
        if let Some(a) = args.remove(&spec.id) {
            spec.args = a;
        }
    }
}

/// The task of a recorded job.
pub fn spec_of(row: Unfinished) -> TaskSpec {
    TaskSpec {
        id: row.id,
        task: row.task,
        args: row.args.unwrap_or_default(),
        resources: row.resources,
        max_attempts: row.max_attempts,
        timeout_ms: row.timeout_ms.map(|t| t as u64),
        run_at: None,
    }
}

pub fn new_row(
    spec: &TaskSpec,
    reply_to: Option<String>,
    correlation_id: Option<String>,
) -> NewJob {
    NewJob {
        id: spec.id,
        task: spec.task.clone(),
        args: spec.args.clone(),
        resources: spec.resources.clone(),
        max_attempts: spec.max_attempts,
        state: JobState::Submitted,
        queue: None,
        error: None,
        reply_to,
        correlation_id,
        timeout_ms: spec.timeout_ms.map(|t| t as i64),
        submitted_by: None,
        run_at: spec.run_at,
    }
}

/// Who submitted a message: the API's token name, which the API puts in the header
/// `x-lanes-submitted-by`, is taken only from a message whose `user_id` (which the broker
/// checks against the publishing connection's user) is the server's own broker user; any other
/// publisher is `amqp:<its user_id>`, or `amqp`.
pub fn submitted_by(
    user_id: Option<&str>,
    header: Option<&str>,
    server_user: Option<&str>,
) -> Option<String> {
    match (user_id, header) {
        (Some(u), Some(name)) if Some(u) == server_user => Some(name.to_owned()),
        (Some(u), _) => Some(format!("amqp:{u}")),
        (None, _) => Some("amqp".to_owned()),
    }
}

pub fn empty_spec(id: Uuid) -> TaskSpec {
    TaskSpec {
        id,
        task: String::new(),
        args: serde_json::Value::Null,
        resources: Vec::new(),
        max_attempts: 0,
        timeout_ms: None,
        run_at: None,
    }
}

#[cfg(test)]
mod tests;
