//! `lanes worker`: an anonymous, stateless process that runs tasks.
//!
//! It registers under a fresh id, heartbeats, consumes `<prefix>.q.default` plus the lanes the
//! Supervisor assigns it (level-triggered: every `assign` carries the complete set), and runs
//! tasks on a bounded pool. Lanes run one task at a time, in order, with the next ones already
//! prefetched. A task is acked only after its final event is confirmed by the broker, so a
//! worker that dies loses nothing: the broker hands its unacked messages to the lane's next
//! consumer, which asks the server what is recorded for each before running it. On shutdown
//! it drains: stops taking tasks, lets running ones finish within a grace period, hands back the
//! rest, says goodbye. Every step of that is bounded.

use crate::{
    broker::{self, json_properties, BrokerError, Publisher, Topology},
    config::{BrokerConfig, WorkerConfig},
    protocol::{Control, Event, LaneMessage, Progress, WorkerInfo},
    store::JobState,
    tasks::{Ctx, Registry},
};
use chrono::Utc;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicRejectOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
    Connection,
};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

mod acks;

use acks::{Finished, LaneAcks};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the connection to the broker was lost")]
    ConnectionLost,
}

/// How long a standby waits before subscribing to a lane, so the owner registers first.
const STANDBY_DELAY: Duration = Duration::from_millis(300);
/// The longest any one step of letting go (closing a channel or the connection, settling the
/// last acks) may take: a drain ends even if the broker stops answering.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a step of shutting down, bounded by `CLOSE_TIMEOUT`; false (and a warning) if it took
/// longer and was given up.
async fn bounded<T>(what: &str, step: impl std::future::Future<Output = T>) -> bool {
    let done = tokio::time::timeout(CLOSE_TIMEOUT, step).await.is_ok();
    if !done {
        warn!(step = what, timeout = ?CLOSE_TIMEOUT, "gave up waiting for a shutdown step");
    }
    done
}

/// A worker's fresh anonymous id.
pub fn new_worker_id() -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("w-{}", &id[..12])
}

/// An event to publish, and who waits for its confirmation.
type Outgoing = (Event, Option<oneshot::Sender<Result<(), String>>>);

/// Most events one message carries.
const MAX_EVENT_BATCH: usize = 512;
/// How long the event pump waits for more events before it publishes.
const EVENT_LINGER: Duration = Duration::from_millis(2);

/// Outgoing events, published in order by one pump task.
#[derive(Clone)]
struct EventSink {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl EventSink {
    fn start(publisher: Publisher, queue: String) -> (EventSink, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let pump = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Everything waiting, and whatever follows within a moment, goes out as one
                // message: one publish and one confirm carry the events of many tasks. (Times
                // are taken when events happen, so the wait shows in no job's record.)
                let mut batch = vec![first];
                tokio::time::sleep(EVENT_LINGER).await;
                while batch.len() < MAX_EVENT_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let (events, waiters): (Vec<Event>, Vec<_>) = batch.into_iter().unzip();
                let body = if events.len() == 1 {
                    serde_json::to_vec(&events[0])
                } else {
                    serde_json::to_vec(&events)
                }
                .expect("events serialize");
                let sent = publisher.send("", &queue, &body, json_properties()).await;
                tokio::spawn(async move {
                    let result = match sent {
                        Ok(pending) => pending.confirmed().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = &result {
                        warn!(error = %e, events = events.len(), "events not confirmed");
                    }
                    for done in waiters.into_iter().flatten() {
                        let _ = done.send(result.clone());
                    }
                });
            }
        });
        (EventSink { tx }, pump)
    }

    fn emit(&self, event: Event) {
        let _ = self.tx.send((event, None));
    }

    /// Publishes and waits until the broker has the event durably.
    async fn emit_confirmed(&self, event: Event) -> Result<(), String> {
        self.emit_with_receipt(event).await
    }

    /// Queues the event now; the returned future says when the broker has it durably.
    fn emit_with_receipt(
        &self,
        event: Event,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let (done, wait) = oneshot::channel();
        let queued = self.tx.send((event, Some(done))).is_ok();
        async move {
            if !queued {
                return Err("event pump stopped".to_owned());
            }
            wait.await
                .unwrap_or_else(|_| Err("event pump stopped".to_owned()))
        }
    }
}

