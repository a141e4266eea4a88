//! Looking at and removing queues: how many ready messages and consumers a queue has (a
//! passive declare on a channel of its own, since the broker closes the channel when the queue
//! is missing), whether another connection's exclusive queue is gone, and deleting an idle
//! lane.

use super::{Result, Topology};
use lapin::{
    options::{ExchangeDeclareOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
    Connection, ExchangeKind,
};
use tracing::warn;

/// A queue's ready messages and consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub messages: u32,
    pub consumers: u32,
}

/// A passive declare of `queue` on a channel of its own (the broker closes the channel when it
/// refuses): the queue, or the broker's refusal; Err only when no channel could be had.
async fn passive_declare(
    conn: &Connection,
    queue: &str,
) -> Result<std::result::Result<lapin::Queue, lapin::Error>> {
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await;
    if declared.is_ok() {
        let _ = ch.close(200, "checked".into()).await;
    }
    Ok(declared)
}

/// The queue's counts, or None when it does not exist.
pub async fn queue_counts(conn: &Connection, queue: &str) -> Result<Option<QueueCounts>> {
    match passive_declare(conn, queue).await? {
        Ok(q) => Ok(Some(QueueCounts {
            messages: q.message_count(),
            consumers: q.consumer_count(),
        })),
        // Missing: the broker closed this channel only.
        Err(e) if e.is_amqp_soft_error() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether an exclusive queue declared by another connection is gone, as the broker deletes it
/// when that connection closes. A passive declare answers NOT_FOUND (404) then, and
/// RESOURCE_LOCKED (405) while the owner's connection lives: another connection may not use an
/// exclusive queue, not even passively. Any other refusal says nothing about the owner: false.
pub async fn exclusive_queue_gone(conn: &Connection, queue: &str) -> Result<bool> {
    match passive_declare(conn, queue).await? {
        Ok(_) => Ok(false),
        Err(e) if not_found(&e) => Ok(true),
        Err(e) if e.is_amqp_soft_error() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// Whether an exchange exists (a passive declare on a channel of its own).
pub async fn exchange_exists(conn: &Connection, exchange: &str) -> Result<bool> {
    let ch = conn.create_channel().await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match ch
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => {
            let _ = ch.close(200, "checked".into()).await;
            Ok(true)
        }
        Err(e) if e.is_amqp_soft_error() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Lane `n`'s counts; a lane that vanished is declared again (and is empty).
pub async fn lane_counts(conn: &Connection, topo: &Topology, n: u32) -> Result<QueueCounts> {
    match queue_counts(conn, &topo.lane(n)).await? {
        Some(counts) => Ok(counts),
        None => {
            topo.declare_lane(conn, n).await?;
            Ok(QueueCounts {
                messages: 0,
                consumers: 0,
            })
        }
    }
}

/// Deletes a queue unless it holds ready messages; true when it is gone. RabbitMQ refuses
/// `if-empty` deletes of quorum queues with a connection error, so this checks the count
/// itself and then deletes: nothing else publishes to a lane the Router has closed, so no
/// message can arrive in between.
pub async fn delete_queue_if_empty(conn: &Connection, queue: &str) -> Result<bool> {
    let Some(counts) = queue_counts(conn, queue).await? else {
        return Ok(true); // already gone
    };
    if counts.messages > 0 {
        warn!(%queue, messages = counts.messages, "a lane to delete still holds messages; keeping it");
        return Ok(false);
    }
    let ch = conn.create_channel().await?;
    let purged = match ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
    {
        Ok(n) => n,
        // Refused (e.g. no `configure` permission): the lane stays open; the next attempt
        // comes after another cool-down.
        Err(e) if e.is_amqp_soft_error() => {
            warn!(%queue, error = %e, "the broker refused to delete an idle lane; keeping it");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    if purged > 0 {
        warn!(%queue, messages = purged, "a deleted lane held messages");
    }
    let _ = ch.close(200, "lane deleted".into()).await;
    Ok(true)
}
