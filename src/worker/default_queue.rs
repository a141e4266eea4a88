//! Consuming `<prefix>.q.default`, the queue of tasks with no resources: every worker
//! consumes it with its full concurrency, and its tasks finish and are acked in any order.
//! Like a lane, it subscribes again when the broker closes its channel (see `lane`).

use super::{
    execute::Delivered,
    session::{Session, SessionError},
    shutdown::bounded,
};
use crate::broker;
use futures::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use tracing::warn;

/// Consumes the default queue until the worker drains.
pub async fn run(session: Arc<Session>) {
    loop {
        match consume(&session).await {
            Ok(false) => return,
            Ok(true) => {
                warn!("the broker closed the default queue's channel; subscribing again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                warn!(error = %e, "default queue consumer stopped");
                session.shutdown.lose_connection();
                return;
            }
        }
    }
}

/// Consumes until the worker drains (false) or the broker closes the channel (true).
async fn consume(session: &Arc<Session>) -> Result<bool, SessionError> {
    let ch = session.conn.create_channel().await?;
    broker::prefetch(&ch, session.cfg.concurrency.clamp(1, 2000) as u16).await?;
    let mut consumer = ch
        .basic_consume(
            session.topo.default_queue().into(),
            format!("lanes-worker-{}/default", session.id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let channel_closed = || !ch.status().connected() && session.conn.status().connected();
    let mut inflight: Vec<JoinHandle<()>> = Vec::new();
    let mut closed = false;
    loop {
        let Some(permit) = session.runner.permit().await else {
            break;
        };
        let next = tokio::select! {
            _ = session.shutdown.draining() => break,
            d = consumer.next() => d,
        };
        match next {
            Some(Ok(_)) | Some(Err(_)) if channel_closed() => {
                // Back with the broker, maybe with another worker already: not started here.
                closed = true;
                break;
            }
            Some(Ok(delivery)) => {
                let delivered = Delivered::new(delivery, &session.held);
                let runner = session.runner.clone();
                inflight.retain(|h| !h.is_finished());
                inflight.push(tokio::spawn(async move {
                    if let Some(finished) = runner.execute(delivered, permit).await {
                        finished.settle_alone().await;
                    }
                }));
            }
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    if closed {
        // The running tasks finish on their own; their redeliveries wait for them.
        return Ok(true);
    }
    for h in inflight {
        let _ = h.await;
    }
    bounded(
        "closing the default queue's channel",
        ch.close(200, "worker stopping".into()),
    )
    .await;
    Ok(false)
}
