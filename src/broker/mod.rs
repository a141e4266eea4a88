//! Everything lanes does with RabbitMQ at the edge: named connections, the topology of
//! DESIGN.md declared idempotently, and publishing that never loses a message silently
//! (persistent, `mandatory`, publisher confirms, bounded waits).

use lapin::{
    options::BasicQosOptions,
    types::{AMQPValue, ShortString},
    BasicProperties, Channel,
};
use std::time::Duration;

mod admin;
mod nodes;
mod publisher;
mod topology;

pub use admin::{
    delete_queue_if_empty, exchange_exists, exclusive_queue_gone, lane_counts, queue_counts,
    QueueCounts,
};
pub use nodes::{connect, split as split_nodes, user_of, with_frame_max};
pub use publisher::{confirm_all, Outgoing, Pending, Publisher};
pub use topology::Topology;

/// How long a publish may wait for the broker's confirmation before it counts as failed.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Redeliveries a lane message may see before the broker dead-letters it. Workers give up on a
/// task after its `max_attempts` (at most 100) long before; this only bounds a runaway loop.
pub const DELIVERY_LIMIT: i64 = 1000;
/// Redeliveries a `submit` or `events` message may see before the broker sets it aside in
/// `<prefix>.dead`. Nothing lanes reads loops (bad input is refused with its reason, refused
/// rows are isolated), so this only catches what no one foresaw; a control plane restart
/// (a failover, a database outage) costs a message one delivery.
pub const INBOUND_DELIVERY_LIMIT: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot reach RabbitMQ at {url} (is it running?): {reason}")]
    Connect { url: String, reason: String },
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

/// Properties of a persistent JSON message.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
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
