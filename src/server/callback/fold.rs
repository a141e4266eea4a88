//! Folding a batch of worker events, as pure code: per job, what the batch changes (started
//! attempts, progress, the first final event), plus the workers' news (online, heartbeat,
//! offline), their questions about redelivered tasks and the tasks they handed back unstarted.
//! What workers report is made storable here (`storable`): a result with a NUL in it must not
//! fail its whole batch.

use crate::{
    protocol::Event,
    server::supervisor::WorkerEvent,
    storable::{sanitize, sanitize_json},
    store::{End, JobState, JobUpdate},
};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// An events message carries one event, or several (a JSON array) when a worker batched them.
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, serde_json::Error> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        serde_json::from_slice(body)
    } else {
        serde_json::from_slice(body).map(|e| vec![e])
    }
}

/// A batch of events, folded.
#[derive(Debug, Default)]
pub struct Folded {
    pub updates: Vec<JobUpdate>,
    pub workers: Vec<WorkerEvent>,
    /// Workers asking what is recorded for a task redelivered to them: (job, worker).
    pub asks: Vec<(Uuid, String)>,
    /// Jobs a live worker handed back to the broker without starting them.
    pub handed_back: Vec<Uuid>,
    /// Lanes a live worker let go of with nothing of it unsettled.
    pub clean_lanes: Vec<String>,
    /// The task names workers offered in the batch.
    pub tasks: BTreeSet<String>,
}

/// Folds a batch of events, in arrival order, into per-job updates and worker news. The first
/// final event of a job wins; a job that ended keeps no progress of the batch.
pub fn collapse(events: Vec<Event>) -> Folded {
    let mut jobs: HashMap<Uuid, JobUpdate> = HashMap::new();
    let mut workers = Vec::new();
    let mut asks = Vec::new();
    let mut handed_back = Vec::new();
    let mut clean_lanes = Vec::new();
    let mut tasks = BTreeSet::new();
    let ended = |jobs: &mut HashMap<Uuid, JobUpdate>, job, worker: String, end: End| {
        let u = jobs.entry(job).or_insert_with(|| JobUpdate::new(job));
        if u.end.is_none() {
            u.end = Some(end);
            u.worker = Some(sanitize(worker));
        }
    };
    for e in events {
        match e {
            Event::Started {
                job,
                worker,
                at,
                attempt,
            } => {
                let u = jobs.entry(job).or_insert_with(|| JobUpdate::new(job));
                u.attempt = u.attempt.max(attempt);
                u.started_at.get_or_insert(at);
                if u.end.is_none() {
                    u.worker = Some(sanitize(worker));
                }
            }
            Event::Progress { job, progress: p } => {
                let u = jobs.entry(job).or_insert_with(|| JobUpdate::new(job));
                let p = serde_json::to_value(p).expect("progress serializes");
                u.progress = Some(sanitize_json(p));
            }
            Event::Completed {
                job,
                worker,
                result,
                at,
                ..
            } => {
                let end = End {
                    state: JobState::Completed,
                    result: Some(sanitize_json(result)),
                    error: None,
                    at,
                };
                ended(&mut jobs, job, worker, end);
            }
            Event::Failed {
                job,
                worker,
                error,
                at,
                ..
            } => {
                let end = End {
                    state: JobState::Failed,
                    result: None,
                    error: Some(sanitize(error)),
                    at,
                };
                ended(&mut jobs, job, worker, end);
            }
            Event::Canceled {
                job, worker, at, ..
            } => {
                let end = End {
                    state: JobState::Canceled,
                    result: None,
                    error: Some("canceled".to_owned()),
                    at,
                };
                ended(&mut jobs, job, worker, end);
            }
            Event::Online(info) => {
                tasks.extend(info.tasks.iter().cloned());
                workers.push(WorkerEvent::Online(info));
            }
            Event::Heartbeat {
                worker,
                lanes,
                running,
                tasks: offered,
                control,
                slots,
                ..
            } => {
                tasks.extend(offered);
                workers.push(WorkerEvent::Heartbeat {
                    worker,
                    lanes,
                    running,
                    control,
                    slots,
                });
            }
            Event::Offline { worker } => workers.push(WorkerEvent::Offline { worker }),
            Event::Redelivered { job, worker } => asks.push((job, worker)),
            Event::HandedBack { jobs, lane, .. } => {
                handed_back.extend(jobs);
                clean_lanes.extend(lane);
            }
        }
    }
    let mut updates: Vec<JobUpdate> = jobs.into_values().collect();
    for u in updates.iter_mut().filter(|u| u.end.is_some()) {
        u.progress = None;
    }
    Folded {
        updates,
        workers,
        asks,
        handed_back,
        clean_lanes,
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    #[test]
    fn a_batch_collapses_per_job_and_the_first_final_wins() {
        let (job, at) = (Uuid::new_v4(), Utc::now());
        let started = |attempt| Event::Started {
            job,
            worker: "w".into(),
            attempt,
            at,
        };
        let events = vec![
            started(1),
            started(2),
            Event::Completed {
                job,
                worker: "w".into(),
                result: json!(1),
                attempt: 2,
                at,
            },
            Event::Failed {
                job,
                worker: "w".into(),
                error: "late".into(),
                attempt: 3,
                at,
            },
            Event::Offline { worker: "w".into() },
            Event::Redelivered {
                job,
                worker: "w2".into(),
            },
        ];
        let Folded {
            updates: u,
            workers: news,
            asks,
            tasks,
            ..
        } = collapse(events);
        assert!(tasks.is_empty());
        assert_eq!(asks, vec![(job, "w2".to_owned())]);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].attempt, 2);
        let end = u[0].end.as_ref().unwrap();
        assert_eq!(end.state, JobState::Completed);
        assert_eq!(end.result, Some(json!(1)));
        assert_eq!(news.len(), 1);
    }
}
