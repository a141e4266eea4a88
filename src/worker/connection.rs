//! One connection's worth of work: connect, wait for the topology, say hello, consume the
//! default queue and the assigned lanes, heartbeat, and end in one of two ways: drained (Ok)
//! or connection lost (Err: unacked tasks go back to their lanes, the caller reconnects).

use super::{
    ask::Asks,
    control, default_queue,
    events::EventSink,
    execute::Runner,
    session::{Session, SessionError},
    shutdown::{bounded, Shutdown},
    tally::{Consumed, Held},
};
use crate::{
    broker::{self, Publisher, Topology},
    config::{BrokerConfig, WorkerConfig},
    protocol::{Event, Progress, WorkerInfo},
    tasks::{BlockingPool, Registry},
};
use chrono::Utc;
use lapin::Connection;
use std::{
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// Connections a process opens at once. A process of many workers (`lanes worker --workers`)
/// that starts, or comes back after the broker did, would otherwise ask for all their
/// handshakes at once, and the last ones would time out behind the others.
const CONNECTING_AT_ONCE: usize = 8;
/// The largest AMQP frame a worker takes (unless its URL sets `frame_max`): what lapin keeps
/// for a connection's frames is 64 of them, 1 MiB at this size, where the broker's
/// default makes it 8 MiB.
const FRAME_MAX: u32 = 16 * 1024;
static CONNECTING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(CONNECTING_AT_ONCE));

/// Runs one session until it drains (Ok) or loses its connection (Err).
pub async fn run(
    broker_cfg: &BrokerConfig,
    cfg: &WorkerConfig,
    (registry, blocking): (&Arc<Registry>, &BlockingPool),
    requested: &CancellationToken,
    id: &str,
) -> Result<(), SessionError> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let name = format!("lanes-worker-{id}@{host}");
    let conn = {
        let _turn = CONNECTING
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let urls = broker::with_frame_max(&broker_cfg.amqp_url, FRAME_MAX);
        Arc::new(broker::connect(&urls, &name, &broker_cfg.trust()?).await?)
    };
    let topo = Topology::new(&broker_cfg.prefix);
    if !wait_for_topology(&conn, &topo, requested).await? {
        return Ok(()); // shut down before the server ever came up
    }
    let (events, pump) = EventSink::start(Publisher::new(&conn).await?, topo.worker_events());
    let shutdown = Shutdown::new(requested);
    let runner = Arc::new(Runner {
        worker: id.to_owned(),
        registry: registry.clone(),
        events: events.clone(),
        progress: forward_progress(events.clone()),
        asks: Asks::new(id.to_owned(), events.clone()),
        shutdown: shutdown.clone(),
        permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        running: Default::default(),
        cancels: Default::default(),
        blocking: blocking.clone(),
        stop_grace: cfg.broker_silence(),
        ended: Default::default(),
    });
    // A fresh control queue per session: the broker may not have noticed yet that the last
    // session's connection is gone.
    let fresh = &Uuid::new_v4().simple().to_string()[..8];
    let control_queue = topo.worker_control(&format!("{id}.{fresh}"));
    let session = Arc::new(Session {
        id: id.to_owned(),
        conn: conn.clone(),
        control_queue,
        topo,
        cfg: cfg.clone(),
        runner,
        held: Held::default(),
        consumed: Consumed::default(),
        shutdown: shutdown.clone(),
    });
    let control = control::subscribe(&session).await?;
    let hello = Event::Online(WorkerInfo {
        worker: id.to_owned(),
        host,
        pid: std::process::id(),
        concurrency: cfg.concurrency,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        tasks: registry.names(),
    });
    events.emit_confirmed(hello).await?;
    info!(worker = %id, concurrency = cfg.concurrency, "worker online");

    let consumers = {
        let default_loop = tokio::spawn(default_queue::run(session.clone()));
        let control_loop = tokio::spawn(control::run(session.clone(), control));
        async move {
            let _ = control_loop.await;
            let _ = default_loop.await;
        }
    };
    let heartbeat = tokio::spawn(heartbeat(session.clone()));
    shutdown.draining().await;
    if shutdown.is_lost() {
        heartbeat.abort();
        pump.abort();
        bounded("stopping the consumers", consumers).await;
        bounded(
            "closing the connection",
            conn.close(200, "reconnecting".into()),
        )
        .await;
        return Err(SessionError::ConnectionLost);
    }
    info!(worker = %id, "draining");
    let all = cfg.concurrency.max(1) as u32;
    let permits = session.runner.permits.clone();
    if tokio::time::timeout(cfg.drain_grace(), permits.acquire_many(all))
        .await
        .is_err()
    {
        warn!(worker = %id, "grace period over: handing unfinished tasks back");
        shutdown.abandon();
    }
    debug!(worker = %id, "drain: running tasks ended; letting go of the lanes");
    // Every step from here on is bounded: whatever the broker does, a drain ends.
    if !bounded("letting go of the lanes", consumers).await {
        shutdown.abandon();
    }
    heartbeat.abort();
    debug!(worker = %id, "drain: lanes released; saying goodbye");
    bounded("saying goodbye", async {
        let goodbye = Event::Offline {
            worker: id.to_owned(),
        };
        if let Err(e) = events.emit_confirmed(goodbye).await {
            warn!(error = %e, "could not say goodbye");
        }
    })
    .await;
    drop((events, session));
    pump.abort();
    bounded(
        "closing the connection",
        conn.close(200, "worker drained".into()),
    )
    .await;
    info!(worker = %id, "worker stopped");
    Ok(())
}

