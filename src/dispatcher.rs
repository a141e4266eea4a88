//! The Dispatcher (the traffic cop): consumes `<prefix>.submit`, routes each job by its
//! resources (see `routing`), records it, publishes it to its lane, and acks the submit message
//! only once the job row and the lane message are both durable. It is the single ordering
//! point, so it works in batches: one insert and one round of publishes per batch of submit
//! messages, decided and sent in order; the confirms, the `queued` marks and the multiple-ack
//! settle behind it (`settle`), so the next batch does not wait for them.
//!
//! It also runs the lane pool (the rules are in `routing`): a lane the Router opens is declared
//! before anything is published to it, and a surplus lane idle for the cool-down is deleted
//! from the broker; after either, the Supervisor gets the new set of open lanes.

use crate::{
    broker::{confirm_all, json_properties, BrokerError, Outgoing, Pending, Publisher, Topology},
    protocol::{job_id_from_message_id, parse_submit, Invalid, LaneMessage, TaskSpec},
    reconcile::Suspects,
    routing::{Decision, Router, Target},
    store::{JobState, NewJob, Store, StoreError},
    supervisor::GetHeld,
    supervisor::{Resubscribe, SetLanes, Supervisor},
};
use actix::prelude::*;
use futures::future::Either;
use lapin::{
    message::Delivery,
    options::{QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable, LongString},
    Acker, Connection,
};
use serde::Serialize;
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

mod settle;

use settle::{Settler, Tail};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("submit consumer failed: {0}")]
    Consumer(#[from] lapin::Error),
}

/// Jobs re-dispatched per round of publishes and confirms during recovery.
const RECOVERY_WINDOW: usize = 2_000;

/// Task names the server accepts: its own registry plus what online workers announce.
pub type KnownTasks = Arc<RwLock<BTreeSet<String>>>;

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

/// The lane pool's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub min: u32,
    pub max: u32,
    /// How long a surplus lane stays idle before it is deleted.
    pub cool_down: Duration,
}

/// How often the Dispatcher looks for surplus lanes to delete.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often lanes are checked for jobs whose message is gone (see `reconcile`).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

pub struct Dispatcher {
    store: Store,
    publisher: Publisher,
    topo: Topology,
    conn: Arc<Connection>,
    supervisor: Addr<Supervisor>,
    cool_down: Duration,
    router: Router,
    waiting: HashMap<Uuid, TaskSpec>,
    tasks: KnownTasks,
    max_payload: usize,
    failed: CancellationToken,
    suspects: Suspects,
    /// Lanes that held ready tasks without a consumer at the last check.
    orphaned: HashSet<u32>,
    settler: Settler,
}

/// A submit message that passed validation.
struct Accepted {
    spec: TaskSpec,
    reply_to: Option<String>,
    correlation_id: Option<String>,
}

/// A submit message that did not.
struct Rejected {
    id: Option<Uuid>,
    reason: Invalid,
    body: Vec<u8>,
}

