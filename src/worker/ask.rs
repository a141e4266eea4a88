//! Asking the server about a redelivered task. A task that comes back from the broker (its
//! worker died, or let go of it unstarted) may have run already or never have started, and
//! the broker's delivery count cannot tell which. So the worker asks (`Event::Redelivered`);
//! the Callback answers (`Control::Record`) once every event published before the question is
//! applied. Without an answer in time the delivery count stands in.

use super::events::EventSink;
use crate::{protocol::Event, store::JobState};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::oneshot;
use tracing::{debug, warn};
use uuid::Uuid;

/// How long a redelivered task waits for the server's record.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server has recorded for a redelivered task.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// None if the server has no such job.
    pub state: Option<JobState>,
    pub attempts: i32,
    /// The live worker whose attempt runs now, if any.
    pub running_on: Option<String>,
}

/// The questions waiting for an answer: one owner for the map both sides touch.
#[derive(Clone)]
pub struct Asks {
    worker: String,
    events: EventSink,
    waiting: Arc<Mutex<HashMap<Uuid, oneshot::Sender<Record>>>>,
}

impl Asks {
    pub fn new(worker: String, events: EventSink) -> Asks {
        Asks {
            worker,
            events,
            waiting: Arc::default(),
        }
    }

    /// Asks what is recorded for `job`; None without an answer within the timeout.
    pub async fn ask(&self, job: Uuid) -> Option<Record> {
        let (tx, rx) = oneshot::channel();
        let asked_at = Instant::now();
        self.waiting.lock().expect("asks lock").insert(job, tx);
        self.events.emit(Event::Redelivered {
            job,
            worker: self.worker.clone(),
        });
        let answer = tokio::time::timeout(ASK_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.waiting.lock().expect("asks lock").remove(&job);
        match &answer {
            Some(record) => {
                debug!(%job, ?record, took = ?asked_at.elapsed(), "the server's record of a redelivered task")
            }
            None => {
                warn!(%job, "no record from the server for a redelivered task; counting deliveries")
            }
        }
        answer
    }

    /// The server's answer arrived.
    pub fn answer(&self, job: Uuid, record: Record) {
        if let Some(waiting) = self.waiting.lock().expect("asks lock").remove(&job) {
            let _ = waiting.send(record);
        }
    }
}
