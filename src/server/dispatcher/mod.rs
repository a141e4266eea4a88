//! The Dispatcher (the traffic cop): consumes `<prefix>.submit`, routes each job by its
//! resources (see `routing`), records it, publishes it to its lane, and acks the submit message
//! only once the job row and the lane message are both durable. It is the single ordering
//! point, so it works in batches: one insert and one round of publishes per batch of submit
//! messages, decided and sent in order; the confirms, the `queued` marks and the multiple-ack
//! settle behind it (`settle`), so the next batch does not wait for them.
//!
//! The decisions are pure (`plan`); this actor does the I/O around them. It also keeps the
//! lane pool and reconciles lanes with the table (`upkeep`).

mod delayed;
mod limits;
mod plan;
mod schedules;
mod send;
mod settle;
#[cfg(test)]
mod simulation;
mod steer;
mod upkeep;
mod views;

pub use limits::{JobsStarted, ReloadLimits};
pub use views::{GetLanes, GetResource};

use super::{
    in_order::{InOrder, Ordered},
    plane::Plane,
    routing::Router,
    supervisor::Supervisor,
    Failure,
};
use crate::{
    broker::{BrokerError, Publisher},
    protocol::TaskSpec,
    server::routing::Target,
    store::{digest, Inserted, StoreError},
};
use actix::prelude::*;
use futures::StreamExt;
use lapin::{message::Delivery, Acker};
use plan::{Incoming, Plan, Rejected, Settled};
use serde::Serialize;
use settle::{Settler, Tail};
use std::time::Duration;
pub use steer::{CancelJob, RetryJob, Steered};
use tokio::sync::watch;
use tracing::{debug, info};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("submit consumer failed: {0}")]
    Consumer(#[from] lapin::Error),
    #[error("the submit consumer ended")]
    ConsumerEnded,
    #[error("the control plane stopped: {0}")]
    Stopped(String),
    #[error("setting messages aside failed: {0}")]
    DeadLetters(#[from] super::dead_letters::DeadLetterError),
}

/// Jobs that ended for good (completed, failed, canceled): release what they hold.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsEnded(pub Vec<Uuid>);

/// Asks for the reservation table's figures, for `GET /queues`.
#[derive(Message)]
#[rtype(result = "DispatcherStats")]
pub struct GetStats;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DispatcherStats {
    /// The open lanes and the unfinished tasks routed to each: (lane, load).
    pub loads: Vec<(u32, u32)>,
    pub waiting: usize,
    pub reserved: usize,
}

/// Woken jobs sent (and their arguments read) at once.
const WAKE_CHUNK: usize = 256;

pub struct Dispatcher {
    plane: Plane,
    publisher: Publisher,
    supervisor: Addr<Supervisor>,
    cool_down: Duration,
    /// The reservations and the waiting line (with the waiting tasks).
    router: Router<TaskSpec>,
    upkeep: upkeep::Upkeep,
    settler: Settler,
    /// Marks of id-less submits claimed by redeliveries (see `store::marks`).
    claimed: Vec<Uuid>,
    /// The I/O of its decisions, run in the order they were made (see `in_order`).
    steps: InOrder<Dispatcher>,
    /// When it wakes to fire delayed jobs.
    timer: delayed::Timer,
    /// A round of the schedules' loop is out.
    schedules_busy: bool,
    limits: limits::Limits,
    /// The live workers' slots, from the Supervisor: the lane pool's size follows them.
    slots: watch::Receiver<u32>,
}

impl Ordered for Dispatcher {
    fn in_order(&mut self) -> &mut InOrder<Self> {
        &mut self.steps
    }
}

impl Dispatcher {
    /// Recovers the Dispatcher's state from Postgres (`upkeep::recover`) and starts it
    /// consuming `submit`.
    pub async fn start(
        plane: &Plane,
        supervisor: Addr<Supervisor>,
        slots: watch::Receiver<u32>,
    ) -> Result<Addr<Dispatcher>, DispatchError> {
        let publisher = Publisher::new(&plane.conn).await?;
        let (router, limits) = upkeep::recover(plane, &publisher, &supervisor).await?;
        let submit = plane
            .consumer(&plane.topo.submit(), "lanes-server/dispatcher", 2000)
            .await?;
        let dispatcher = Dispatcher {
            settler: Settler::start(plane.store.clone(), plane.failure.clone()),
            plane: plane.clone(),
            publisher,
            supervisor,
            cool_down: plane.cfg.queue_cool_down(),
            router,
            upkeep: upkeep::Upkeep::default(),
            claimed: Vec::new(),
            steps: InOrder::default(),
            timer: delayed::Timer::default(),
            schedules_busy: false,
            limits: limits::Limits::new(limits),
            slots,
        };
        Ok(Dispatcher::create(move |ctx| {
            ctx.add_stream(submit.ready_chunks(1000));
            dispatcher
        }))
    }

    fn failure(&self) -> &Failure {
        &self.plane.failure
    }

    fn fail(&mut self, e: DispatchError, ctx: &mut Context<Self>) {
        self.failure().fail("dispatcher", e);
        ctx.stop();
    }

    fn record_gauges(&self) {
        if self.failure().is_down() {
            return;
        }
        metrics::gauge!("lanes_jobs_waiting").set(self.router.waiting_len() as f64);
        metrics::gauge!("lanes_resources_reserved").set(self.router.reserved() as f64);
        metrics::gauge!("lanes_jobs_routed_unfinished").set(self.router.routed() as f64);
        let (slots, rate) = self.router.limited_waiting();
        metrics::gauge!("lanes_jobs_slot_waiting").set(slots as f64);
        metrics::gauge!("lanes_jobs_rate_limited").set(rate as f64);
        metrics::gauge!("lanes_pool_size").set(self.router.size() as f64);
        metrics::gauge!("lanes_lanes_open").set(self.router.open_lanes().len() as f64);
    }

    /// Publishes woken jobs and marks them queued, in order with everything else decided
    /// before and after (`in_order`), a chunk at a time: their arguments are read from the
    /// table as they go out, and a chunk bounds how many are in memory at once.
    fn dispatch(&mut self, mut woken: Vec<(TaskSpec, Target)>, ctx: &mut Context<Self>) {
        while !woken.is_empty() {
            let rest = woken.split_off(woken.len().min(WAKE_CHUNK));
            let chunk = self.send_batch(Vec::new(), Vec::new(), woken, None, Vec::new());
            self.in_order_or_fail(ctx, chunk);
            woken = rest;
        }
    }

    /// Runs `io` after every step decided before it (`in_order`); its error stops the
    /// control plane.
    fn in_order_or_fail<F, E>(&mut self, ctx: &mut Context<Self>, io: F)
    where
        F: std::future::Future<Output = Result<(), E>> + 'static,
        E: Into<DispatchError> + 'static,
    {
        let step = io.into_actor(self).map(|res, act, ctx| {
            if let Err(e) = res {
                act.fail(e.into(), ctx);
            }
        });
        InOrder::push(self, ctx, step);
    }

    /// Sends a batch once the lanes it needs are declared: dead letters, then jobs (the
    /// batch's own, then woken ones, whose lanes are recorded first), in order. Its confirms,
    /// `queued` marks and ack are left to the Settler, which keeps batch order, so the caller
    /// waits only for the sending.
    fn send_batch(
        &mut self,
        rejected: Vec<Rejected>,
        mut jobs: Vec<(TaskSpec, Target)>,
        woken: Vec<(TaskSpec, Target)>,
        ack: Option<Acker>,
        marks: Vec<Uuid>,
    ) -> impl std::future::Future<Output = Result<(), DispatchError>> + 'static {
        let (publisher, topo, settler, store) = (
            self.publisher.clone(),
            self.plane.topo.clone(),
            self.settler.clone(),
            self.plane.store.clone(),
        );
        let open = self.open_lanes();
        async move {
            open.await?;
            // A woken job recorded `waiting` has no message anywhere; once its lane is
            // recorded, recovery keeps it there (see `plan::recover`).
            let mut args = store.mark_routed(&send::queues_of(&topo, &woken)).await?;
            let mut woken = woken;
            plan::fill_args(&mut woken, &mut args);
            jobs.extend(woken);
            let mut confirms =
                send::send_dead_letters(&publisher, &store, &topo, &rejected).await?;
            let (queued, published) =
                send::send_jobs(&publisher, &topo, &jobs, send::Publication::First).await?;
            confirms.extend(published);
            debug!(jobs = jobs.len(), rejected = rejected.len(), "batch sent");
            settler.push(Tail {
                confirms,
                queued,
                ack,
                marks,
            });
            Ok(())
        }
    }

    /// Sends what the insert left of a batch's plan.
    fn after_insert(
        &mut self,
        mut plan: Plan,
        inserted: Inserted,
        ack: Option<Acker>,
    ) -> impl std::future::Future<Output = Result<(), DispatchError>> + 'static {
        let Settled {
            routed,
            woken,
            new,
            duplicates,
        } = plan::settle(
            &mut plan,
            &inserted.inserted,
            &inserted.refused,
            &mut self.router,
        );
        if duplicates > 0 {
            info!(
                duplicates,
                "ignored submit messages for jobs that already exist"
            );
        }
        metrics::counter!("lanes_submits_duplicate_total").increment(duplicates as u64);
        metrics::counter!("lanes_jobs_submitted_total").increment(new as u64);
        metrics::counter!("lanes_submits_rejected_total").increment(inserted.refused.len() as u64);
        self.record_gauges();
        let marks = plan.marks.into_iter().map(|(job, _)| job).collect();
        self.send_batch(plan.rejected, routed, woken, ack, marks)
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(upkeep::SWEEP_EVERY, |act, ctx| act.sweep(ctx));
        ctx.run_interval(upkeep::RECONCILE_EVERY, |act, ctx| act.reconcile(ctx));
        ctx.run_interval(upkeep::PURGE_MARKS_EVERY, |act, _| act.purge_marks());
        ctx.run_interval(delayed::TICK, |act, ctx| act.tick(ctx));
        ctx.run_interval(schedules::EVERY, |act, ctx| act.run_schedules(false, ctx));
        ctx.run_interval(limits::RELOAD_EVERY, |act, ctx| act.reload_limits(ctx));
        ctx.run_interval(limits::GATE_TICK, |act, ctx| act.open_gates(ctx));
        // What fell due while no control plane ran (or before a takeover), once the jobs of
        // missed ticks are left out.
        self.run_schedules(true, ctx);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.failure().stopping();
    }
}