struct Shared {
    id: String,
    topo: Topology,
    cfg: WorkerConfig,
    registry: Arc<Registry>,
    events: EventSink,
    progress: mpsc::UnboundedSender<(Uuid, Progress)>,
    permits: Arc<Semaphore>,
    /// Tasks delivered to this worker and not yet acked or handed back (heartbeats report them).
    held: Mutex<HashSet<Uuid>>,
    /// Redelivered tasks waiting for the server to say what it has recorded for them.
    asked: Mutex<HashMap<Uuid, oneshot::Sender<Record>>>,
    /// Lanes consumed right now (a lane briefly counts twice while it is re-subscribed).
    lanes: Mutex<BTreeMap<String, usize>>,
    /// Stops taking new deliveries.
    stop: CancellationToken,
    /// Abandons running tasks (their messages go back to the broker).
    abort: CancellationToken,
    /// The connection is broken: the session ends and the worker reconnects.
    lost: CancellationToken,
}

/// Runs a worker until `shutdown` fires (then drains) or a `drain` order arrives.
pub async fn run(
    broker_cfg: &BrokerConfig,
    cfg: &WorkerConfig,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let id = new_worker_id();
    let mut first = true;
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(broker_cfg, cfg, registry.clone(), &shutdown, &id).await {
            Ok(()) => return Ok(()),
            // A worker that cannot connect at start says so and exits.
            Err(e @ WorkerError::Broker(BrokerError::Connect { .. })) if first => return Err(e),
            Err(e) => {
                warn!(worker = %id, error = %e, retry_in = ?backoff, "lost the broker; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        first = false;
    }
}

/// One connection's worth of work. Returns Ok when drained, Err when the connection was lost
/// (its unacked tasks go back to their lanes; the caller reconnects).
async fn session(
    broker_cfg: &BrokerConfig,
    cfg: &WorkerConfig,
    registry: Arc<Registry>,
    shutdown: &CancellationToken,
    id: &str,
) -> Result<(), WorkerError> {
    let id = id.to_owned();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let conn = Arc::new(
        broker::connect(&broker_cfg.amqp_url, &format!("lanes-worker-{id}@{host}")).await?,
    );
    let topo = Topology::new(&broker_cfg.prefix);
    if !wait_for_topology(&conn, &topo, shutdown).await? {
        return Ok(()); // shut down before the server ever came up
    }
    let publisher = Publisher::new(&conn).await?;
    let (events, pump) = EventSink::start(publisher, topo.events());
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<(Uuid, Progress)>();
    let shared = Arc::new(Shared {
        id: id.clone(),
        topo: topo.clone(),
        cfg: cfg.clone(),
        registry: registry.clone(),
        events: events.clone(),
        progress: progress_tx,
        permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        held: Mutex::new(HashSet::new()),
        asked: Mutex::new(HashMap::new()),
        lanes: Mutex::new(BTreeMap::new()),
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        lost: CancellationToken::new(),
    });
    {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some((job, progress)) = progress_rx.recv().await {
                events.emit(Event::Progress { job, progress });
            }
        });
    }

    let drain = CancellationToken::new();
    let control = control_queue(&conn, &shared).await?;
    events
        .emit_confirmed(Event::Online(WorkerInfo {
            worker: id.clone(),
            host,
            pid: std::process::id(),
            concurrency: cfg.concurrency,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tasks: registry.names(),
        }))
        .await
        .map_err(|e| BrokerError::Amqp(lapin::Error::from(std::io::Error::other(e))))?;
    info!(worker = %id, concurrency = cfg.concurrency, "worker online");

    let default_loop = tokio::spawn(default_loop(conn.clone(), shared.clone()));
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
    let control_loop = tokio::spawn(control_loop(
        conn.clone(),
        shared.clone(),
        control,
        drain.clone(),
    ));

    tokio::select! {
        _ = shutdown.cancelled() => info!(worker = %id, "shutting down: draining"),
        _ = drain.cancelled() => info!(worker = %id, "drain requested: draining"),
        _ = shared.lost.cancelled() => {
            shared.stop.cancel();
            shared.abort.cancel();
            heartbeat.abort();
            pump.abort();
            bounded("stopping the consumers", async {
                let _ = control_loop.await;
                let _ = default_loop.await;
            })
            .await;
            bounded("closing the connection", conn.close(200, "reconnecting".into())).await;
            return Err(WorkerError::ConnectionLost);
        }
    }
    shared.stop.cancel();
    let all = cfg.concurrency.max(1) as u32;
    let finished = tokio::time::timeout(cfg.drain_grace(), shared.permits.acquire_many(all))
        .await
        .is_ok();
    if !finished {
        warn!(worker = %id, "grace period over: handing unfinished tasks back");
        shared.abort.cancel();
    }
    debug!(worker = %id, "drain: running tasks ended; letting go of the lanes");
    // Every step from here on is bounded: whatever the broker does, a drain ends.
    let released = bounded("letting go of the lanes", async {
        let _ = control_loop.await;
        let _ = default_loop.await;
    })
    .await;
    if !released {
        shared.abort.cancel();
    }
    heartbeat.abort();
    debug!(worker = %id, "drain: lanes released; saying goodbye");
    bounded("saying goodbye", async {
        let goodbye = Event::Offline { worker: id.clone() };
        if let Err(e) = events.emit_confirmed(goodbye).await {
            warn!(error = %e, "could not say goodbye");
        }
    })
    .await;
    drop(events);
    drop(shared);
    pump.abort();
    bounded(
        "closing the connection",
        conn.close(200, "worker drained".into()),
    )
    .await;
    info!(worker = %id, "worker stopped");
    Ok(())
}

