//! `lanes server`: the control plane. The HTTP API always runs; the Dispatcher, Supervisor and
//! Callback run only on the active server, the holder of the leader lock (`leader`; standbys
//! wait for it). The control plane is crash-only: when any part of it fails (broker or
//! database gone, a consumer cancelled), all of it is torn down and rebuilt from Postgres.
//!
//! The parts: `control_plane` (building and running one), `dispatcher` (the traffic cop) with
//! `routing` (its rules), `supervisor` with `assignment` (lanes to workers) and `fence`,
//! `callback` (job state from worker events), `reconcile` (lost lane messages), `failure` (the
//! one restart signal).

mod active;
pub mod assignment;
pub mod callback;
mod control_plane;
mod dead_letters;
pub mod dispatcher;
mod failure;
pub mod fence;
pub mod in_order;
pub mod known_tasks;
mod leader;
mod plane;
pub mod reconcile;
mod retention;
pub mod routing;
mod stall;
pub mod supervisor;

use crate::{
    backoff,
    broker::{BrokerError, Topology},
    config::{BrokerConfig, ServerConfig},
    store::{Store, StoreError},
    tasks::Registry,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use active::{Active, Standing};
pub use dispatcher::DispatchError;
pub use failure::Failure;
pub use known_tasks::KnownTasks;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error(transparent)]
    Callback(#[from] callback::CallbackError),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error("a control plane component stopped")]
    ComponentStopped,
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Tokens(#[from] crate::api::tokens::TokensError),
}

/// A server's state across control planes: the store, the task names it accepts, and the
/// running control plane's actors (for the HTTP API, which the caller serves beside it).
pub struct Server {
    /// This server's name in the lease (`s-<random>@host`).
    id: String,
    shared: control_plane::Shared,
}

impl Server {
    /// Connects to the database (creating and migrating it if needed).
    pub async fn build(
        broker_cfg: &BrokerConfig,
        cfg: &ServerConfig,
        registry: &Registry,
    ) -> Result<Server, ServerError> {
        let trust = broker_cfg.trust()?;
        let store = Store::connect(&cfg.database_url).await?;
        crate::telemetry::metrics();
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let id = uuid::Uuid::new_v4().simple().to_string();
        Ok(Server {
            id: format!("s-{}@{host}", &id[..12]),
            shared: control_plane::Shared {
                broker: broker_cfg.clone(),
                cfg: cfg.clone(),
                store,
                topo: Topology::new(&broker_cfg.prefix)
                    .with_group_size(broker_cfg.quorum_group_size),
                tasks: KnownTasks::new(registry.names()),
                active: Active::default(),
                trust,
            },
        })
    }

    pub fn store(&self) -> Store {
        self.shared.store.clone()
    }

    /// The certificates this server trusts beside the system's.
    pub fn trust(&self) -> crate::tls::Trust {
        self.shared.trust.clone()
    }

    pub fn tasks(&self) -> KnownTasks {
        self.shared.tasks.clone()
    }

    pub fn active(&self) -> Active {
        self.shared.active.clone()
    }

    /// Waits for the leader lock and runs the control plane, rebuilding it after a failure,
    /// until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let (shared, cfg) = (&self.shared, &self.shared.cfg);
        let mut delays = backoff::reconnect();
        crate::telemetry::server_started();
        while !shutdown.is_cancelled() {
            let prefix = &shared.broker.prefix;
            let leader = leader::Leadership::acquire(
                &shared.store,
                prefix,
                &self.id,
                cfg.lease(),
                &shared.active,
                &shutdown,
            );
            let Some(mut lock) = leader.await else {
                break;
            };
            info!(%prefix, epoch = lock.lease().epoch, "this server is active");
            metrics::gauge!("lanes_active").set(1.0);
            let result = control_plane::run(shared, &mut lock, &shutdown).await;
            shared.active.set(None);
            crate::telemetry::step_down();
            lock.release().await;
            match result {
                Ok(()) => break,
                Err(e) => {
                    let retry_in = delays.next().unwrap_or(backoff::MAX_DELAY);
                    error!(error = %e, ?retry_in, "control plane stopped; rebuilding it");
                    metrics::counter!("lanes_control_plane_restarts_total").increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(retry_in) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
    }
}