impl StreamHandler<Vec<Result<Delivery, lapin::Error>>> for Dispatcher {
    fn handle(&mut self, batch: Vec<Result<Delivery, lapin::Error>>, ctx: &mut Context<Self>) {
        let deliveries: Vec<Delivery> = match batch.into_iter().collect() {
            Ok(d) => d,
            Err(e) => return self.fail(e.into(), ctx),
        };
        let mut idless: Vec<Option<(Uuid, Uuid)>> = deliveries
            .iter()
            .map(|d| {
                let p = &d.properties;
                p.message_id().is_none().then(|| {
                    let digest = digest(
                        &d.data,
                        p.reply_to().as_ref().map(|s| s.as_str()),
                        p.correlation_id().as_ref().map(|s| s.as_str()),
                    );
                    (Uuid::now_v7(), digest)
                })
            })
            .collect();
        // A redelivered id-less message may have been recorded already: its mark says so.
        let redelivered: Vec<(usize, Uuid)> = deliveries
            .iter()
            .zip(&idless)
            .enumerate()
            .filter_map(|(i, (d, m))| Some((i, m.filter(|_| d.redelivered)?.1)))
            .collect();
        if redelivered.is_empty() {
            return self.plan_batch(deliveries, idless, ctx);
        }
        let store = self.plane.store.clone();
        let claimed = self.claimed.clone();
        let digests: Vec<Uuid> = redelivered.iter().map(|(_, d)| *d).collect();
        let find = async move { store.find_marks(&digests, &claimed).await };
        let step = find.into_actor(self).map(move |res, act, ctx| match res {
            Ok(found) => {
                for ((i, digest), job) in redelivered.into_iter().zip(found) {
                    if let Some(job) = job {
                        info!(%job, "a redelivered submit without message id was recorded before");
                        act.claimed.push(job);
                        idless[i] = Some((job, digest));
                    }
                }
                act.plan_batch(deliveries, idless, ctx);
            }
            Err(e) => act.fail(e.into(), ctx),
        });
        InOrder::push(self, ctx, step);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.fail(DispatchError::ConsumerEnded, ctx);
    }
}