/// The server declares the topology; a worker that starts first waits for it. False when
/// shutdown came first.
async fn wait_for_topology(
    conn: &Connection,
    topo: &Topology,
    shutdown: &CancellationToken,
) -> Result<bool, WorkerError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for attempt in 0u32.. {
        let ch = conn.create_channel().await?;
        match ch
            .queue_declare(topo.default_queue().into(), passive, FieldTable::default())
            .await
        {
            Ok(_) => {
                let _ = ch.close(200, "ok".into()).await;
                return Ok(true);
            }
            Err(e) => {
                if attempt == 0 {
                    info!(queue = %topo.default_queue(), error = %e, "waiting for the server to declare the topology");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.cancelled() => return Ok(false),
                }
            }
        }
    }
    unreachable!()
}

async fn control_queue(conn: &Connection, shared: &Shared) -> Result<lapin::Consumer, WorkerError> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(
        q.name().clone(),
        shared.topo.control().into(),
        shared.id.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(ch
        .basic_consume(
            q.name().clone(),
            format!("lanes-worker-{}/control", shared.id).into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?)
}

async fn control_loop(
    conn: Arc<Connection>,
    shared: Arc<Shared>,
    mut control: lapin::Consumer,
    drain: CancellationToken,
) {
    let mut lanes: HashMap<String, (bool, CancellationToken, JoinHandle<()>)> = HashMap::new();
    loop {
        let delivery = tokio::select! {
            _ = shared.stop.cancelled() => break,
            d = control.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                error!(error = %e, "control consumer failed");
                shared.lost.cancel();
                break;
            }
            None => {
                shared.lost.cancel();
                break;
            }
        };
        match serde_json::from_slice::<Control>(&delivery.data) {
            Ok(Control::Assign {
                lanes: owned,
                standby,
                restart,
            }) => {
                for name in &restart {
                    if let Some((_, stop, _)) = lanes.remove(name) {
                        warn!(lane = %name, "subscribing to a lane afresh: the broker saw no consumer");
                        stop.cancel();
                    }
                }
                // A lane this worker owned and now only stands by for is subscribed again, so
                // that it queues up behind the new owner's consumer.
                lanes.retain(|name, (is_standby, stop, handle)| {
                    let keep = !handle.is_finished()
                        && (owned.contains(name) || (*is_standby && standby.contains(name)));
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                let wanted = owned.iter().map(|l| (l, false));
                for (name, is_standby) in wanted.chain(standby.iter().map(|l| (l, true))) {
                    if lanes.contains_key(name) {
                        continue;
                    }
                    let stop = shared.stop.child_token();
                    let delay = if is_standby {
                        STANDBY_DELAY
                    } else {
                        Duration::ZERO
                    };
                    let handle = tokio::spawn(lane_loop(
                        conn.clone(),
                        shared.clone(),
                        name.clone(),
                        stop.clone(),
                        delay,
                    ));
                    lanes.insert(name.clone(), (is_standby, stop, handle));
                }
            }
            Ok(Control::Drain) => drain.cancel(),
            Ok(record @ Control::Record { .. }) => deliver_record(&shared, record),
            Err(e) => warn!(error = %e, "ignoring malformed control message"),
        }
    }
    // Lanes finish their current task before letting go; it may still wait for an answer.
    let mut released = futures::future::join_all(lanes.into_values().map(|(_, stop, handle)| {
        stop.cancel();
        handle
    }));
    loop {
        tokio::select! {
            _ = &mut released => break,
            Some(Ok(d)) = control.next() => {
                if let Ok(record @ Control::Record { .. }) = serde_json::from_slice(&d.data) {
                    deliver_record(&shared, record);
                }
            }
        }
    }
}

/// What the server has recorded for a redelivered task.
#[derive(Debug)]
struct Record {
    state: Option<String>,
    attempts: i32,
}

fn deliver_record(shared: &Shared, record: Control) {
    let Control::Record {
        job,
        state,
        attempts,
    } = record
    else {
        return;
    };
    if let Some(waiting) = shared.asked.lock().unwrap().remove(&job) {
        let _ = waiting.send(Record { state, attempts });
    }
}

/// How long a redelivered task waits for the server's record before the broker's delivery
/// count stands in for it.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the server what it has recorded for a redelivered task; None without an answer.
async fn recorded(shared: &Shared, job: Uuid) -> Option<Record> {
    let (tx, rx) = oneshot::channel();
    let asked_at = std::time::Instant::now();
    shared.asked.lock().unwrap().insert(job, tx);
    shared.events.emit(Event::Redelivered {
        job,
        worker: shared.id.clone(),
    });
    let answer = tokio::select! {
        r = tokio::time::timeout(ASK_TIMEOUT, rx) => r.ok().and_then(Result::ok),
        _ = shared.abort.cancelled() => None,
    };
    shared.asked.lock().unwrap().remove(&job);
    match &answer {
        Some(record) => {
            debug!(%job, ?record, took = ?asked_at.elapsed(), "the server's record of a redelivered task")
        }
        None => {
            warn!(%job, "no record from the server for a redelivered task; counting deliveries")
        }
    }
    answer
}

/// Consumes one lane: one task at a time, in order, until told to let go of it. A standby
/// subscribes after `delay`, so that the owner's consumer is registered first and is the one
/// single active consumer makes active.
async fn lane_loop(
    conn: Arc<Connection>,
    shared: Arc<Shared>,
    lane: String,
    stop: CancellationToken,
    delay: Duration,
) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => return,
    }
    let mut counted = false;
    let result: Result<(), WorkerError> = async {
        let ch = conn.create_channel().await?;
        broker::prefetch(&ch, shared.cfg.lane_prefetch).await?;
        let consumer = ch
            .basic_consume(
                lane.as_str().into(),
                format!("lanes-worker-{}/{lane}", shared.id).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        let mut consumer = match consumer {
            Ok(c) => c,
            // The lane was deleted (the pool shrank) before this worker heard of it: the
            // broker closed this channel only. Not consuming it is right; the Supervisor's
            // next assignment says so.
            Err(e) if e.is_amqp_soft_error() => {
                debug!(%lane, error = %e, "lane does not exist; not consuming it");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        *shared
            .lanes
            .lock()
            .unwrap()
            .entry(lane.clone())
            .or_default() += 1;
        counted = true;
        debug!(%lane, "consuming lane");
        // A reader takes every delivery as it arrives, so that the tasks waiting in this
        // worker (up to the prefetch) are reported as held and never taken for lost.
        let (tx, mut inbox) = mpsc::unbounded_channel();
        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(next) = consumer.next().await {
                    if let Ok(d) = &next {
                        hold(&shared, d);
                    }
                    let failed = next.is_err();
                    if tx.send(next).is_err() || failed {
                        break;
                    }
                }
            })
        };
        let acks = LaneAcks::start(shared.clone());
        let result = loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                d = inbox.recv() => d,
            };
            match next {
                Some(Ok(delivery)) => {
                    let Some(permit) = acquire(&shared).await else {
                        break Ok(());
                    };
                    if let Some(finished) = execute(&shared, delivery, permit).await {
                        acks.push(finished);
                    }
                }
                Some(Err(e)) => break Err(e),
                None => {
                    // The broker cancelled the consumer: the lane was deleted (the pool
                    // shrank). The connection is fine; the lane just stops being reported.
                    debug!(%lane, "lane consumer cancelled by the broker");
                    break Ok(());
                }
            }
        };
        // Acks go out before the channel closes, or the tasks would run again. Closing
        // hands the tasks not started back to the lane, in order, for its next consumer.
        bounded("settling the lane's acks", acks.finish()).await;
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, "lane released".into()))
            .await
            .is_ok_and(|r| r.is_ok());
        if !closed && ch.status().connected() {
            // A channel the broker still sees open keeps its consumer active, holding the
            // lane's tasks with nobody running them. Only dropping the connection frees them.
            warn!(%lane, "could not close the lane's channel; reconnecting to let go of it");
            shared.lost.cancel();
        }
        // Only now may the consumer go: dropping it earlier would cancel it, and the broker
        // would make the next consumer active while this one still holds tasks, out of order.
        reader.abort();
        while let Ok(Ok(d)) = inbox.try_recv() {
            unhold(&shared, &d);
        }
        Ok(result?)
    }
    .await;
    if counted {
        let mut lanes = shared.lanes.lock().unwrap();
        if let Some(n) = lanes.get_mut(&lane) {
            *n -= 1;
            if *n == 0 {
                lanes.remove(&lane);
            }
        }
    }
    if let Err(e) = result {
        warn!(%lane, error = %e, "lane consumer stopped");
        shared.lost.cancel();
    }
}

