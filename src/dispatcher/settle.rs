//! Settling the Dispatcher's work off its critical path, in order.
//!
//! The Dispatcher decides (records, routes) and sends every batch in order, then moves on to
//! the next one. What remains of a batch (waiting for the broker's confirms, marking the rows
//! `queued`/`waiting`, acking the submit messages) runs here, concurrently with later batches,
//! but is *finished* strictly in order: batch k's multiple-ack never goes out before every
//! batch before it is durable. A failure stops the settling and restarts the control plane;
//! the submit messages not acked yet come back to the next one.

use super::DispatchError;
use lapin::{options::BasicAckOptions, Acker};
use std::future::Future;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

/// What is left of one batch: the work, then (if any) the ack that ends it.
struct Tail {
    work: JoinHandle<Result<(), DispatchError>>,
    ack: Option<Acker>,
}

/// Runs batch tails concurrently and finishes them in order.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Tail>,
}

impl Settler {
    /// Starts the settling task; it ends when every `Settler` is dropped, or on the first
    /// failure (then it cancels `failed`).
    pub fn start(failed: CancellationToken) -> Settler {
        let (tx, mut rx) = mpsc::unbounded_channel::<Tail>();
        tokio::spawn(async move {
            while let Some(tail) = rx.recv().await {
                let done = match tail.work.await {
                    Ok(done) => done,
                    Err(e) => Err(DispatchError::Settle(e.to_string())),
                };
                let acked = match (done, tail.ack) {
                    (Ok(()), Some(acker)) => acker
                        .ack(BasicAckOptions { multiple: true })
                        .await
                        .map(|_| ())
                        .map_err(DispatchError::from),
                    (done, _) => done,
                };
                if let Err(e) = acked {
                    if failed.is_cancelled() {
                        debug!(error = %e, "settling stopped with the control plane");
                    } else {
                        error!(error = %e, "settling a dispatched batch failed; the control plane restarts");
                    }
                    failed.cancel();
                    return;
                }
            }
        });
        Settler { tx }
    }

    /// Starts `work` now; `ack` (a multiple-ack up to the batch's last submit message) goes
    /// out once it and everything pushed before it are done.
    pub fn push(
        &self,
        work: impl Future<Output = Result<(), DispatchError>> + Send + 'static,
        ack: Option<Acker>,
    ) {
        let work = tokio::spawn(work);
        // Only fails once the settling task stopped, which has cancelled `failed` already.
        let _ = self.tx.send(Tail { work, ack });
    }
}