impl Dispatcher {
    /// Plans a batch (`idless`: each message's id and digest if it had no message id),
    /// records it, then sends it.
    fn plan_batch(
        &mut self,
        deliveries: Vec<Delivery>,
        idless: Vec<Option<(Uuid, Uuid)>>,
        ctx: &mut Context<Self>,
    ) {
        let incoming: Vec<Incoming> = deliveries
            .iter()
            .zip(idless)
            .map(|(d, m)| incoming(d, m, self.plane.broker_user.as_deref()))
            .collect();
        let mut plan = {
            let tasks = self.plane.tasks.names();
            let max_payload = self.plane.cfg.max_payload;
            plan::plan(
                &incoming,
                &mut self.router,
                &self.plane.topo,
                max_payload,
                chrono::Utc::now(),
                |t| tasks.contains(t),
            )
        };
        let first_due = plan.first_due;
        metrics::histogram!("lanes_dispatch_batch_size").record(deliveries.len() as f64);
        metrics::counter!("lanes_submits_rejected_total").increment(plan.rejected.len() as u64);
        let ack = deliveries.last().map(|d| d.acker.clone());
        let store = self.plane.store.clone();
        let rows = std::mem::take(&mut plan.rows);
        let marks = plan.marks.clone();
        // The lanes this plan opened are declared by this step, not by a later one's.
        let open = self.open_lanes();
        // Only deciding and sending happen in order here; the next batch starts while this
        // one's confirms and ack settle (in order) in the background.
        let insert = async move {
            open.await?;
            let inserted = store.insert_isolating(&rows, &marks).await?;
            if !inserted.refused.is_empty() {
                store.insert(&plan::refused_rows(&inserted.refused)).await?;
            }
            Ok::<_, DispatchError>(inserted)
        };
        let step = insert.into_actor(self).then(move |res, act, ctx| {
            let sent = match res {
                Ok(inserted) => {
                    if let Some(at) = first_due {
                        act.due_at(at, ctx);
                    }
                    futures::future::Either::Left(act.after_insert(plan, inserted, ack))
                }
                Err(e) => futures::future::Either::Right(async move { Err(e) }),
            };
            sent.into_actor(act).map(|res, act, ctx| {
                if let Err(e) = res {
                    act.fail(e, ctx);
                }
            })
        });
        InOrder::push(self, ctx, step);
    }
}