async fn default_loop(conn: Arc<Connection>, shared: Arc<Shared>) {
    let result: Result<(), WorkerError> = async {
        let ch = conn.create_channel().await?;
        broker::prefetch(&ch, shared.cfg.concurrency.clamp(1, 2000) as u16).await?;
        let mut consumer = ch
            .basic_consume(
                shared.topo.default_queue().into(),
                format!("lanes-worker-{}/default", shared.id).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut inflight = Vec::new();
        loop {
            let Some(permit) = acquire(&shared).await else {
                break;
            };
            let next = tokio::select! {
                _ = shared.stop.cancelled() => break,
                d = consumer.next() => d,
            };
            match next {
                Some(Ok(delivery)) => {
                    let shared = shared.clone();
                    inflight.retain(|h: &JoinHandle<()>| !h.is_finished());
                    inflight.push(tokio::spawn(async move {
                        if let Some(finished) = execute(&shared, delivery, permit).await {
                            finished.settle_alone(&shared).await;
                        }
                    }));
                }
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        for h in inflight {
            let _ = h.await;
        }
        bounded(
            "closing the default queue's channel",
            ch.close(200, "worker stopping".into()),
        )
        .await;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        warn!(error = %e, "default queue consumer stopped");
        shared.lost.cancel();
    }
}

async fn acquire(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        p = shared.permits.clone().acquire_owned() => p.ok(),
        _ = shared.stop.cancelled() => None,
    }
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.heartbeat_interval());
    loop {
        tick.tick().await;
        let lanes = shared.lanes.lock().unwrap().keys().cloned().collect();
        let running = shared.held.lock().unwrap().iter().copied().collect();
        shared.events.emit(Event::Heartbeat {
            worker: shared.id.clone(),
            lanes,
            running,
            at: Utc::now(),
        });
    }
}

enum Outcome {
    Completed(serde_json::Value),
    Failed(String),
}

/// Notes a delivered task as held by this worker (reported in heartbeats) until it is acked or
/// handed back, so the server never mistakes it for a task whose message was lost.
fn hold(shared: &Shared, delivery: &Delivery) {
    if let Some(id) = task_id(delivery) {
        shared.held.lock().unwrap().insert(id);
    }
}

/// The broker has a delivery back (its channel closed before it started).
fn unhold(shared: &Shared, delivery: &Delivery) {
    if let Some(id) = task_id(delivery) {
        shared.held.lock().unwrap().remove(&id);
    }
}

fn task_id(delivery: &Delivery) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Uuid,
    }
    serde_json::from_slice::<Id>(&delivery.data)
        .ok()
        .map(|i| i.id)
}