impl Dispatcher {
    /// Rebuilds the reservations and the waiting line from Postgres, re-dispatches jobs left
    /// `submitted`, and returns a Dispatcher ready to consume. The open lanes are `0..min` and
    /// every lane that holds a queued or running job; they are declared, and the Supervisor
    /// is told.
    #[allow(clippy::too_many_arguments)]
    pub async fn recover(
        store: Store,
        publisher: Publisher,
        topo: Topology,
        conn: Arc<Connection>,
        supervisor: Addr<Supervisor>,
        pool: Pool,
        tasks: KnownTasks,
        max_payload: usize,
        failed: CancellationToken,
    ) -> Result<Dispatcher, DispatchError> {
        let mut router = Router::new(pool.min, pool.max.max(1));
        let mut waiting = HashMap::new();
        let mut to_publish = Vec::new();
        let mut now_waiting = Vec::new();
        let rows = store.unfinished().await?;
        let total = rows.len();
        for row in rows {
            let state: JobState = row.state.parse().unwrap_or(JobState::Submitted);
            if matches!(state, JobState::Queued | JobState::Running) {
                if let Some(lane) = row.queue.as_deref().and_then(|q| topo.lane_index(q)) {
                    router.restore(row.id, &row.resources, lane);
                }
                continue;
            }
            let spec = TaskSpec {
                id: row.id,
                task: row.task,
                args: row.args.unwrap_or_default(),
                resources: row.resources,
                max_attempts: row.max_attempts,
            };
            match router.submit(spec.id, &spec.resources) {
                Decision::Routed(target) => to_publish.push((spec, target)),
                Decision::Waiting => {
                    if state == JobState::Submitted {
                        now_waiting.push(spec.id);
                    }
                    waiting.insert(spec.id, spec);
                }
            }
        }
        router.take_opened();
        let open = router.open_lanes();
        for &n in &open {
            topo.declare_lane(publisher.channel(), n).await?;
        }
        supervisor.do_send(SetLanes(open.iter().copied().collect()));
        // Surplus lanes a previous server left on the broker: delete the empty ones, so that
        // the broker shows the pool. One that still holds messages stays (unconsumed until
        // the lane opens again; `delete_lane` says so).
        for n in (0..router.max_lanes()).filter(|n| !router.is_open(*n)) {
            delete_lane(&conn, &topo.lane(n)).await?;
        }
        // In windows, so that a large backlog neither holds every confirm at once nor waits
        // for all of them before the first rows are marked.
        let mut redispatched = 0;
        for window in to_publish.chunks(RECOVERY_WINDOW) {
            let queued = publish_jobs(&publisher, &topo, window).await?;
            store.mark_queued(&queued).await?;
            redispatched += queued.len();
        }
        store.mark_waiting(&now_waiting).await?;
        info!(
            lanes = open.len(),
            unfinished = total,
            redispatched,
            waiting = waiting.len(),
            reserved = router.reserved(),
            "dispatcher recovered its state"
        );
        Ok(Dispatcher {
            settler: Settler::start(store.clone(), failed.clone()),
            store,
            publisher,
            topo,
            conn,
            supervisor,
            cool_down: pool.cool_down,
            router,
            waiting,
            tasks,
            max_payload,
            failed,
            suspects: Suspects::default(),
            orphaned: HashSet::new(),
        })
    }

