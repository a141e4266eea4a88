//! The Callback actor: consumes `<prefix>.events`, writes job state to Postgres in batches
//! (one transaction per batch, state only moves forward), acks only after the commit, then
//! tells the Dispatcher which jobs ended and the Supervisor what the workers said.

use crate::{
    broker::{json_properties, Outgoing, Publisher, Topology},
    dispatcher::{Dispatcher, JobsEnded, KnownTasks},
    protocol::{Control, Event},
    store::{End, Finished, JobState, JobUpdate, Store},
    supervisor::{Supervisor, WorkerEvent},
};
use actix::prelude::*;
use lapin::{message::Delivery, options::BasicAckOptions, Acker};
use serde_json::json;
use std::{collections::HashMap, time::Duration};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use uuid::Uuid;

pub struct Callback {
    /// Events received and not yet written, and the acker of the last message they came in.
    gathered: Vec<Event>,
    last: Option<Acker>,
    /// A write is scheduled.
    gathering: bool,
    store: Store,
    topo: Topology,
    dispatcher: Addr<Dispatcher>,
    supervisor: Addr<Supervisor>,
    publisher: Publisher,
    tasks: KnownTasks,
    failed: CancellationToken,
}

impl Callback {
    pub fn new(
        store: Store,
        topo: Topology,
        dispatcher: Addr<Dispatcher>,
        supervisor: Addr<Supervisor>,
        publisher: Publisher,
        tasks: KnownTasks,
        failed: CancellationToken,
    ) -> Self {
        Callback {
            gathered: Vec::new(),
            last: None,
            gathering: false,
            store,
            topo,
            dispatcher,
            supervisor,
            publisher,
            tasks,
            failed,
        }
    }
}

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
}

/// Folds a batch of events, in arrival order, into per-job updates and worker news. The first
/// final event of a job wins; a job that ended keeps no progress of the batch.
pub fn collapse(events: Vec<Event>) -> Folded {
    let mut jobs: HashMap<Uuid, JobUpdate> = HashMap::new();
    let mut workers = Vec::new();
    let mut asks = Vec::new();
    let ended = |jobs: &mut HashMap<Uuid, JobUpdate>, job, worker, end: End| {
        let u = jobs.entry(job).or_insert_with(|| JobUpdate::new(job));
        if u.end.is_none() {
            u.end = Some(end);
            u.worker = Some(worker);
        }
    };
    for e in events {
        match e {
            Event::Started {
                job, worker, at, ..
            } => {
                let u = jobs.entry(job).or_insert_with(|| JobUpdate::new(job));
                u.runs += 1;
                u.started_at.get_or_insert(at);
                if u.end.is_none() {
                    u.worker = Some(worker);
                }
            }
            Event::Progress { job, progress: p } => {
                let u = jobs.entry(job).or_insert_with(|| JobUpdate::new(job));
                u.progress = Some(serde_json::to_value(p).expect("progress serializes"));
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
                    result: Some(result),
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
                    error: Some(error),
                    at,
                };
                ended(&mut jobs, job, worker, end);
            }
            Event::Online(info) => workers.push(WorkerEvent::Online(info)),
            Event::Heartbeat {
                worker,
                lanes,
                running,
                ..
            } => workers.push(WorkerEvent::Heartbeat {
                worker,
                lanes,
                running,
            }),
            Event::Offline { worker } => workers.push(WorkerEvent::Offline { worker }),
            Event::Redelivered { job, worker } => asks.push((job, worker)),
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
    }
}

impl Actor for Callback {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.failed.cancel();
    }
}

/// How long events wait for more before a batch is written: one statement and one ack for
/// everything that arrives meanwhile. (Event times are the workers'; this delays only when a
/// state becomes visible and when waiters behind an ended job are routed.)
const GATHER: Duration = Duration::from_millis(3);
/// A batch this large is written at once.
const MAX_BATCH: usize = 2000;

