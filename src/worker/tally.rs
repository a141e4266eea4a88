//! What a worker has right now, counted by guards: the tasks it holds (delivered and not yet
//! settled: acked, or handed back to the broker) and the lanes it consumes. Heartbeats report
//! both: held tasks so the server never takes one for a task whose message was lost
//! (`reconcile`), lanes so the Supervisor can correct the assignment.
//!
//! Each set has one owner, a `Tally`, and changes only through `Mark` guards: a task's mark is
//! taken when it is delivered, moves with it through execution into the ack, and ends the
//! hold when dropped, whichever way the task leaves the worker. A key can be marked twice at
//! once (a lane is briefly consumed twice while it is re-subscribed).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};
use uuid::Uuid;

/// The tasks this worker holds.
pub type Held = Tally<Uuid>;
/// The lanes this worker consumes.
pub type Consumed = Tally<String>;

pub struct Tally<K: Ord + Clone> {
    marks: Arc<Mutex<BTreeMap<K, usize>>>,
}

impl<K: Ord + Clone> Clone for Tally<K> {
    fn clone(&self) -> Self {
        Tally {
            marks: self.marks.clone(),
        }
    }
}

impl<K: Ord + Clone> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            marks: Arc::default(),
        }
    }
}

impl<K: Ord + Clone> Tally<K> {
    /// Counts `key` until the guard is dropped.
    pub fn mark(&self, key: K) -> Mark<K> {
        *self
            .marks
            .lock()
            .expect("tally lock")
            .entry(key.clone())
            .or_default() += 1;
        Mark {
            key,
            tally: self.clone(),
        }
    }

    /// Whether `key` is marked now.
    pub fn contains(&self, key: &K) -> bool {
        self.marks.lock().expect("tally lock").contains_key(key)
    }

    /// What is marked now, in order.
    pub fn keys(&self) -> Vec<K> {
        self.marks
            .lock()
            .expect("tally lock")
            .keys()
            .cloned()
            .collect()
    }
}

/// One mark; dropping it ends it.
pub struct Mark<K: Ord + Clone> {
    key: K,
    tally: Tally<K>,
}

impl<K: Ord + Clone> Mark<K> {
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Ord + Clone> Drop for Mark<K> {
    fn drop(&mut self) {
        let mut marks = self.tally.marks.lock().expect("tally lock");
        if let Some(n) = marks.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                marks.remove(&self.key);
            }
        }
    }
}

/// A held task's mark.
pub type Hold = Mark<Uuid>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counts_while_any_of_its_marks_lives() {
        let held = Held::default();
        let job = Uuid::new_v4();
        let a = held.mark(job);
        let b = held.mark(job);
        assert_eq!(held.keys(), vec![job]);
        drop(a);
        assert_eq!(held.keys(), vec![job]);
        drop(b);
        assert!(held.keys().is_empty());
    }
}