/// How long progress reports gather before the latest of each job goes out.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// A handler's progress reports, as events: only the latest per job in each short window, so
/// a task that reports in a tight loop cannot flood the events (and delay the heartbeats).
fn forward_progress(events: EventSink) -> mpsc::UnboundedSender<(Uuid, Progress)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Uuid, Progress)>();
    tokio::spawn(async move {
        while let Some((job, progress)) = rx.recv().await {
            let mut latest = std::collections::HashMap::from([(job, progress)]);
            tokio::time::sleep(PROGRESS_EVERY).await;
            while let Ok((job, progress)) = rx.try_recv() {
                latest.insert(job, progress);
            }
            for (job, progress) in latest {
                events.emit(Event::Progress { job, progress });
            }
        }
    });
    tx
}

/// Says this worker is alive, with the lanes it consumes and the tasks it holds, and watches
/// that the broker takes what it says. A worker whose heartbeats go unconfirmed for
/// `broker_silence` is cut off (a partition, a dead path that has not closed its socket): the
/// server will soon declare it dead and give its lanes to others, so it stops its tasks
/// first, before they could run beside their successors, and reconnects.
async fn heartbeat(session: Arc<Session>) {
    let limit = session.cfg.broker_silence();
    // At least two heartbeats in every silence window, whatever the settings say.
    let every = session.cfg.heartbeat_interval().min(limit / 2);
    let confirmed = Arc::new(std::sync::Mutex::new(Instant::now()));
    let mut tick = tokio::time::interval(every.min(limit / 4));
    let mut last_beat = Instant::now() - every;
    let mut running = super::metrics::Running::default();
    loop {
        tick.tick().await;
        if last_beat.elapsed() >= every {
            last_beat = Instant::now();
            running.set(session.held.keys().len());
            let receipt = session.runner.events.emit_with_receipt(Event::Heartbeat {
                worker: session.id.clone(),
                lanes: session.consumed.keys(),
                running: session.held.keys(),
                at: Utc::now(),
                tasks: session.runner.registry.names(),
                control: Some(session.control_queue.clone()),
                slots: Some(session.cfg.concurrency.max(1)),
            });
            let confirmed = confirmed.clone();
            tokio::spawn(async move {
                if receipt.await.is_ok() {
                    *confirmed.lock().expect("heartbeat lock") = Instant::now();
                }
            });
        }
        let silent = confirmed.lock().expect("heartbeat lock").elapsed();
        if silent > limit {
            warn!(worker = %session.id, ?silent, "the broker confirms nothing: cut off; stopping every task and reconnecting");
            session.shutdown.lose_connection();
            return;
        }
    }
}

/// The server declares the topology; a worker that starts first waits for it. False when
/// shutdown came first.
async fn wait_for_topology(
    conn: &Connection,
    topo: &Topology,
    requested: &CancellationToken,
) -> Result<bool, SessionError> {
    let queue = topo.default_queue();
    let mut said = false;
    // The events exchange too: a server older than this worker declares none, and publishing
    // to a missing exchange would close the pump's channel (upgrade servers first).
    while broker::queue_counts(conn, &queue).await?.is_none()
        || !broker::exchange_exists(conn, &topo.worker_events()).await?
    {
        if !said {
            info!(%queue, "waiting for the server to declare the topology");
            said = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = requested.cancelled() => return Ok(false),
        }
    }
    Ok(true)
}
