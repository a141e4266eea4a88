//! The names of every broker object of one deployment (all under its prefix) and their
//! declarations, idempotent: quorum queues, single active consumer on `submit` and the lanes,
//! dead-lettering to `<prefix>.dead` with an explicit delivery limit. Workers publish their
//! events to an exchange of their own (`<prefix>.worker-events`), so a worker's broker user
//! needs no write on the default exchange, through which it could reach any queue.
//!
//! On a cluster every queue is replicated to `group_size` nodes (`x-quorum-initial-group-size`;
//! the broker caps it at the cluster's size). RabbitMQ refuses to declare an existing queue
//! with a group size it was not declared with, so a queue that already exists keeps its own
//! and the server says so.

use super::{BrokerError, Result, DELIVERY_LIMIT, INBOUND_DELIVERY_LIMIT};
use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
    Connection, ExchangeKind,
};
use std::collections::BTreeMap;

/// The names of every broker object of one deployment.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    /// Nodes each new queue is replicated to; None leaves it to the broker (all nodes).
    pub group_size: Option<u32>,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Topology {
            prefix: prefix.to_owned(),
            group_size: None,
        }
    }
    /// Replicates the queues this topology declares to `n` nodes (0: the broker's default).
    pub fn with_group_size(mut self, n: u32) -> Self {
        self.group_size = (n > 0).then_some(n);
        self
    }
    /// The submit exchange (routing key `submit`).
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }
    pub fn submit(&self) -> String {
        format!("{}.submit", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// The exchange workers (and executors' reports) publish events to, routing key `events`.
    pub fn worker_events(&self) -> String {
        format!("{}.worker-events", self.prefix)
    }
    /// A worker session's exclusive control queue (`session`: the worker's id and more).
    pub fn worker_control(&self, session: &str) -> String {
        format!("{}.worker.{session}", self.prefix)
    }
    /// Whether a queue name is under this deployment's prefix (a `reply_to` may not name one).
    pub fn owns(&self, queue: &str) -> bool {
        queue == self.prefix
            || queue
                .strip_prefix(&self.prefix)
                .is_some_and(|rest| rest.starts_with('.'))
    }
    pub fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    pub fn default_queue(&self) -> String {
        format!("{}.q.default", self.prefix)
    }
    pub fn lane(&self, n: u32) -> String {
        format!("{}.q.{n}", self.prefix)
    }
    /// The lane number of a lane queue name, if it is one.
    pub fn lane_index(&self, queue: &str) -> Option<u32> {
        queue
            .strip_prefix(&self.prefix)?
            .strip_prefix(".q.")?
            .parse()
            .ok()
    }

    /// Declares exchanges and the fixed queues. Safe to call any number of times.
    pub async fn declare(&self, conn: &Connection) -> Result<()> {
        let ch = &conn.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in [self.exchange(), self.control(), self.worker_events()] {
            ch.exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        }
        let mut submit = self.dead_lettering(INBOUND_DELIVERY_LIMIT);
        submit.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        self.declare_inbound(conn, &self.submit(), submit).await?;
        let inbound = self.dead_lettering(INBOUND_DELIVERY_LIMIT);
        self.declare_inbound(conn, &self.events(), inbound).await?;
        for (queue, exchange, key) in [
            (self.submit(), self.exchange(), "submit"),
            (self.events(), self.worker_events(), "events"),
        ] {
            ch.queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        self.declare_queue(conn, &self.dead(), self.quorum())
            .await?;
        let default = self.task_queue_args();
        self.declare_queue(conn, &self.default_queue(), default)
            .await?;
        Ok(())
    }

    /// Declares lane `n`: a quorum queue with a single active consumer that dead-letters.
    pub async fn declare_lane(&self, conn: &Connection, n: u32) -> Result<()> {
        let mut args = self.task_queue_args();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        self.declare_queue(conn, &self.lane(n), args).await
    }

    fn task_queue_args(&self) -> FieldTable {
        self.dead_lettering(DELIVERY_LIMIT)
    }

    /// A quorum queue that dead-letters to `<prefix>.dead` after `limit` redeliveries.
    fn dead_lettering(&self, limit: i64) -> FieldTable {
        let mut args = self.quorum();
        args.insert("x-dead-letter-exchange".into(), string(""));
        args.insert("x-dead-letter-routing-key".into(), string(&self.dead()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
        args
    }

    fn quorum(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), string("quorum"));
        if let Some(n) = self.group_size {
            args.insert(GROUP_SIZE.into(), AMQPValue::LongLongInt(n.into()));
        }
        args
    }

    /// Declares `submit` or `events`. A deployment whose queue was declared by an older lanes
    /// without a delivery limit keeps it (its arguments cannot change): the policy in
    /// `broker/definitions.json` gives it one.
    async fn declare_inbound(&self, conn: &Connection, name: &str, args: FieldTable) -> Result<()> {
        match self.declare_queue(conn, name, args).await {
            Err(BrokerError::Amqp(e)) if precondition_failed(&e) => {
                tracing::warn!(
                    queue = name,
                    "this queue was declared without a delivery limit and dead-lettering; \
                     apply the `lanes-inbound` policy of broker/definitions.json to give it one"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Declares a durable queue on a channel of its own (a refused declaration closes the
    /// channel). A queue that exists with another group size is declared again without one.
    async fn declare_queue(&self, conn: &Connection, name: &str, args: FieldTable) -> Result<()> {
        match declare_on(conn, name, args.clone()).await {
            Err(BrokerError::Amqp(e)) if precondition_failed(&e) && self.group_size.is_some() => {
                let without: BTreeMap<_, _> = args
                    .inner()
                    .iter()
                    .filter(|(k, _)| k.as_str() != GROUP_SIZE)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                declare_on(conn, name, without.into()).await?;
                tracing::warn!(
                    queue = name,
                    group_size = self.group_size,
                    "this queue exists with a replication group size of its own; it keeps it"
                );
                Ok(())
            }
            other => other,
        }
    }
}

const GROUP_SIZE: &str = "x-quorum-initial-group-size";

fn precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

async fn declare_on(conn: &Connection, name: &str, args: FieldTable) -> Result<()> {
    let ch = conn.create_channel().await?;
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), opts, args).await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("p1");
        assert_eq!(t.submit(), "p1.submit");
        assert_eq!(t.lane(3), "p1.q.3");
        assert_eq!(t.lane_index("p1.q.3"), Some(3));
        assert_eq!(t.lane_index("p1.q.default"), None);
        assert_eq!(t.lane_index("p2.q.3"), None);
        assert!(t.owns("p1") && t.owns("p1.q.3") && t.owns("p1.worker.w.ab"));
        assert!(!t.owns("p10.q.3") && !t.owns("amq.gen-p1") && !t.owns("x.p1"));
    }
}
