//! Sending what the Dispatcher decided: lane messages (all of a batch handed to lapin at once,
//! in order) and dead letters for refused submits, with the reason in a header.

use super::plan::Rejected;
use crate::store::Store;
use crate::{
    broker::{confirm_all, json_properties, BrokerError, Outgoing, Pending, Publisher, Topology},
    protocol::{LaneMessage, TaskSpec},
    server::{
        dead_letters::{self, DeadLetter, DeadLetterError},
        routing::Target,
    },
};
use uuid::Uuid;

/// Whether a lane message is the job's first, or a copy of one that may exist already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publication {
    First,
    Copy,
}

/// Publishes jobs to their queues with confirms; returns (job, queue) once all are durable.
pub async fn publish_jobs(
    publisher: &Publisher,
    topo: &Topology,
    jobs: &[(TaskSpec, Target)],
    publication: Publication,
) -> Result<Vec<(Uuid, String)>, BrokerError> {
    let (queued, pending) = send_jobs(publisher, topo, jobs, publication).await?;
    confirm_all(pending).await?;
    Ok(queued)
}

/// Sends jobs to their queues, in order; returns (job, queue) and the confirms to wait for.
pub async fn send_jobs(
    publisher: &Publisher,
    topo: &Topology,
    jobs: &[(TaskSpec, Target)],
    publication: Publication,
) -> Result<(Vec<(Uuid, String)>, Vec<Pending>), BrokerError> {
    let queued = queues_of(topo, jobs);
    let messages: Vec<Outgoing> = jobs
        .iter()
        .zip(&queued)
        .map(|((spec, _), (_, queue))| Outgoing {
            exchange: "",
            routing_key: queue,
            body: serde_json::to_vec(&LaneMessage {
                id: spec.id,
                task: spec.task.clone(),
                args: spec.args.clone(),
                max_attempts: spec.max_attempts,
                timeout_ms: spec.timeout_ms,
                copy: publication == Publication::Copy,
            })
            .expect("lane messages serialize"),
            props: json_properties().with_message_id(spec.id.to_string().into()),
        })
        .collect();
    let pending = publisher.send_all(&messages).await?;
    Ok((queued, pending))
}

/// (job, queue) of jobs to send: what their rows record.
pub fn queues_of(topo: &Topology, jobs: &[(TaskSpec, Target)]) -> Vec<(Uuid, String)> {
    jobs.iter()
        .map(|(spec, target)| (spec.id, target.queue(topo)))
        .collect()
}

/// Sends refused submit messages to `<prefix>.dead` with the reason in a header; returns the
/// confirms to wait for.
pub async fn send_dead_letters(
    publisher: &Publisher,
    store: &Store,
    topo: &Topology,
    rejected: &[Rejected],
) -> Result<Vec<Pending>, DeadLetterError> {
    let letters: Vec<DeadLetter> = rejected
        .iter()
        .map(|r| DeadLetter {
            from: "submit",
            job: r.id,
            reason: r.reason.to_string(),
            body: r.body.clone(),
        })
        .collect();
    dead_letters::send(publisher, store, topo, &letters).await
}