impl StreamHandler<Vec<Result<Delivery, lapin::Error>>> for Callback {
    fn handle(&mut self, batch: Vec<Result<Delivery, lapin::Error>>, ctx: &mut Context<Self>) {
        for d in batch {
            match d {
                Ok(d) => {
                    match parse_events(&d.data) {
                        Ok(mut e) => self.gathered.append(&mut e),
                        Err(e) => {
                            warn!(error = %e, "ignoring an event message that does not parse")
                        }
                    }
                    self.last = Some(d.acker);
                }
                Err(e) => {
                    if !self.failed.is_cancelled() {
                        error!(error = %e, "events consumer failed");
                    }
                    self.failed.cancel();
                    return ctx.stop();
                }
            }
        }
        if self.gathered.len() >= MAX_BATCH {
            self.write(ctx);
        } else if !self.gathering {
            self.gathering = true;
            ctx.run_later(GATHER, |act, ctx| act.write(ctx));
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        warn!("events consumer ended");
        self.failed.cancel();
        ctx.stop();
    }
}

impl Callback {
    /// Writes what was gathered, acks it after the commit, then tells the others.
    fn write(&mut self, ctx: &mut Context<Self>) {
        self.gathering = false;
        let events = std::mem::take(&mut self.gathered);
        let Some(last) = self.last.take() else {
            return;
        };
        metrics::histogram!("lanes_events_batch_size").record(events.len() as f64);
        let Folded {
            updates,
            workers: worker_news,
            asks,
        } = collapse(events);
        for news in worker_news {
            if let WorkerEvent::Online(info) = &news {
                self.tasks
                    .write()
                    .expect("task names lock")
                    .extend(info.tasks.iter().cloned());
            }
            self.supervisor.do_send(news);
        }
        let (store, publisher, topo) = (
            self.store.clone(),
            self.publisher.clone(),
            self.topo.clone(),
        );
        let answers = publisher.clone();
        let fut = async move {
            let finished = store.apply(&updates).await?;
            last.ack(BasicAckOptions { multiple: true }).await?;
            // Everything published before the questions is applied now.
            if !asks.is_empty() {
                answer(&store, &answers, &topo, asks).await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(finished)
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(finished) => {
                for f in &finished {
                    metrics::counter!("lanes_jobs_finished_total", "state" => f.state.clone())
                        .increment(1);
                }
                if !finished.is_empty() {
                    act.dispatcher
                        .do_send(JobsEnded(finished.iter().map(|f| f.id).collect()));
                    actix::spawn(reply(publisher, finished));
                }
            }
            Err(e) => {
                error!(error = %e, "writing job state failed; the control plane restarts");
                act.failed.cancel();
                ctx.stop();
            }
        }));
    }
}

/// Tells workers what is recorded for the tasks redelivered to them. A lost answer only makes
/// the worker fall back to the broker's delivery count, so these are not confirmed.
async fn answer(
    store: &Store,
    publisher: &Publisher,
    topo: &Topology,
    asks: Vec<(Uuid, String)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let ids: Vec<Uuid> = asks.iter().map(|(id, _)| *id).collect();
    let records: HashMap<Uuid, (String, i32)> = store
        .records(&ids)
        .await?
        .into_iter()
        .map(|(id, state, attempts)| (id, (state, attempts)))
        .collect();
    let control = topo.control();
    let answers: Vec<Outgoing> = asks
        .iter()
        .map(|(job, worker)| {
            let (state, attempts) = match records.get(job) {
                Some((state, attempts)) => (Some(state.clone()), *attempts),
                None => (None, 0),
            };
            let body = serde_json::to_vec(&Control::Record {
                job: *job,
                state,
                attempts,
            })
            .expect("control messages serialize");
            Outgoing {
                exchange: &control,
                routing_key: worker,
                body,
                props: json_properties(),
            }
        })
        .collect();
    publisher.send_all(&answers).await?;
    Ok(())
}

/// Sends each ended job's outcome to its `reply_to`, when the submitter asked for one.
async fn reply(publisher: Publisher, finished: Vec<Finished>) {
    for f in finished {
        let Some(to) = f.reply_to else { continue };
        let body = json!({"id": f.id, "state": f.state, "result": f.result, "error": f.error});
        let mut props = json_properties();
        if let Some(c) = f.correlation_id {
            props = props.with_correlation_id(c.into());
        }
        let body = serde_json::to_vec(&body).expect("replies serialize");
        if let Err(e) = publisher.publish("", &to, &body, props).await {
            warn!(job = %f.id, reply_to = %to, error = %e, "could not deliver the reply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

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
        } = collapse(events);
        assert_eq!(asks, vec![(job, "w2".to_owned())]);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].runs, 2);
        let end = u[0].end.as_ref().unwrap();
        assert_eq!(end.state, JobState::Completed);
        assert_eq!(end.result, Some(json!(1)));
        assert_eq!(news.len(), 1);
    }
}