/// Runs one delivered task to its final event, retrying in place; returns it to be acked once
/// that event is confirmed, or None when it is settled already or was abandoned.
async fn execute(
    shared: &Arc<Shared>,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
) -> Option<Finished> {
    let msg: LaneMessage = match serde_json::from_slice(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "dead-lettering a task message that does not parse");
            let _ = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            return None;
        }
    };
    // Lanes hold a task from its delivery on; the default queue's from here.
    shared.held.lock().unwrap().insert(msg.id);
    let deliveries = broker::delivery_count(&delivery.properties) as i32;
    let redelivered = deliveries > 0 || delivery.redelivered;
    // A redelivered task may have run already, or never have started (handed back from a
    // prefetch): the server's record says which, and how many attempts it has had.
    let prior = if redelivered {
        match recorded(shared, msg.id).await {
            Some(Record {
                state: Some(state), ..
            }) if state.parse::<JobState>().is_ok_and(JobState::is_final) => {
                info!(job = %msg.id, %state, "a redelivered task already ended; not running it again");
                shared.held.lock().unwrap().remove(&msg.id);
                drop(permit);
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    warn!(job = %msg.id, error = %e, "ack failed");
                }
                return None;
            }
            Some(Record { attempts, .. }) => attempts,
            None => deliveries,
        }
    } else {
        0
    };
    let outcome = run_attempts(shared, &msg, prior, redelivered).await;

    // The pool bounds running tasks; waiting for the broker's confirm is not running.
    drop(permit);
    let Some((outcome, attempt)) = outcome else {
        shared.held.lock().unwrap().remove(&msg.id);
        return None; // abandoned: the message goes back to the lane when the channel closes
    };
    let (worker, job, at) = (shared.id.clone(), msg.id, Utc::now());
    let event = match outcome {
        Outcome::Completed(result) => Event::Completed {
            job,
            worker,
            result,
            attempt,
            at,
        },
        Outcome::Failed(error) => Event::Failed {
            job,
            worker,
            error,
            attempt,
            at,
        },
    };
    // The task is done and its final event queued behind everything it published; the ack
    // follows the broker's confirm (see `acks`). Meanwhile the next task may start.
    Some(Finished {
        job,
        receipt: Box::pin(shared.events.emit_with_receipt(event)),
        acker: delivery.acker,
    })
}