    fn classify(&self, deliveries: &[Delivery]) -> (Vec<Accepted>, Vec<Rejected>, usize) {
        let tasks = self.tasks.read().expect("task names lock");
        let mut seen = HashSet::with_capacity(deliveries.len());
        let (mut accepted, mut rejected, mut duplicates) = (Vec::new(), Vec::new(), 0);
        for d in deliveries {
            let given = d
                .properties
                .message_id()
                .as_ref()
                .map(|m| job_id_from_message_id(m.as_str()));
            let id = given.unwrap_or_else(Uuid::new_v4);
            if !seen.insert(id) {
                duplicates += 1;
                continue;
            }
            match parse_submit(&d.data, id, self.max_payload, |t| tasks.contains(t)) {
                Ok(spec) => accepted.push(Accepted {
                    spec,
                    reply_to: d.properties.reply_to().as_ref().map(|s| s.to_string()),
                    correlation_id: d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|s| s.to_string()),
                }),
                Err(reason) => rejected.push(Rejected {
                    id: given,
                    reason,
                    body: if d.data.len() > self.max_payload {
                        d.data[..self.max_payload].to_vec()
                    } else {
                        d.data.clone()
                    },
                }),
            }
        }
        (accepted, rejected, duplicates)
    }

    /// Takes jobs out of the Router and the waiting line (they ended, or the database already
    /// had them); returns the waiters that can go now, with their targets.
    fn release<'a>(&mut self, ids: impl IntoIterator<Item = &'a Uuid>) -> Vec<(TaskSpec, Target)> {
        let mut woken = Vec::new();
        for id in ids {
            self.waiting.remove(id);
            for (next, target) in self.router.finish(id) {
                if let Some(spec) = self.waiting.remove(&next) {
                    woken.push((spec, target));
                }
            }
        }
        woken
    }

    fn record_gauges(&self) {
        metrics::gauge!("lanes_jobs_waiting").set(self.waiting.len() as f64);
        metrics::gauge!("lanes_resources_reserved").set(self.router.reserved() as f64);
        metrics::gauge!("lanes_jobs_routed_unfinished").set(self.router.routed() as f64);
    }

    fn fail(&mut self, e: DispatchError, ctx: &mut Context<Self>) {
        if self.failed.is_cancelled() {
            debug!(error = %e, "dispatcher stopped with the control plane");
        } else {
            error!(error = %e, "dispatcher failed; the control plane restarts");
        }
        self.failed.cancel();
        ctx.stop();
    }

    /// The lanes the Router opened since last asked: declares them, then tells the Supervisor.
    /// Await it before publishing.
    fn open_lanes(&mut self) -> impl std::future::Future<Output = Result<(), BrokerError>> {
        let opened = self.router.take_opened();
        let open: BTreeSet<u32> = self.router.open_lanes().into_iter().collect();
        let (publisher, topo, supervisor) = (
            self.publisher.clone(),
            self.topo.clone(),
            self.supervisor.clone(),
        );
        async move {
            if opened.is_empty() {
                return Ok(());
            }
            for &n in &opened {
                topo.declare_lane(publisher.channel(), n).await?;
            }
            info!(lanes = ?opened, open = open.len(), "opened lanes");
            supervisor.do_send(SetLanes(open));
            Ok(())
        }
    }

    /// Deletes the surplus lanes that have been idle for the cool-down. The Router stops
    /// routing to them first; a lane the broker still holds messages in is kept open.
    /// Finds jobs whose lane message is gone (see `reconcile`) and dispatches them again.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let busy: Vec<u32> = self
            .router
            .loads()
            .into_iter()
            .filter(|(_, load)| *load > 0)
            .map(|(lane, _)| lane)
            .collect();
        if busy.is_empty() {
            self.suspects.confirm(HashMap::new());
            return;
        }
        let (conn, topo, supervisor) = (
            self.conn.clone(),
            self.topo.clone(),
            self.supervisor.clone(),
        );
        let fut = async move {
            let held = supervisor.send(GetHeld).await.unwrap_or_default();
            let (mut empty, mut orphaned) = (Vec::new(), HashSet::new());
            for n in busy {
                match lane_depth(&conn, &topo, n).await? {
                    (0, _) => empty.push(n),
                    (_, 0) => {
                        orphaned.insert(n);
                    }
                    _ => {}
                }
            }
            Ok::<_, BrokerError>((empty, orphaned, held))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let (empty, orphaned, held) = match res {
                Ok(found) => found,
                Err(e) => return act.fail(e.into(), ctx),
            };
            // Seen twice in a row: not a handoff in progress.
            for &n in orphaned.intersection(&act.orphaned) {
                act.supervisor.do_send(Resubscribe(n));
            }
            act.orphaned = orphaned;
            let now = empty
                .into_iter()
                .map(|n| {
                    let ids = act.router.lane_jobs(n).into_iter();
                    (n, ids.filter(|id| !held.contains(id)).collect())
                })
                .collect();
            let lost = act.suspects.confirm(now);
            if !lost.is_empty() {
                act.redispatch(lost, ctx);
            }
        }));
    }

    /// Publishes lost jobs to their lanes again (their reservations never moved).
    fn redispatch(&mut self, lost: Vec<Uuid>, ctx: &mut Context<Self>) {
        warn!(
            jobs = lost.len(),
            "lane messages are gone (queue purged or deleted?); dispatching those jobs again"
        );
        metrics::counter!("lanes_jobs_reconciled_total").increment(lost.len() as u64);
        let (publisher, topo, store) = (
            self.publisher.clone(),
            self.topo.clone(),
            self.store.clone(),
        );
        let fut = async move {
            let rows = store.unfinished_of(&lost).await?;
            let jobs: Vec<(TaskSpec, Target)> = rows
                .into_iter()
                .filter_map(|r| {
                    let lane = topo.lane_index(r.queue.as_deref()?)?;
                    let spec = TaskSpec {
                        id: r.id,
                        task: r.task,
                        args: r.args.unwrap_or_default(),
                        resources: r.resources,
                        max_attempts: r.max_attempts,
                    };
                    Some((spec, Target::Lane(lane)))
                })
                .collect();
            publish_jobs(&publisher, &topo, &jobs).await?;
            Ok::<_, DispatchError>(())
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| {
            if let Err(e) = res {
                act.fail(e, ctx);
            }
        }));
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let closable = self.router.closable(Instant::now(), self.cool_down);
        let closed: Vec<u32> = closable
            .into_iter()
            .filter(|l| self.router.close(*l))
            .collect();
        if closed.is_empty() {
            return;
        }
        let (conn, topo) = (self.conn.clone(), self.topo.clone());
        let fut = async move {
            let mut kept = Vec::new();
            for &n in &closed {
                if !delete_lane(&conn, &topo.lane(n)).await? {
                    kept.push(n);
                }
            }
            Ok::<_, BrokerError>((closed, kept))
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((closed, kept)) => {
                for &n in &kept {
                    act.router.open(n);
                }
                act.router.take_opened();
                let deleted: Vec<u32> = closed.into_iter().filter(|n| !kept.contains(n)).collect();
                let open: BTreeSet<u32> = act.router.open_lanes().into_iter().collect();
                info!(lanes = ?deleted, open = open.len(), "deleted idle lanes");
                act.supervisor.do_send(SetLanes(open));
            }
            Err(e) => act.fail(e.into(), ctx),
        }));
    }

    /// Publishes newly routable jobs and marks them queued, in order with everything else.
    fn dispatch(&mut self, routed: Vec<(TaskSpec, Target)>, ctx: &mut Context<Self>) {
        if routed.is_empty() {
            return;
        }
        let send = self.send_batch(Vec::new(), routed, None);
        ctx.wait(send.into_actor(self).map(|res, act, ctx| {
            if let Err(e) = res {
                act.fail(e, ctx);
            }
        }));
    }

    /// Sends a batch once the lanes it needs are declared: dead letters, then jobs, in order.
    /// Its confirms, `queued` marks and ack are left to the Settler, which keeps batch order,
    /// so the caller waits only for the sending.
    fn send_batch(
        &mut self,
        rejected: Vec<Rejected>,
        jobs: Vec<(TaskSpec, Target)>,
        ack: Option<Acker>,
    ) -> impl std::future::Future<Output = Result<(), DispatchError>> + 'static {
        let (publisher, topo, settler) = (
            self.publisher.clone(),
            self.topo.clone(),
            self.settler.clone(),
        );
        let open = self.open_lanes();
        async move {
            open.await?;
            let mut confirms = send_dead_letters(&publisher, &topo, &rejected).await?;
            let (queued, published) = send_jobs(&publisher, &topo, &jobs).await?;
            confirms.extend(published);
            debug!(jobs = jobs.len(), rejected = rejected.len(), "batch sent");
            settler.push(Tail {
                confirms,
                queued,
                ack,
            });
            Ok(())
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_EVERY, |act, ctx| act.sweep(ctx));
        ctx.run_interval(RECONCILE_EVERY, |act, ctx| act.reconcile(ctx));
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.failed.cancel();
    }
}

