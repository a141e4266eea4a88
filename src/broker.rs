//! Everything lanes does with RabbitMQ at the edge: named connections, the topology of
//! DESIGN.md declared idempotently, and publishing that never loses a message silently
//! (persistent, `mandatory`, publisher confirms, bounded waits).

use crate::{config::redact, routing::Target};
use futures::future::join_all;
use lapin::{
    options::{
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use std::time::Duration;

/// How long a publish may wait for the broker's confirmation before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Redeliveries a lane message may see before the broker dead-letters it. Workers give up on a
/// task after its `max_attempts` (at most 100) long before; this only bounds a runaway loop.
pub const DELIVERY_LIMIT: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot reach RabbitMQ at {url} (is it running?)")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker could not route a message to `{0}` (no such queue)")]
    Unroutable(String),
    #[error("the broker refused a message for `{0}`")]
    Nacked(String),
    #[error("no publisher confirmation within {0:?}")]
    ConfirmTimeout(Duration),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Connects with a name that the management UI shows (e.g. `lanes-server@host`).
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .map_err(|source| BrokerError::Connect {
            url: redact(url),
            source,
        })
}

/// The names of every broker object of one deployment.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Topology {
            prefix: prefix.to_owned(),
        }
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
    /// The queue a routed task goes to.
    pub fn queue_of(&self, target: Target) -> String {
        match target {
            Target::Default => self.default_queue(),
            Target::Lane(n) => self.lane(n),
        }
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
    pub async fn declare(&self, ch: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.control().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        let mut submit = quorum();
        submit.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        declare_queue(ch, &self.submit(), submit).await?;
        ch.queue_bind(
            self.submit().into(),
            self.exchange().into(),
            "submit".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        declare_queue(ch, &self.events(), quorum()).await?;
        declare_queue(ch, &self.dead(), quorum()).await?;
        declare_queue(ch, &self.default_queue(), self.task_queue_args()).await?;
        Ok(())
    }

    /// Declares lane `n`: a quorum queue with a single active consumer that dead-letters.
    pub async fn declare_lane(&self, ch: &Channel, n: u32) -> Result<()> {
        let mut args = self.task_queue_args();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        declare_queue(ch, &self.lane(n), args).await
    }

    fn task_queue_args(&self) -> FieldTable {
        let mut args = quorum();
        args.insert("x-dead-letter-exchange".into(), string(""));
        args.insert("x-dead-letter-routing-key".into(), string(&self.dead()));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    args
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

async fn declare_queue(ch: &Channel, name: &str, args: FieldTable) -> Result<()> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), opts, args).await?;
    Ok(())
}

/// Properties of a persistent JSON message.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
}

/// A channel in confirm mode that publishes persistent, mandatory messages.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

/// A message to publish with `Publisher::send_all`.
#[derive(Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: Vec<u8>,
    pub props: BasicProperties,
}

/// A publish whose confirmation is still outstanding.
pub struct Pending {
    target: String,
    confirm: PublisherConfirm,
}

impl Publisher {
    pub async fn new(conn: &Connection) -> Result<Self> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends a message; the returned handle resolves once the broker has it durably.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<Pending> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await?;
        Ok(Pending {
            target: if exchange.is_empty() {
                routing_key.to_owned()
            } else {
                format!("{exchange}/{routing_key}")
            },
            confirm,
        })
    }

    /// Sends messages in order without waiting for each to be written. lapin resolves a
    /// publish only once its I/O loop has written the frames, so awaiting each in turn costs
    /// a round trip to that thread per message; here the loop writes them together. A
    /// publish queues its frames (and takes its confirm tag) on its first poll, and
    /// `try_join_all` first-polls in order, so the messages go out in the given order.
    pub async fn send_all(&self, messages: &[Outgoing<'_>]) -> Result<Vec<Pending>> {
        futures::future::try_join_all(
            messages
                .iter()
                .map(|m| self.send(m.exchange, m.routing_key, &m.body, m.props.clone())),
        )
        .await
    }

    /// Sends one message and waits for its confirmation.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<()> {
        self.send(exchange, routing_key, body, props)
            .await?
            .confirmed()
            .await
    }
}

impl Pending {
    /// Waits for the broker's verdict: stored (Ok), unroutable or refused (Err).
    pub async fn confirmed(self) -> Result<()> {
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, self.confirm)
            .await
            .map_err(|_| BrokerError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable(self.target)),
            Confirmation::Nack(_) => Err(BrokerError::Nacked(self.target)),
        }
    }
}

/// Waits for all confirmations; the first failure wins.
pub async fn confirm_all(pending: Vec<Pending>) -> Result<()> {
    for r in join_all(pending.into_iter().map(Pending::confirmed)).await {
        r?;
    }
    Ok(())
}

/// Sets how many unacknowledged messages the broker hands this channel's consumers.
pub async fn prefetch(ch: &Channel, count: u16) -> Result<()> {
    ch.basic_qos(count, BasicQosOptions::default()).await?;
    Ok(())
}

/// The `x-delivery-count` header quorum queues add to redelivered messages.
pub fn delivery_count(props: &BasicProperties) -> i64 {
    let Some(headers) = props.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        _ => 0,
    }
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
    }
}