/// Runs the task's attempts in place; returns the outcome and the last attempt's number, or
/// None when the task was abandoned. `prior` attempts already started elsewhere. A
/// redelivered task's first attempt here is on record (confirmed) before it runs, so that a
/// task that kills its worker every time is counted every time.
async fn run_attempts(
    shared: &Shared,
    msg: &LaneMessage,
    prior: i32,
    redelivered: bool,
) -> Option<(Outcome, i32)> {
    let budget = msg.max_attempts - prior;
    if budget <= 0 {
        return Some((
            Outcome::Failed(format!(
                "gave up after {prior} attempts: the worker running this task stopped each time"
            )),
            prior,
        ));
    }
    let mut last_error = String::new();
    for n in 1..=budget {
        let attempt = prior + n;
        let started = Event::Started {
            job: msg.id,
            worker: shared.id.clone(),
            attempt,
            at: Utc::now(),
        };
        if redelivered && n == 1 {
            if let Err(e) = shared.events.emit_confirmed(started).await {
                warn!(job = %msg.id, error = %e, "start of a redelivered task not confirmed");
            }
        } else {
            shared.events.emit(started);
        }
        let ctx = Ctx::new(
            msg.id,
            attempt,
            shared.progress.clone(),
            shared.abort.child_token(),
        );
        let Some(fut) = shared.registry.call(&msg.task, ctx, msg.args.clone()) else {
            return Some((
                Outcome::Failed(format!(
                    "no handler for task `{}` on worker {}",
                    msg.task, shared.id
                )),
                attempt,
            ));
        };
        let handle = tokio::spawn(fut);
        let stopper = handle.abort_handle();
        let joined = tokio::select! {
            j = handle => j,
            _ = shared.abort.cancelled() => {
                // Abandoned (connection lost or grace over): the broker gives the task to
                // another worker, so it must stop here, not run beside its successor.
                stopper.abort();
                return None;
            }
        };
        match joined {
            Ok(Ok(value)) => return Some((Outcome::Completed(value), attempt)),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(e) if e.is_panic() => last_error = format!("task panicked: {}", panic_message(e)),
            Err(e) => last_error = format!("task aborted: {e}"),
        }
        if shared.abort.is_cancelled() {
            return None;
        }
        if n < budget {
            let backoff = Duration::from_millis((50u64 << (n - 1).min(8) as u64).min(5_000));
            debug!(job = %msg.id, attempt, error = %last_error, ?backoff, "task failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shared.abort.cancelled() => return None,
            }
        }
    }
    Some((Outcome::Failed(last_error), msg.max_attempts))
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
