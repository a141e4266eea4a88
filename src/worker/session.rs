//! What every part of a running worker session shares (`Session`), and how its parts fail
//! (`SessionError`). The session's life itself is in `connection`.

use super::{
    events::EventError,
    execute::Runner,
    shutdown::Shutdown,
    tally::{Consumed, Held},
};
use crate::{
    broker::{BrokerError, Topology},
    config::WorkerConfig,
};
use lapin::{Channel, Connection};
use std::sync::Arc;
use std::{future::Future, time::Duration};
use tokio_util::sync::CancellationToken;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("could not say hello: {0}")]
    Hello(#[from] EventError),
    #[error("the connection to the broker was lost")]
    ConnectionLost,
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// How consuming a queue (a lane, the default queue) ended.
pub enum Ended {
    /// Let go: taken away, deleted, or the worker drains.
    Stopped,
    /// The broker closed the consumer's channel while the connection lives (its consumer
    /// timeout, say): the queue's messages are back with it, and it is consumed again.
    ChannelClosed,
}

/// A pause before subscribing again after the broker closed a consumer's channel.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(200);

/// What every part of a running session shares.
pub struct Session {
    pub id: String,
    pub conn: Arc<Connection>,
    /// This session's exclusive control queue (see `control::subscribe`); heartbeats name it.
    pub control_queue: String,
    pub topo: Topology,
    pub cfg: WorkerConfig,
    pub runner: Arc<Runner>,
    pub held: Held,
    pub consumed: Consumed,
    pub shutdown: Shutdown,
}

impl Session {
    /// Runs `consume` (one subscription to `what`) again each time the broker closes its
    /// channel, until it stops or `stop` fires; a failure drops the connection.
    pub async fn resubscribing<F, Fut>(&self, what: &str, stop: &CancellationToken, mut consume: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Ended, SessionError>>,
    {
        loop {
            match consume().await {
                Ok(Ended::Stopped) => return,
                Ok(Ended::ChannelClosed) => {
                    warn!("the broker closed the {what}'s channel; subscribing again");
                    tokio::select! {
                        _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    warn!(error = %e, "{what} consumer stopped");
                    self.shutdown.lose_connection();
                    return;
                }
            }
        }
    }

    /// Whether the broker closed `ch` while the connection lives: the deliveries of `ch` are
    /// back with the broker, maybe with another worker already, and none may start here.
    pub fn channel_closed(&self, ch: &Channel) -> bool {
        !ch.status().connected() && self.conn.status().connected()
    }
}
