//! One control plane: a broker connection, the topology, and the three actors (Supervisor,
//! Dispatcher, Callback) built from one `Plane` value. It runs until shutdown, a component's
//! failure, or the loss of the leader lock; then everything is torn down, and the unacked
//! submit and event messages go back to the broker for the next one.

use super::Active;
use super::{
    callback::Callback,
    dispatcher::Dispatcher,
    fence::Fence,
    leader::Leadership,
    plane::Plane,
    retention,
    stall::WriteClock,
    supervisor::{CancelJobs, Supervisor},
    Failure, KnownTasks, ServerError,
};
use crate::{
    broker::{self, Publisher, Topology},
    config::{BrokerConfig, Retention, ServerConfig},
    store::Store,
};
use actix::prelude::*;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long the broker may take to answer a closing control plane's connection.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// What lives across control planes (a server builds it once).
pub struct Shared {
    pub broker: BrokerConfig,
    pub cfg: ServerConfig,
    pub store: Store,
    pub topo: Topology,
    pub tasks: KnownTasks,
    pub active: Active,
    /// The certificates trusted beside the system's (`LANES_CA_FILE`).
    pub trust: crate::tls::Trust,
}

/// Builds and runs a control plane while this server holds `lock`.
pub async fn run(
    shared: &Shared,
    lock: &mut Leadership,
    shutdown: &CancellationToken,
) -> Result<(), ServerError> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let lease = lock.lease().clone();
    // The fence finds a control plane's connections by this name (prefix and epoch).
    let name = format!("lanes-server-{}-e{}@{host}", lease.prefix, lease.epoch);
    let fence = fence(&shared.cfg, &shared.broker.amqp_url, &shared.trust);
    // Before this control plane consumes anything, the ones before it (which may only be
    // stopped, not dead) lose their broker connections: submit has a single active consumer,
    // and it must be this one.
    match &fence {
        Some(f) => {
            // Not fatal: the one before is most often dead, and its inserts fail on the epoch
            // whatever the broker says.
            if let Err(e) = f.close_servers_before(&lease.prefix, lease.epoch).await {
                warn!(error = %e, "could not fence the control planes before this one");
            }
        }
        None => {
            warn!("no management API: control planes before this one are not fenced on the broker")
        }
    }
    // Task names workers offered to earlier control planes (see `store::task_names`).
    let recorded = shared.store.task_names().await?;
    shared.tasks.learn(recorded);
    let conn = Arc::new(broker::connect(&shared.broker.amqp_url, &name, &shared.trust).await?);
    shared.topo.declare(&conn).await?;
    let plane = Plane {
        cfg: shared.cfg.clone(),
        broker_user: crate::broker::user_of(&shared.broker.amqp_url),
        store: shared.store.fenced_by(lease),
        topo: shared.topo.clone(),
        conn: conn.clone(),
        tasks: shared.tasks.clone(),
        failure: Failure::default(),
        writes: WriteClock::default(),
    };
    let supervisor = Supervisor::new(
        plane.topo.clone(),
        plane.cfg.heartbeat_timeout(),
        Publisher::new(&conn).await?,
        conn.clone(),
        plane.writes.clone(),
    )
    .with_fence(fence);
    let slots = supervisor.slots();
    let supervisor = supervisor.start();
    supervisor.do_send(CancelJobs(plane.store.pending_cancels().await?));
    // The Dispatcher opens (declares) the lanes it needs and tells the Supervisor.
    let dispatcher = Dispatcher::start(&plane, supervisor.clone(), slots).await?;
    Callback::start(&plane, dispatcher.clone(), supervisor.clone()).await?;
    shared
        .active
        .set(Some((dispatcher.clone(), supervisor.clone())));

    // Retention runs while this control plane does; the guard stops it however it ends.
    let pruning = CancellationToken::new();
    let _stop_pruning = pruning.clone().drop_guard();
    if let Retention(Some(keep)) = plane.cfg.retention {
        let every = Duration::from_millis(plane.cfg.retention_every_ms.max(100));
        tokio::spawn(retention::run(plane.store.clone(), keep, every, pruning));
    }
    let mut renew = tokio::time::interval(lock.renew_every());
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = plane.failure.failed() => break Err(ServerError::ComponentStopped),
            _ = renew.tick() => {
                if let Err(e) = lock.renew().await {
                    break Err(e.into());
                }
            }
        }
    };
    shared.active.set(None);
    // From here on, components that stop because the connection closes are expected to.
    plane.failure.stopping();
    supervisor.do_send(super::supervisor::Shutdown);
    // Closing the connection ends the consumers (their actors stop) and hands every unacked
    // submit and event message back to the broker for the next control plane. Bounded: a
    // close the broker does not answer must not keep this server from its next control plane,
    // which fences this one's connection by name.
    let closing = conn.close(200, "control plane stopping".into());
    if tokio::time::timeout(CLOSE_WITHIN, closing).await.is_err() {
        warn!("closing the control plane's broker connection is taking long; going on");
    }
    result
}

fn fence(cfg: &ServerConfig, amqp_url: &str, trust: &crate::tls::Trust) -> Option<Fence> {
    let url = cfg.management_url.as_deref().filter(|u| !u.is_empty())?;
    let worker = cfg.fence_worker_credentials.as_deref();
    match Fence::new(url, amqp_url, worker).and_then(|f| f.with_trust(trust)) {
        Ok(f) if !f.fences_workers() => {
            warn!(
                "fencing of silent workers is off: the management URL carries no administrator \
                 and LANES_FENCE_WORKER_CREDENTIALS is not set"
            );
            Some(f)
        }
        Ok(f) => Some(f),
        Err(e) => {
            warn!(error = %e, "fencing of silent workers is off");
            None
        }
    }
}
