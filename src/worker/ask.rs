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
    /// Its last holder, a live worker, handed it back without starting it.
    pub unstarted: bool,
}

/// The questions waiting for an answer: one owner for the map both sides touch. One job may
/// be asked about by several deliveries at once (a channel the broker closed hands the same
/// task back again while an earlier question waits): each gets the answer.
#[derive(Clone)]
pub struct Asks {
    worker: String,
    events: EventSink,
    waiting: Arc<Mutex<HashMap<Uuid, Vec<oneshot::Sender<Record>>>>>,
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
        self.waiting
            .lock()
            .expect("asks lock")
            .entry(job)
            .or_default()
            .push(tx);
        self.events.emit(Event::Redelivered {
            job,
            worker: self.worker.clone(),
        });
        let answer = tokio::time::timeout(ASK_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok);
        // Ours is closed now (its receiver is gone); the others still wait.
        let mut waiting = self.waiting.lock().expect("asks lock");
        if let Some(senders) = waiting.get_mut(&job) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                waiting.remove(&job);
            }
        }
        drop(waiting);
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

    /// The server's answer arrived: every question about `job` gets it.
    pub fn answer(&self, job: Uuid, record: Record) {
        let senders = self.waiting.lock().expect("asks lock").remove(&job);
        for waiting in senders.into_iter().flatten() {
            let _ = waiting.send(record.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(asks: &Asks, job: Uuid) -> usize {
        asks.waiting
            .lock()
            .unwrap()
            .get(&job)
            .map_or(0, |senders| senders.len())
    }

    #[tokio::test]
    async fn every_question_about_a_job_gets_the_answer() {
        let asks = Asks::new("w".into(), EventSink::detached());
        let job = Uuid::new_v4();
        let (a, b) = (asks.clone(), asks.clone());
        let first = tokio::spawn(async move { a.ask(job).await });
        let second = tokio::spawn(async move { b.ask(job).await });
        while asked(&asks, job) < 2 {
            tokio::task::yield_now().await;
        }
        let record = Record {
            state: Some(JobState::Completed),
            attempts: 1,
            running_on: None,
            unstarted: false,
        };
        asks.answer(job, record.clone());
        assert_eq!(first.await.unwrap(), Some(record.clone()));
        assert_eq!(second.await.unwrap(), Some(record));
        assert_eq!(asked(&asks, job), 0);
    }
}
