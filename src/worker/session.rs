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
use lapin::Connection;
use std::sync::Arc;

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
}

/// What every part of a running session shares.
pub struct Session {
    pub id: String,
    pub conn: Arc<Connection>,
    pub topo: Topology,
    pub cfg: WorkerConfig,
    pub runner: Arc<Runner>,
    pub held: Held,
    pub consumed: Consumed,
    pub shutdown: Shutdown,
}
