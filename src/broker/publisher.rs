//! Publishing that never loses a message silently: persistent, `mandatory`, publisher
//! confirms, bounded waits for them.

use super::{BrokerError, Result, CONFIRM_TIMEOUT};
use futures::future::join_all;
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
};

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
