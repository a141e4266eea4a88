//! Consuming one lane: its tasks one at a time, in delivery order, with the next ones already
//! prefetched, until the lane is taken away or the worker drains. Letting go is ordered: the
//! current task finishes, the acks of what finished go out, the tasks handed back unstarted
//! are put on record as such, then the channel closes, and only then may the consumer go
//! (dropping it earlier would cancel it, and the broker would make the next consumer active
//! while this one still holds tasks, out of order).
//!
//! The broker may close a lane's channel under a running task (its consumer timeout counts
//! from delivery, so a long task, or the prefetched ones behind it, can exceed it). The tasks
//! go back to the lane; the one running here finishes, and its redelivery, wherever it lands,
//! waits for that run (`redelivery`). No other delivery of the closed channel starts,
//! and the worker subscribes to the lane again instead of dropping its connection.

use super::{
    acks::LaneAcks,
    execute::{Delivered, Executed},
    session::{Ended, Session, SessionError},
    shutdown::{bounded, CLOSE_TIMEOUT},
};
use crate::broker;
use futures::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable};
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

/// Consumes `lane` until `stop`. A standby subscribes after `delay`, so that the owner's
/// consumer is registered first and is the one single active consumer makes active.
pub async fn run(session: Arc<Session>, lane: String, stop: CancellationToken, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => return,
    }
    // The lane's name goes with what the loop logs.
    session
        .resubscribing("lane", &stop, || consume(&session, &lane, &stop))
        .instrument(tracing::info_span!("lane", %lane))
        .await;
}

async fn consume(
    session: &Session,
    lane: &str,
    stop: &CancellationToken,
) -> Result<Ended, SessionError> {
    let ch = session.conn.create_channel().await?;
    broker::prefetch(&ch, session.cfg.lane_prefetch).await?;
    let consumer = ch
        .basic_consume(
            lane.into(),
            format!("lanes-worker-{}/{lane}", session.id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    let mut consumer = match consumer {
        Ok(c) => c,
        // The lane was deleted (the pool shrank) before this worker heard of it: the broker
        // closed this channel only. Not consuming it is right; the next assignment says so.
        Err(e) if e.is_amqp_soft_error() => {
            debug!(%lane, error = %e, "lane does not exist; not consuming it");
            return Ok(Ended::Stopped);
        }
        Err(e) => return Err(e.into()),
    };
    let _consuming = session.consumed.mark(lane.to_owned());
    debug!(%lane, "consuming lane");
    // A reader takes every delivery as it arrives, so that the tasks waiting in this worker
    // (up to the prefetch) are held, never taken for lost.
    let (tx, mut inbox) = mpsc::unbounded_channel();
    let reader = {
        let (held, asks) = (session.held.clone(), session.runner.asks.clone());
        tokio::spawn(async move {
            while let Some(next) = consumer.next().await {
                let failed = next.is_err();
                let next = next.map(|d| Delivered::new(d, &held, &asks));
                if tx.send(next).is_err() || failed {
                    break;
                }
            }
        })
    };
    let acks = LaneAcks::start();
    let channel_closed = || session.channel_closed(&ch);
    // Whether the task its previous holder may have been running is still to come.
    let mut head = true;
    // A delivery taken from the inbox and not started when the loop ends.
    let mut taken = None;
    let result = loop {
        // A lane told to stop takes nothing more from its inbox, however full.
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(Ended::Stopped),
            d = inbox.recv() => d,
        };
        match next {
            Some(Ok(delivered)) => {
                let Some(permit) = session.runner.permit().await else {
                    taken = Some(delivered);
                    break Ok(Ended::Stopped);
                };
                if stop.is_cancelled() {
                    taken = Some(delivered);
                    break Ok(Ended::Stopped);
                }
                // Deliveries of a closed channel are back in the lane, maybe with another
                // worker already: none of them may start here.
                if channel_closed() {
                    break Ok(Ended::ChannelClosed);
                }
                if let Executed::Finished(finished) =
                    session.runner.execute(delivered, permit, &mut head).await
                {
                    acks.push(finished);
                }
            }
            Some(Err(e)) if channel_closed() => {
                debug!(%lane, error = %e, "lane channel closed by the broker");
                break Ok(Ended::ChannelClosed);
            }
            Some(Err(e)) => break Err(e),
            None => {
                // The broker cancelled the consumer: the lane was deleted (the pool shrank).
                // The connection is fine; the lane just stops being reported.
                debug!(%lane, "lane consumer cancelled by the broker");
                break Ok(Ended::Stopped);
            }
        }
    };
    // Acks go out before the channel closes, or the tasks would run again. Closing hands the
    // tasks not started back to the lane, in order, for its next consumer.
    bounded("settling the lane's acks", acks.finish()).await;
    // Those are put on record as unstarted first, while the broker cannot have given them to
    // anyone else yet (a channel it closed has handed them back already).
    let mut back: Vec<Delivered> = taken.into_iter().collect();
    if matches!(result, Ok(Ended::Stopped)) && ch.status().connected() {
        while let Ok(next) = inbox.try_recv() {
            back.extend(next.ok());
        }
        let jobs: Vec<_> = back.iter().filter_map(|d| d.handed_back(head)).collect();
        // With its own first task settled, nothing of the lane is unsettled here: the lane's
        // next holder need not count its first unfinished task as possibly started, even one
        // the broker sent this worker too late to be named in `jobs`.
        let clean = (!head).then(|| lane.to_owned());
        debug!(%lane, handed_back = jobs.len(), clean = clean.is_some(), "letting go of the lane");
        bounded(
            "putting the tasks handed back on record",
            session.runner.hand_back(jobs, clean),
        )
        .await;
    }
    let closed = !ch.status().connected()
        || tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, "lane released".into()))
            .await
            .is_ok_and(|r| r.is_ok());
    if !closed && ch.status().connected() {
        // A channel the broker still sees open keeps its consumer active, holding the lane's
        // tasks with nobody running them. Only dropping the connection frees them.
        warn!(%lane, "could not close the lane's channel; reconnecting to let go of it");
        session.shutdown.lose_connection();
    }
    reader.abort();
    // Deliveries not started are back with the broker: dropping them ends their holds.
    drop((back, inbox));
    Ok(result?)
}
