//! Consuming `<prefix>.q.default`, the queue of tasks with no resources: every worker
//! consumes it with its full concurrency, and its tasks finish and are acked in any order.
//! Like a lane, it subscribes again when the broker closes its channel (see `lane`).

use super::{
    delivered::fresh_job,
    execute::{Delivered, Executed},
    session::{Ended, Session, SessionError},
    shutdown::bounded,
};
use crate::broker;
use futures::{FutureExt, StreamExt};
use lapin::{options::BasicConsumeOptions, types::FieldTable};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Consumes the default queue until the worker drains.
pub async fn run(session: Arc<Session>) {
    // It ends when the worker drains (see `consume`); nothing else stops it.
    let never = CancellationToken::new();
    session
        .resubscribing("default queue", &never, || consume(&session))
        .await;
}

/// Consumes until the worker drains or the broker closes the channel.
async fn consume(session: &Arc<Session>) -> Result<Ended, SessionError> {
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
    let channel_closed = || session.channel_closed(&ch);
    let mut inflight: Vec<JoinHandle<()>> = Vec::new();
    let mut closed = false;
    // A delivery taken and not started when the worker drained.
    let mut taken = None;
    loop {
        // A slot is taken only for a task in hand: an idle default queue holds none.
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
                let Some(permit) = session.runner.permit().await else {
                    taken = Some(delivery);
                    break;
                };
                if channel_closed() {
                    closed = true;
                    break;
                }
                let delivered = Delivered::new(delivery, &session.held, &session.runner.asks);
                let runner = session.runner.clone();
                inflight.retain(|h| !h.is_finished());
                inflight.push(tokio::spawn(async move {
                    // No order here: any redelivered task may be the one its last holder ran.
                    if let Executed::Finished(finished) =
                        runner.execute(delivered, permit, &mut true).await
                    {
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
        return Ok(Ended::ChannelClosed);
    }
    for h in inflight {
        let _ = h.await;
    }
    // What the broker sent ahead and this worker never took goes back unstarted: on record as
    // such first, before the channel closes.
    let mut ahead: Vec<_> = taken.into_iter().collect();
    while let Some(Some(Ok(delivery))) = consumer.next().now_or_never() {
        ahead.push(delivery);
    }
    let jobs = ahead.iter().filter_map(fresh_job).collect();
    bounded(
        "putting the tasks handed back on record",
        session.runner.hand_back(jobs, None),
    )
    .await;
    bounded(
        "closing the default queue's channel",
        ch.close(200, "worker stopping".into()),
    )
    .await;
    Ok(Ended::Stopped)
}
