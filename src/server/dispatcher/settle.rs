//! Settling the Dispatcher's work off its critical path, in order, in groups.
//!
//! The Dispatcher decides (routes, records) and sends every batch in order, then moves on to
//! the next one. What remains of a batch (waiting for the broker's confirms, marking the rows
//! `queued`, acking the submit messages) is settled here. Batches are settled strictly in
//! order: batch k's multiple-ack never goes out before every batch before it is durable. Under
//! load, what arrives within `GROUP_WINDOW` is settled together: one update and one ack for
//! many small batches, which costs the database and the broker far less than one each. A
//! failure stops the settling and restarts the control plane; the submit messages not acked
//! yet come back to the next one.

use super::DispatchError;
use crate::{
    broker::{confirm_all, Pending},
    server::Failure,
    store::Store,
};
use lapin::{options::BasicAckOptions, Acker};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long the first batch of a group waits for others to join it.
const GROUP_WINDOW: Duration = Duration::from_millis(5);
/// Most batches settled in one group.
const MAX_GROUP: usize = 256;

/// What is left of one batch.
pub struct Tail {
    /// The confirms of its lane messages and dead letters.
    pub confirms: Vec<Pending>,
    /// (job, queue) of the lane messages: `queued` once confirmed.
    pub queued: Vec<(Uuid, String)>,
    /// A multiple-ack up to the batch's last submit message, if it came from one.
    pub ack: Option<Acker>,
    /// Jobs of id-less submit messages: their marks go once the ack is out.
    pub marks: Vec<Uuid>,
}

/// Settles batch tails in order.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Tail>,
}

impl Settler {
    /// Starts the settling task; it ends when every `Settler` is dropped, or on the first
    /// failure (then the control plane restarts).
    pub fn start(store: Store, failure: Failure) -> Settler {
        let (tx, mut rx) = mpsc::unbounded_channel::<Tail>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                tokio::time::sleep(GROUP_WINDOW).await;
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(more) => group.push(more),
                        Err(_) => break,
                    }
                }
                if let Err(e) = settle(&store, group).await {
                    failure.fail("settling dispatched batches", e);
                    return;
                }
            }
        });
        Settler { tx }
    }

    /// Queues a batch's tail behind everything pushed before it.
    pub fn push(&self, tail: Tail) {
        // Only fails once the settling task stopped, which has reported the failure already.
        let _ = self.tx.send(tail);
    }
}

/// Confirms, then marks, then acks: the last ack of a group covers every batch in it.
async fn settle(store: &Store, group: Vec<Tail>) -> Result<(), DispatchError> {
    let (mut confirms, mut queued, mut ack, mut marks) = (Vec::new(), Vec::new(), None, Vec::new());
    for tail in group {
        confirms.extend(tail.confirms);
        queued.extend(tail.queued);
        ack = tail.ack.or(ack);
        marks.extend(tail.marks);
    }
    confirm_all(confirms).await?;
    store.mark_queued(&queued).await?;
    if let Some(acker) = ack {
        acker.ack(BasicAckOptions { multiple: true }).await?;
    }
    store.forget_marks(&marks).await?;
    Ok(())
}
