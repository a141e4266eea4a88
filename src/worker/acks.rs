//! Acking finished tasks once their final events are durable, a lane's several at a time.
//!
//! A task is acked only after the broker confirms its final event; until then it stays held
//! (reported in heartbeats). A lane runs its tasks one at a time, in delivery order, so when a
//! task's event is confirmed every earlier delivery on the lane's channel is either settled or
//! queued here before it. One multiple-ack then settles all the queued tasks whose events are
//! confirmed: one frame and one quorum-queue log entry instead of one per task. A task whose
//! final event was not confirmed must not be acked (it runs again), and a multiple-ack past it
//! would ack it, so from then on that channel acks one delivery at a time.

use super::{
    events::{EventError, Receipt},
    tally::Hold,
};
use futures::{future::BoxFuture, FutureExt};
use lapin::{options::BasicAckOptions, Acker};
use std::future::Future;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::warn;
use uuid::Uuid;

/// What acks a delivery: lapin's `Acker`, or a recorder in tests.
pub trait Ack: Send + Sync + 'static {
    fn ack(&self, multiple: bool) -> impl Future<Output = Result<(), lapin::Error>> + Send;
}

impl Ack for Acker {
    fn ack(&self, multiple: bool) -> impl Future<Output = Result<(), lapin::Error>> + Send {
        let acked = Acker::ack(self, BasicAckOptions { multiple });
        async move { acked.await.map(drop) }
    }
}

/// A task that ran to its final event, waiting for the broker to confirm that event. It stays
/// held until this is dropped, after its fate is settled.
pub struct Finished<A = Acker> {
    pub hold: Hold,
    pub receipt: BoxFuture<'static, Receipt>,
    pub acker: A,
}

impl<A: Ack> Finished<A> {
    fn job(&self) -> Uuid {
        *self.hold.key()
    }

    /// Settles this task on its own (the default queue's tasks finish in any order).
    pub async fn settle_alone(self) {
        let outcome = self.receipt.await;
        if confirmed(*self.hold.key(), outcome) {
            ack(*self.hold.key(), &self.acker, false).await;
        }
    }
}

/// Settles one lane's finished tasks in delivery order.
pub struct LaneAcks<A = Acker> {
    tx: mpsc::UnboundedSender<Finished<A>>,
    task: JoinHandle<()>,
}

impl<A: Ack> LaneAcks<A> {
    pub fn start() -> LaneAcks<A> {
        let (tx, rx) = mpsc::unbounded_channel();
        LaneAcks {
            tx,
            task: tokio::spawn(settle_in_order(rx)),
        }
    }

    /// Queues the lane's next finished task (they must come in delivery order).
    pub fn push(&self, finished: Finished<A>) {
        // The settling task only ends once every sender is gone.
        let _ = self.tx.send(finished);
    }

    /// Waits until every queued task is settled.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn settle_in_order<A: Ack>(mut rx: mpsc::UnboundedReceiver<Finished<A>>) {
    let mut one_by_one = false;
    let mut next = None;
    loop {
        let mut task = match next.take() {
            Some(task) => task,
            None => match rx.recv().await {
                Some(task) => task,
                None => return,
            },
        };
        let mut outcome = (&mut task.receipt).await;
        // The newest confirmed task not acked yet: acking it acks the ones before it.
        let mut unacked: Option<Finished<A>> = None;
        loop {
            if !confirmed(task.job(), outcome) {
                if let Some(last) = unacked.take() {
                    ack(last.job(), &last.acker, true).await;
                }
                one_by_one = true;
            } else if one_by_one {
                ack(task.job(), &task.acker, false).await;
            } else {
                unacked = Some(task);
            }
            // Gather the ones queued behind it whose events are confirmed already.
            let Ok(mut queued) = rx.try_recv() else { break };
            match (&mut queued.receipt).now_or_never() {
                Some(o) => (task, outcome) = (queued, o),
                None => {
                    next = Some(queued);
                    break;
                }
            }
        }
        if let Some(last) = unacked {
            ack(last.job(), &last.acker, true).await;
        }
    }
}

fn confirmed(job: Uuid, outcome: Result<(), EventError>) -> bool {
    match outcome {
        Ok(()) => true,
        Err(e) => {
            warn!(%job, error = %e, "final event not confirmed; the task will run again");
            false
        }
    }
}

async fn ack(job: Uuid, acker: &impl Ack, multiple: bool) {
    if let Err(e) = acker.ack(multiple).await {
        warn!(%job, error = %e, "ack failed; the task will run again");
    }
}

#[cfg(test)]
mod tests;