impl StreamHandler<Vec<Result<Delivery, lapin::Error>>> for Dispatcher {
    fn handle(&mut self, batch: Vec<Result<Delivery, lapin::Error>>, ctx: &mut Context<Self>) {
        let mut deliveries = Vec::with_capacity(batch.len());
        for d in batch {
            match d {
                Ok(d) => deliveries.push(d),
                Err(e) => return self.fail(e.into(), ctx),
            }
        }
        let (accepted, rejected, mut duplicates) = self.classify(&deliveries);
        metrics::histogram!("lanes_dispatch_batch_size").record(deliveries.len() as f64);
        metrics::counter!("lanes_submits_rejected_total").increment(rejected.len() as u64);
        // Routed now, in submit order, and recorded with their lane (one statement); they turn
        // `queued` once their lane message is confirmed. A job the database turns out to have
        // already is taken back out of the Router below.
        let mut rows = Vec::with_capacity(accepted.len() + rejected.len());
        let mut routed = Vec::new();
        for a in accepted {
            let id = a.spec.id;
            if self.router.is_routed(&id) || self.waiting.contains_key(&id) {
                duplicates += 1;
                continue;
            }
            let decision = self.router.submit(id, &a.spec.resources);
            let (state, queue) = match decision {
                Decision::Routed(target) => (JobState::Submitted, Some(self.topo.queue_of(target))),
                Decision::Waiting => (JobState::Waiting, None),
            };
            rows.push(NewJob {
                id,
                task: a.spec.task.clone(),
                args: a.spec.args.clone(),
                resources: a.spec.resources.clone(),
                max_attempts: a.spec.max_attempts,
                state,
                queue,
                error: None,
                reply_to: a.reply_to,
                correlation_id: a.correlation_id,
            });
            match decision {
                Decision::Routed(target) => routed.push((a.spec, target)),
                Decision::Waiting => {
                    self.waiting.insert(id, a.spec);
                }
            }
        }
        let candidates: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        rows.extend(rejected.iter().filter_map(|r| {
            Some(NewJob {
                id: r.id?,
                task: String::new(),
                args: serde_json::Value::Null,
                resources: Vec::new(),
                max_attempts: 0,
                state: JobState::Failed,
                queue: None,
                error: Some(format!("invalid submit message: {}", r.reason)),
                reply_to: None,
                correlation_id: None,
            })
        }));
        let store = self.store.clone();
        let insert = async move { store.insert(&rows).await };
        let last = deliveries.last().map(|d| d.acker.clone());
        ctx.wait(insert.into_actor(self).then(move |res, act, _ctx| {
            // Only deciding and sending happen in order here; the next batch starts while
            // this one's confirms and ack settle (in order) in the background.
            let sent = match res {
                Err(e) => Either::Left(async move { Err(e.into()) }),
                Ok(new_ids) => {
                    let new: HashSet<Uuid> = new_ids.into_iter().collect();
                    let known: HashSet<Uuid> = candidates
                        .into_iter()
                        .filter(|id| !new.contains(id))
                        .collect();
                    routed.retain(|(spec, _)| !known.contains(&spec.id));
                    routed.extend(act.release(&known));
                    let dup = duplicates + known.len();
                    if dup > 0 {
                        info!(
                            duplicates = dup,
                            "ignored submit messages for jobs that already exist"
                        );
                    }
                    metrics::counter!("lanes_submits_duplicate_total").increment(dup as u64);
                    metrics::counter!("lanes_jobs_submitted_total").increment(new.len() as u64);
                    act.record_gauges();
                    Either::Right(act.send_batch(rejected, routed, last))
                }
            };
            sent.into_actor(act).map(|res, act, ctx| {
                if let Err(e) = res {
                    act.fail(e, ctx);
                }
            })
        }));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        warn!("submit consumer ended");
        self.failed.cancel();
        ctx.stop();
    }
}

