//! What every component of one control plane is built from: one value, so that each
//! component's constructor takes it whole instead of a long list of arguments.

use super::{stall::WriteClock, Failure, KnownTasks};
use crate::{broker::Topology, config::ServerConfig, store::Store};
use lapin::{options::BasicConsumeOptions, types::FieldTable, Connection};
use std::sync::Arc;

/// What every component of one control plane is built from.
#[derive(Clone)]
pub struct Plane {
    pub cfg: ServerConfig,
    /// The broker user this server connects as: submits published under it (the API's) may
    /// name the token they came with.
    pub broker_user: Option<String>,
    pub store: Store,
    pub topo: Topology,
    pub conn: Arc<Connection>,
    pub tasks: KnownTasks,
    pub failure: Failure,
    /// Marks the Callback's writes, for the Supervisor's liveness judgement.
    pub writes: WriteClock,
}

impl Plane {
    /// A consumer of `queue` on a channel of its own.
    pub async fn consumer(
        &self,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<lapin::Consumer, lapin::Error> {
        let ch = self.conn.create_channel().await?;
        ch.basic_qos(prefetch, Default::default()).await?;
        ch.basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    }
}
