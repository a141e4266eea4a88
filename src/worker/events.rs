//! The event pump: every event a worker publishes (started, progress, completed, failed,
//! heartbeat, redelivered questions, tasks handed back, online, offline) goes out through one
//! task, in order.
//! What is waiting after a short pause goes out as one message (a JSON array) with one
//! confirm, so the events of many tasks share a publish. Final events come with a receipt
//! that resolves once the broker has them durably: the task is acked only then (`acks`). A
//! final event the broker refuses (a nack) is sent again: the task ran, and running it again
//! after the tasks behind it in its lane would break their order.

use crate::{
    backoff,
    broker::{json_properties, BrokerError, Publisher},
    protocol::Event,
};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tracing::warn;

/// Most events one message carries.
const MAX_EVENT_BATCH: usize = 512;
/// Most bytes one message carries (an event larger than this goes alone).
const MAX_EVENT_BYTES: usize = 4 << 20;
/// How long the pump waits for more events before it publishes.
const EVENT_LINGER: Duration = Duration::from_millis(2);

/// Why an event is not known to be durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventError {
    #[error("the event pump stopped")]
    PumpStopped,
    #[error("events not confirmed: {0}")]
    NotConfirmed(Arc<BrokerError>),
}

/// What the broker said about an event.
pub type Receipt = Result<(), EventError>;

/// An event to publish, and who waits for its receipt.
type Outgoing = (Event, Option<oneshot::Sender<Receipt>>);

/// The sending side of the pump; cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl EventSink {
    /// Starts the pump publishing to `exchange` (routing key `events`); it ends when every
    /// sink is dropped.
    pub fn start(publisher: Publisher, exchange: String) -> (EventSink, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
        (
            EventSink { tx },
            tokio::spawn(pump(publisher, exchange, rx)),
        )
    }

    /// Queues an event; nobody waits for it.
    /// A sink that publishes nothing (for tests of what emits).
    #[cfg(test)]
    pub fn detached() -> EventSink {
        let (tx, _) = mpsc::unbounded_channel::<Outgoing>();
        EventSink { tx }
    }

    pub fn emit(&self, event: Event) {
        let _ = self.tx.send((event, None));
    }

    /// Publishes and waits until the broker has the event durably.
    pub async fn emit_confirmed(&self, event: Event) -> Receipt {
        self.emit_with_receipt(event).await
    }

    /// Queues a final event now and sends it again while the broker does not confirm it (see
    /// `backoff::final_event`); the returned future says when the broker has it durably.
    pub fn emit_final(&self, event: Event) -> impl Future<Output = Receipt> + Send + 'static {
        let first = self.emit_with_receipt(event.clone());
        let sink = self.clone();
        async move {
            let mut receipt = first.await;
            let mut delays = backoff::final_event();
            while let Err(EventError::NotConfirmed(e)) = &receipt {
                let Some(delay) = delays.next() else { break };
                warn!(error = %e, ?delay, "final event not confirmed; sending it again");
                tokio::time::sleep(delay).await;
                receipt = sink.emit_with_receipt(event.clone()).await;
            }
            receipt
        }
    }

    /// Queues the event now; the returned future says when the broker has it durably.
    pub fn emit_with_receipt(
        &self,
        event: Event,
    ) -> impl Future<Output = Receipt> + Send + 'static {
        let (done, wait) = oneshot::channel();
        let queued = self.tx.send((event, Some(done))).is_ok();
        async move {
            if !queued {
                return Err(EventError::PumpStopped);
            }
            wait.await.unwrap_or(Err(EventError::PumpStopped))
        }
    }
}

async fn pump(publisher: Publisher, exchange: String, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    // An event that did not fit the last message starts the next.
    let mut carried: Option<(Vec<u8>, Outgoing)> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(o) => (encode(&o.0), o),
                None => return,
            },
        };
        // Everything waiting, and whatever follows within a moment, goes out as one message
        // of bounded size. (Times are taken when events happen, so the wait shows in no job's
        // record.)
        let mut size = first.0.len();
        let mut batch = vec![first];
        tokio::time::sleep(EVENT_LINGER).await;
        while batch.len() < MAX_EVENT_BATCH {
            let Ok(more) = rx.try_recv() else { break };
            let encoded = encode(&more.0);
            if size + encoded.len() > MAX_EVENT_BYTES {
                carried = Some((encoded, more));
                break;
            }
            size += encoded.len() + 1;
            batch.push((encoded, more));
        }
        let body = if batch.len() == 1 {
            batch[0].0.clone()
        } else {
            let mut body = Vec::with_capacity(size + 2);
            body.push(b'[');
            for (i, (encoded, _)) in batch.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(encoded);
            }
            body.push(b']');
            body
        };
        let (events, waiters): (Vec<Event>, Vec<_>) = batch.into_iter().map(|(_, o)| o).unzip();
        let sent = publisher
            .send(&exchange, "events", &body, json_properties())
            .await;
        tokio::spawn(async move {
            let receipt = match sent {
                Ok(pending) => pending.confirmed().await,
                Err(e) => Err(e),
            }
            .map_err(|e| EventError::NotConfirmed(Arc::new(e)));
            if let Err(e) = &receipt {
                warn!(error = %e, events = events.len(), "events not confirmed");
            }
            for done in waiters.into_iter().flatten() {
                let _ = done.send(receipt.clone());
            }
        });
    }
}

fn encode(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("events serialize")
}