impl Handler<JobsEnded> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobsEnded, ctx: &mut Context<Self>) {
        let routed = self.release(&msg.0);
        self.record_gauges();
        self.dispatch(routed, ctx);
    }
}

impl Handler<GetStats> for Dispatcher {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DispatcherStats {
            loads: self.router.loads(),
            waiting: self.waiting.len(),
            reserved: self.router.reserved(),
        })
    }
}

/// Publishes jobs to their queues with confirms; returns (job, queue) once all are durable.
async fn publish_jobs(
    publisher: &Publisher,
    topo: &Topology,
    jobs: &[(TaskSpec, Target)],
) -> Result<Vec<(Uuid, String)>, BrokerError> {
    let (queued, pending) = send_jobs(publisher, topo, jobs).await?;
    confirm_all(pending).await?;
    Ok(queued)
}

/// Sends jobs to their queues, in order; returns (job, queue) and the confirms to wait for.
async fn send_jobs(
    publisher: &Publisher,
    topo: &Topology,
    jobs: &[(TaskSpec, Target)],
) -> Result<(Vec<(Uuid, String)>, Vec<Pending>), BrokerError> {
    let queued: Vec<(Uuid, String)> = jobs
        .iter()
        .map(|(spec, target)| (spec.id, topo.queue_of(*target)))
        .collect();
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
            })
            .expect("lane messages serialize"),
            props: json_properties().with_message_id(spec.id.to_string().into()),
        })
        .collect();
    let pending = publisher.send_all(&messages).await?;
    Ok((queued, pending))
}

