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
//!
//! The parts: `connection` (one connection, its start and its end), `session` (what its
//! parts share), `shutdown` (the stages of
//! ending), `control` (the server's orders), `lane` and `default_queue` (consuming),
//! `execute` (one task and its attempts), `ask` (the server's record of a redelivered task),
//! `events` (the event pump), `acks` (acking once events are durable), `tally` (held tasks and
//! consumed lanes, counted by guards).

mod acks;
mod ask;
mod cancels;
mod connection;
mod control;
mod default_queue;
mod delivered;
mod events;
mod execute;
mod lane;
mod metrics;
mod redelivery;
mod session;
mod shutdown;
mod tally;

use crate::{
    backoff,
    broker::BrokerError,
    config::{BrokerConfig, WorkerConfig},
    tasks::{BlockingPool, Registry},
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

pub use metrics::serve as serve_metrics;
pub use session::SessionError as WorkerError;

/// A worker's fresh anonymous id.
pub fn new_worker_id() -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("w-{}", &id[..12])
}

/// Runs a worker until `shutdown` fires (then drains) or a `drain` order arrives. A lost
/// connection is re-established under the same id; only a first connection that fails is an
/// error.
pub async fn run(
    broker_cfg: &BrokerConfig,
    cfg: &WorkerConfig,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let id = new_worker_id();
    // One pool for the process: threads of an abandoned session may still be busy in it.
    let blocking = BlockingPool::new(cfg.blocking_threads);
    let mut first = true;
    let mut delays = backoff::reconnect();
    loop {
        match connection::run(broker_cfg, cfg, (&registry, &blocking), &shutdown, &id).await {
            Ok(()) => return Ok(()),
            // A worker that cannot connect at start says so and exits.
            Err(e @ WorkerError::Broker(BrokerError::Connect { .. })) if first => return Err(e),
            Err(e) => {
                let retry_in = delays.next().unwrap_or(backoff::MAX_DELAY);
                warn!(worker = %id, error = %e, ?retry_in, "lost the broker; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(retry_in) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
        first = false;
    }
}
