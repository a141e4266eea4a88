//! The Callback actor: consumes `<prefix>.events`, writes job state to Postgres in batches
//! (one transaction per batch, state only moves forward), acks only after the commit, then
//! tells the Dispatcher which jobs ended and the Supervisor what the workers said. The folding
//! of a batch is pure (`fold`), and so is what the Dispatcher hears of it and when (`release`);
//! what goes back to workers and submitters is in `reply`.

mod fold;
mod release;
mod reply;

use super::{
    dead_letters::{self, DeadLetter},
    dispatcher::{Dispatcher, JobsEnded, JobsStarted},
    in_order::{InOrder, Ordered},
    plane::Plane,
    supervisor::{JobsSettled, Supervisor},
};
use crate::{
    broker::{confirm_all, BrokerError, Publisher},
    protocol::Event,
    store::{Applied, End, Finished, JobState, JobUpdate, Store, StoreError},
};
use actix::prelude::*;
use fold::{collapse, Folded};
use futures::StreamExt;
use lapin::{message::Delivery, options::BasicAckOptions, Acker};
use release::Release;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};
use tracing::error;
use uuid::Uuid;

pub use fold::parse_events;

/// Applies a batch; a report the database refuses (a value it cannot store) fails its job
/// with the reason instead of failing the batch, so the job neither wedges nor strands.
async fn apply(store: &Store, updates: &[JobUpdate]) -> Result<Vec<Finished>, CallbackError> {
    let Applied {
        mut finished,
        refused,
    } = store.apply_isolating(updates).await?;
    if refused.is_empty() {
        return Ok(finished);
    }
    metrics::counter!("lanes_reports_refused_total").increment(refused.len() as u64);
    let failures: Vec<JobUpdate> = refused
        .into_iter()
        .map(|(job, why)| {
            error!(%job, error = %why, "the database refused a worker's report; failing the job");
            JobUpdate {
                end: Some(End {
                    state: JobState::Failed,
                    result: None,
                    error: Some(format!("the worker's report could not be stored: {why}")),
                    at: chrono::Utc::now(),
                }),
                ..JobUpdate::new(job)
            }
        })
        .collect();
    let again = store.apply_isolating(&failures).await?;
    for (job, why) in again.refused {
        error!(%job, error = %why, "could not record the failure of a refused report either");
    }
    finished.extend(again.finished);
    Ok(finished)
}

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("events consumer failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the events consumer ended")]
    ConsumerEnded,
    #[error("setting messages aside failed: {0}")]
    DeadLetters(#[from] super::dead_letters::DeadLetterError),
}

pub struct Callback {
    plane: Plane,
    /// Events received and not yet written, and the acker of the last message they came in.
    gathered: Vec<Event>,
    /// Messages received that cannot be taken, to set aside before the ack.
    dead: Vec<DeadLetter>,
    last: Option<Acker>,
    /// A write is scheduled.
    gathering: bool,
    dispatcher: Addr<Dispatcher>,
    supervisor: Addr<Supervisor>,
    publisher: Publisher,
    /// Writes, in the order their batches arrived (see `in_order`): a later batch's
    /// multiple-ack covers the earlier ones.
    writes: InOrder<Callback>,
    /// Jobs a live worker handed back unstarted, until their next holder asks about them (or
    /// they end). Kept in memory: after a restart their next holder counts them as possibly
    /// started, which only costs them an attempt.
    handed_back: HashSet<Uuid>,
    /// Lanes a live worker let go of with nothing of it unsettled, until the first question
    /// about an unfinished task of the lane (see `reply::answer`).
    clean_lanes: Arc<Mutex<HashSet<String>>>,
}

impl Ordered for Callback {
    fn in_order(&mut self) -> &mut InOrder<Self> {
        &mut self.writes
    }
}

impl Callback {
    /// Starts the Callback consuming `events`.
    pub async fn start(
        plane: &Plane,
        dispatcher: Addr<Dispatcher>,
        supervisor: Addr<Supervisor>,
    ) -> Result<Addr<Callback>, CallbackError> {
        let events = plane
            .consumer(&plane.topo.events(), "lanes-server/callback", 2000)
            .await?;
        let callback = Callback {
            plane: plane.clone(),
            gathered: Vec::new(),
            dead: Vec::new(),
            last: None,
            gathering: false,
            dispatcher,
            supervisor,
            publisher: Publisher::new(&plane.conn).await?,
            writes: InOrder::default(),
            handed_back: HashSet::new(),
            clean_lanes: Default::default(),
        };
        Ok(Callback::create(move |ctx| {
            ctx.add_stream(events.ready_chunks(2000));
            callback
        }))
    }

    fn fail(&mut self, e: CallbackError, ctx: &mut Context<Self>) {
        self.plane.failure.fail("callback", e);
        ctx.stop();
    }
}

