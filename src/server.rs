//! `lanes server`: the control plane. The HTTP API always runs; the Dispatcher, Supervisor and
//! Callback run only on the active server, the holder of a Postgres advisory lock (standbys
//! wait for it). The control plane is crash-only: when any part of it fails (broker or
//! database gone, a consumer cancelled), all of it is torn down and rebuilt from Postgres.

use crate::{
    api::{self, ApiState},
    broker::{self, BrokerError, Publisher, Topology},
    callback::Callback,
    config::{BrokerConfig, ServerConfig},
    dispatcher::{DispatchError, Dispatcher, KnownTasks, Pool},
    fence::Fence,
    store::{Store, StoreError},
    supervisor::{Shutdown, Supervisor},
    tasks::Registry,
};
use actix::prelude::*;
use futures::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable};
use sqlx::{postgres::PgConnection, Connection};
use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::Duration,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
    #[error("lost the leader lock: {0}")]
    Leader(sqlx::Error),
    #[error("a control plane component stopped")]
    ComponentStopped,
}

type ActiveActors = (Addr<Dispatcher>, Addr<Supervisor>);

/// The running control plane's actors, for the HTTP API. `None` while not active.
#[derive(Clone, Default)]
pub struct Active {
    inner: Arc<RwLock<Option<ActiveActors>>>,
}

impl Active {
    pub fn get(&self) -> Option<(Addr<Dispatcher>, Addr<Supervisor>)> {
        self.inner.read().expect("active lock").clone()
    }
    fn set(&self, v: Option<(Addr<Dispatcher>, Addr<Supervisor>)>) {
        *self.inner.write().expect("active lock") = v;
    }
}

/// Runs the server until `shutdown` fires.
pub async fn run(
    broker_cfg: &BrokerConfig,
    cfg: &ServerConfig,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let store = Store::connect(&cfg.database_url).await?;
    crate::telemetry::metrics();
    let topo = Topology::new(&broker_cfg.prefix);
    let tasks: KnownTasks = Arc::new(RwLock::new(
        registry.names().into_iter().collect::<BTreeSet<_>>(),
    ));
    let active = Active::default();
    let state = ApiState::new(
        store.clone(),
        broker_cfg.clone(),
        cfg.clone(),
        tasks.clone(),
        active.clone(),
    );
    let http = api::serve(state, &cfg.http_addr).map_err(|source| ServerError::Http {
        addr: cfg.http_addr.clone(),
        source,
    })?;
    let http_handle = http.handle();
    actix::spawn(http);
    info!(addr = %cfg.http_addr, "HTTP API listening");

    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let Some(mut lock) =
            acquire_leadership(&cfg.database_url, &broker_cfg.prefix, &shutdown).await
        else {
            break;
        };
        info!(prefix = %broker_cfg.prefix, "this server is active");
        let result = control_plane(
            broker_cfg, cfg, &store, &topo, &tasks, &active, &mut lock, &shutdown,
        )
        .await;
        active.set(None);
        let _ = lock.close().await;
        match result {
            Ok(()) => break,
            Err(e) => {
                error!(error = %e, retry_in = ?backoff, "control plane stopped; rebuilding it");
                metrics::counter!("lanes_control_plane_restarts_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    http_handle.stop(true).await;
    info!("server stopped");
    Ok(())
}

/// Waits until this server holds the leader lock (on its own connection), or shutdown.
async fn acquire_leadership(
    url: &str,
    prefix: &str,
    shutdown: &CancellationToken,
) -> Option<PgConnection> {
    let mut said = false;
    loop {
        match PgConnection::connect(url).await {
            Ok(mut conn) => {
                let got: Result<(bool,), _> = // Postgres hashes the key, so every server build agrees on it (Rust's
                // DefaultHasher may differ between compiler versions).
                sqlx::query_as("SELECT pg_try_advisory_lock(hashtext('lanes-leader:' || $1))")
                    .bind(prefix)
                    .fetch_one(&mut conn)
                    .await;
                match got {
                    Ok((true,)) => return Some(conn),
                    Ok((false,)) if !said => {
                        info!("standby: another server is active; waiting to take over");
                        said = true;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot take the leader lock"),
                }
                let _ = conn.close().await;
            }
            Err(e) => warn!(error = %e, "cannot reach PostgreSQL for the leader lock"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn control_plane(
    broker_cfg: &BrokerConfig,
    cfg: &ServerConfig,
    store: &Store,
    topo: &Topology,
    tasks: &KnownTasks,
    active: &Active,
    lock: &mut PgConnection,
    shutdown: &CancellationToken,
) -> Result<(), ServerError> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let conn =
        Arc::new(broker::connect(&broker_cfg.amqp_url, &format!("lanes-server@{host}")).await?);
    let ch = conn.create_channel().await?;
    topo.declare(&ch).await?;
    let failed = CancellationToken::new();
    let supervisor = Supervisor::new(
        topo.clone(),
        cfg.heartbeat_timeout(),
        Publisher::new(&conn).await?,
    )
    .with_fence(fence(cfg))
    .start();
    // The Dispatcher opens (declares) the lanes it needs and tells the Supervisor.
    let dispatcher = Dispatcher::recover(
        store.clone(),
        Publisher::new(&conn).await?,
        topo.clone(),
        conn.clone(),
        supervisor.clone(),
        Pool {
            min: cfg.min_queues,
            max: cfg.max_queues,
            cool_down: cfg.queue_cool_down(),
        },
        tasks.clone(),
        cfg.max_payload,
        failed.clone(),
    )
    .await?;
    let submit = consumer(&conn, &topo.submit(), "lanes-server/dispatcher", 2000).await?;
    let dispatcher = Dispatcher::create(move |ctx| {
        ctx.add_stream(submit.ready_chunks(1000));
        dispatcher
    });
    let events = consumer(&conn, &topo.events(), "lanes-server/callback", 2000).await?;
    let callback = Callback::new(
        store.clone(),
        topo.clone(),
        dispatcher.clone(),
        supervisor.clone(),
        Publisher::new(&conn).await?,
        tasks.clone(),
        failed.clone(),
    );
    let _callback = Callback::create(move |ctx| {
        ctx.add_stream(events.ready_chunks(2000));
        callback
    });
    active.set(Some((dispatcher.clone(), supervisor.clone())));

    let mut check = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = failed.cancelled() => break Err(ServerError::ComponentStopped),
            _ = check.tick() => {
                if let Err(e) = sqlx::query("SELECT 1").execute(&mut *lock).await {
                    break Err(ServerError::Leader(e));
                }
            }
        }
    };
    active.set(None);
    // From here on, components that stop because the connection closes are expected to.
    failed.cancel();
    supervisor.do_send(Shutdown);
    // Closing the connection ends the consumers (their actors stop) and hands every unacked
    // submit and event message back to the broker for the next control plane.
    let _ = conn.close(200, "control plane stopping".into()).await;
    result
}

fn fence(cfg: &ServerConfig) -> Option<Fence> {
    let url = cfg.management_url.as_deref().filter(|u| !u.is_empty())?;
    match Fence::new(url) {
        Ok(f) => Some(f),
        Err(e) => {
            warn!(error = %e, "fencing of silent workers is off");
            None
        }
    }
}

async fn consumer(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> Result<lapin::Consumer, ServerError> {
    let ch = conn.create_channel().await?;
    broker::prefetch(&ch, prefetch).await?;
    Ok(ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}
