//! The in-order settling against a model of the broker's acks: whatever the order in which
//! events are confirmed or refused, every confirmed task is acked exactly once and no refused
//! task is ever acked (it must run again).

use super::*;
use crate::worker::tally::Held;
use futures::future;
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Acks recorded as (delivery tag, multiple), in order.
type Log = Arc<Mutex<Vec<(usize, bool)>>>;

struct Recorder {
    tag: usize,
    log: Log,
}

impl Ack for Recorder {
    fn ack(&self, multiple: bool) -> impl Future<Output = Result<(), lapin::Error>> + Send {
        self.log.lock().unwrap().push((self.tag, multiple));
        future::ready(Ok(()))
    }
}

/// One task: whether its event is confirmed, and whether that is known when it is queued.
#[derive(Debug, Clone, Copy)]
struct Case {
    confirmed: bool,
    known_at_push: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (prop::bool::weighted(0.85), any::<bool>()).prop_map(|(confirmed, known_at_push)| Case {
        confirmed,
        known_at_push,
    })
}

/// Runs the cases through `LaneAcks`, confirms in publish order; returns the ack log. With
/// `interleaved`, the settling runs between pushes, as when tasks finish one by one.
fn run(cases: &[Case], interleaved: bool) -> Vec<(usize, bool)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let log: Log = Arc::default();
        let held = Held::default();
        let acks = LaneAcks::start();
        let mut later = Vec::new();
        for (tag, c) in cases.iter().enumerate() {
            let outcome = if c.confirmed {
                Ok(())
            } else {
                Err(EventError::PumpStopped)
            };
            let receipt: BoxFuture<'static, Receipt> = if c.known_at_push {
                Box::pin(future::ready(outcome))
            } else {
                let (tx, rx) = oneshot::channel();
                later.push((tx, outcome));
                Box::pin(async move { rx.await.unwrap() })
            };
            acks.push(Finished {
                hold: held.mark(Uuid::new_v4()),
                receipt,
                acker: Recorder {
                    tag,
                    log: log.clone(),
                },
            });
            if interleaved {
                tokio::task::yield_now().await;
            }
        }
        for (tx, outcome) in later {
            let _ = tx.send(outcome);
            tokio::task::yield_now().await;
        }
        acks.finish().await;
        let log = log.lock().unwrap().clone();
        log
    })
}

proptest! {
    #[test]
    fn every_confirmed_task_is_acked_once_and_no_refused_one_ever(
        cases in prop::collection::vec(case(), 0..40),
        interleaved in any::<bool>(),
    ) {
        let log = run(&cases, interleaved);
        // The broker's view: acking a tag settles it, and with `multiple` every unacked tag
        // below it too. Acking a settled tag alone is a channel error.
        let mut acked = vec![false; cases.len()];
        for &(tag, multiple) in &log {
            prop_assert!(!acked[tag], "tag {} acked twice", tag);
            let from = if multiple { 0 } else { tag };
            for t in from..=tag {
                prop_assert!(acked[t] || cases[t].confirmed, "refused task {} acked", t);
                acked[t] = true;
            }
        }
        for (t, c) in cases.iter().enumerate() {
            prop_assert_eq!(acked[t], c.confirmed, "task {}", t);
        }
    }
}

#[test]
fn confirmed_tasks_waiting_together_take_one_ack() {
    let ready = Case {
        confirmed: true,
        known_at_push: true,
    };
    assert_eq!(run(&[ready; 5], false), vec![(4, true)]);
}