impl Actor for Callback {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.plane.failure.stopping();
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
                        Err(e) => self.dead.push(DeadLetter {
                            from: "events",
                            job: None,
                            reason: format!("an event message that does not parse: {e}"),
                            body: d.data,
                        }),
                    }
                    self.last = Some(d.acker);
                }
                Err(e) => return self.fail(e.into(), ctx),
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
        self.fail(CallbackError::ConsumerEnded, ctx);
    }
}

impl Callback {
    /// Writes what was gathered, acks it after the commit, then tells the others.
    fn write(&mut self, ctx: &mut Context<Self>) {
        self.gathering = false;
        let events = std::mem::take(&mut self.gathered);
        let dead = std::mem::take(&mut self.dead);
        let Some(last) = self.last.take() else {
            return;
        };
        metrics::histogram!("lanes_events_batch_size").record(events.len() as f64);
        let Folded {
            updates,
            workers: worker_news,
            asks,
            handed_back,
            clean_lanes,
            tasks,
        } = collapse(events);
        self.clean_lanes
            .lock()
            .expect("clean lanes lock")
            .extend(clean_lanes);
        // A hand-back is published before the broker has the tasks back, so it is here before
        // the question of their next holder, which takes it.
        self.handed_back.extend(handed_back);
        for u in updates.iter().filter(|u| u.end.is_some()) {
            self.handed_back.remove(&u.id);
        }
        let unstarted: HashSet<Uuid> = asks
            .iter()
            .map(|(job, _)| *job)
            .filter(|job| self.handed_back.remove(job))
            .collect();
        let new_tasks = self.plane.tasks.learn(tasks);
        for news in worker_news {
            self.supervisor.do_send(news);
        }
        let (store, publisher, topo) = (
            self.plane.store.clone(),
            self.publisher.clone(),
            self.plane.topo.clone(),
        );
        let answers = publisher.clone();
        let supervisor = self.supervisor.clone();
        let clean_lanes = self.clean_lanes.clone();
        // See `release`: starts and this batch's ends go now, what the write finds ended after.
        let release = Release::of(&updates);
        if !release.started.is_empty() {
            self.dispatcher
                .do_send(JobsStarted(release.started.clone()));
        }
        if !release.ended.is_empty() {
            self.dispatcher.do_send(JobsEnded(release.ended.clone()));
        }
        let mut ended = release.ended.clone();
        // The Callback takes no events (heartbeats among them) until this ends: the whole of
        // it counts as one write for the Supervisor's liveness judgement.
        let writing = self.plane.writes.begin();
        let fut = async move {
            if !dead.is_empty() {
                confirm_all(dead_letters::send(&answers, &store, &topo, &dead).await?).await?;
            }
            store.remember_tasks(&new_tasks).await?;
            let finished = apply(&store, &updates).await?;
            // A refused report was ended as failed by `apply`.
            ended.extend(finished.iter().map(|f| f.id));
            last.ack(BasicAckOptions { multiple: true }).await?;
            // Everything published before the questions is applied now.
            if !asks.is_empty() {
                let handed = reply::HandedBack {
                    jobs: unstarted,
                    lanes: clean_lanes,
                };
                let answered = reply::answer(&store, &answers, &topo, &supervisor, asks, handed);
                ended.extend(answered.await?);
            }
            drop(writing);
            Ok::<_, CallbackError>((finished, ended))
        };
        let step = fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok((finished, ended)) => {
                for f in &finished {
                    record_durations(f);
                }
                if !ended.is_empty() {
                    act.supervisor.do_send(JobsSettled(ended.clone()));
                }
                let later = release.after_write(ended);
                if !later.is_empty() {
                    act.dispatcher.do_send(JobsEnded(later));
                }
                if !finished.is_empty() {
                    actix::spawn(reply::reply(publisher, finished));
                }
            }
            Err(e) => act.fail(e, ctx),
        });
        InOrder::push(self, ctx, step);
    }
}

/// A job that ended: counted by state, and its waits and run timed by task.
fn record_durations(f: &Finished) {
    metrics::counter!("lanes_jobs_finished_total", "state" => f.state.as_str()).increment(1);
    let seconds = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        (to - from).num_milliseconds().max(0) as f64 / 1000.0
    };
    let task = f.task.clone();
    if let Some(end) = f.finished_at {
        metrics::histogram!("lanes_job_end_to_end_seconds", "task" => task.clone())
            .record(seconds(f.created_at, end));
        if let Some(start) = f.started_at {
            metrics::histogram!("lanes_job_run_seconds", "task" => task.clone())
                .record(seconds(start, end));
        }
    }
    if let Some(start) = f.started_at {
        metrics::histogram!("lanes_job_queue_wait_seconds", "task" => task)
            .record(seconds(f.created_at, start));
    }
}