impl Handler<JobsEnded> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobsEnded, ctx: &mut Context<Self>) {
        let routed = plan::release(&mut self.router, &msg.0);
        self.record_gauges();
        self.dispatch(routed, ctx);
    }
}

/// Asks what holds a job back (`GET /jobs/{id}`'s `blocked_by`).
#[derive(Message)]
#[rtype(result = "Option<crate::server::routing::Blocked>")]
pub struct GetBlockers(pub Uuid);

impl Handler<GetBlockers> for Dispatcher {
    type Result = MessageResult<GetBlockers>;
    fn handle(&mut self, msg: GetBlockers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.router.blockers(&msg.0))
    }
}

impl Handler<GetStats> for Dispatcher {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DispatcherStats {
            loads: self.router.loads(),
            waiting: self.router.waiting_len(),
            reserved: self.router.reserved(),
        })
    }
}

/// What the plan reads of a submit message.
fn incoming<'a>(
    d: &'a Delivery,
    idless: Option<(Uuid, Uuid)>,
    server_user: Option<&str>,
) -> Incoming<'a> {
    let p = &d.properties;
    let header = p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(SUBMITTED_BY_HEADER))
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
            lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        });
    Incoming {
        message_id: p.message_id().as_ref().map(|m| m.as_str()),
        reply_to: p.reply_to().as_ref().map(|s| s.to_string()),
        correlation_id: p.correlation_id().as_ref().map(|s| s.to_string()),
        body: &d.data,
        idless,
        submitted_by: plan::submitted_by(
            p.user_id().as_ref().map(|u| u.as_str()),
            header.as_deref(),
            server_user,
        ),
    }
}

/// The header in which the API names the token a submit came with.
pub const SUBMITTED_BY_HEADER: &str = "x-lanes-submitted-by";
