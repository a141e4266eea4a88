//! A delivery, parsed and held from the moment it arrived. A redelivered task (one a stopped
//! or departing worker handed back) is asked about at once, not when its turn comes: the
//! tasks a lane hands over arrive together, and asking about each only when the one before it
//! is done would put a round trip to the server between every two of them. The question goes
//! out early; the task still starts only once the answer is in.
//!
//! A copy (a lane message the server published again) is not asked early: its first message
//! may run in this lane ahead of it, and an early answer would not have seen that run.
//!
//! A delivery handed back without running (the worker lets go of a lane, or drains) is put on
//! record as such first when the record could not tell otherwise (`handed_back`, `fresh_job`):
//! its next holder then starts it as a fresh one (`redelivery::Start`).

use super::{
    ask::{Asks, Record},
    tally::{Held, Hold},
};
use crate::{broker::delivery_count, protocol::LaneMessage};
use lapin::message::Delivery;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub struct Delivered {
    pub(super) delivery: Delivery,
    /// The task and its hold, or why the message is not a task.
    pub(super) task: Result<(LaneMessage, Hold), serde_json::Error>,
    /// The server's answer about a redelivered task, asked on arrival.
    pub(super) early: Option<Early>,
    /// A worker had this message before.
    pub(super) redelivered: bool,
}

/// A question about a redelivered task, asked on arrival.
pub struct Early(JoinHandle<Option<Record>>);

impl Early {
    /// The answer; None if the server did not answer in time (ask again).
    pub async fn answer(self) -> Option<Record> {
        self.0.await.ok().flatten()
    }
}

impl Delivered {
    /// Parses and holds a delivery, and asks about it now if it is a redelivery.
    pub fn new(delivery: Delivery, held: &Held, asks: &Asks) -> Delivered {
        let task = serde_json::from_slice::<LaneMessage>(&delivery.data).map(|msg| {
            let hold = held.mark(msg.id);
            (msg, hold)
        });
        let redelivered = !fresh(&delivery);
        let early = match &task {
            Ok((msg, _)) if redelivered && !msg.copy => {
                let (asks, job) = (asks.clone(), msg.id);
                Some(Early(tokio::spawn(async move { asks.ask(job).await })))
            }
            _ => None,
        };
        Delivered {
            delivery,
            task,
            early,
            redelivered,
        }
    }

    /// The job to put on record as handed back unstarted when this delivery goes back to the
    /// broker without running: a fresh one never ran anywhere; a redelivered one once its
    /// lane's `head` is settled (false: the task its previous holder may have been running was
    /// ahead of it). A copy needs no such record: it is never counted as possibly started.
    pub fn handed_back(&self, head: bool) -> Option<Uuid> {
        match &self.task {
            Ok((msg, _)) if !msg.copy && (!self.redelivered || !head) => Some(msg.id),
            _ => None,
        }
    }
}

/// Whether no worker had this message before.
fn fresh(delivery: &Delivery) -> bool {
    delivery_count(&delivery.properties) == 0 && !delivery.redelivered
}

/// The job of a fresh delivery that is not a copy, to put on record as handed back unstarted
/// (a delivery the default queue never took: it has no order, so nothing redelivered there is
/// known not to have run).
pub fn fresh_job(delivery: &Delivery) -> Option<Uuid> {
    let msg = serde_json::from_slice::<LaneMessage>(&delivery.data).ok()?;
    (fresh(delivery) && !msg.copy).then_some(msg.id)
}