/// Ready messages in a lane and its consumers; a lane that vanished is declared again (and is
/// empty).
async fn lane_depth(conn: &Connection, topo: &Topology, n: u32) -> Result<(u32, u32), BrokerError> {
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match ch
        .queue_declare(topo.lane(n).as_str().into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => {
            let _ = ch.close(200, "checked".into()).await;
            Ok((q.message_count(), q.consumer_count()))
        }
        Err(_) => {
            topo.declare_lane(&conn.create_channel().await?, n).await?;
            Ok((0, 0))
        }
    }
}

/// Deletes a lane queue unless it holds ready messages; true when it is gone. RabbitMQ
/// refuses `if-empty` deletes of quorum queues with a connection error, so this checks the
/// count itself (on a channel of its own) and then deletes: nothing else publishes to a lane
/// the Router has closed, so no message can arrive in between.
async fn delete_lane(conn: &Connection, queue: &str) -> Result<bool, BrokerError> {
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await;
    let q = match declared {
        Ok(q) => q,
        // Already gone (the broker closed this channel).
        Err(e) if e.is_amqp_soft_error() => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    if q.message_count() > 0 {
        warn!(%queue, messages = q.message_count(), "a lane to delete still holds messages; keeping it");
        let _ = ch.close(200, "lane kept".into()).await;
        return Ok(false);
    }
    let purged = match ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
    {
        Ok(n) => n,
        // Refused (e.g. no `configure` permission): the lane stays open; the next attempt
        // comes after another cool-down.
        Err(e) if e.is_amqp_soft_error() => {
            warn!(%queue, error = %e, "the broker refused to delete an idle lane; keeping it");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    if purged > 0 {
        warn!(%queue, messages = purged, "a deleted lane held messages");
    }
    let _ = ch.close(200, "lane deleted".into()).await;
    Ok(true)
}

/// Sends refused submit messages to `<prefix>.dead` with the reason in a header; returns the
/// confirms to wait for.
async fn send_dead_letters(
    publisher: &Publisher,
    topo: &Topology,
    rejected: &[Rejected],
) -> Result<Vec<Pending>, BrokerError> {
    let dead = topo.dead();
    let messages: Vec<Outgoing> = rejected
        .iter()
        .map(|r| {
            warn!(job = ?r.id, reason = %r.reason, "refused a submit message");
            let mut headers = FieldTable::default();
            headers.insert(
                "x-lanes-reason".into(),
                AMQPValue::LongString(LongString::from(r.reason.to_string())),
            );
            if let Some(id) = r.id {
                headers.insert(
                    "x-lanes-job-id".into(),
                    AMQPValue::LongString(LongString::from(id.to_string())),
                );
            }
            Outgoing {
                exchange: "",
                routing_key: &dead,
                body: r.body.clone(),
                props: json_properties().with_headers(headers),
            }
        })
        .collect();
    publisher.send_all(&messages).await
}
