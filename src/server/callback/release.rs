//! The Callback's release plan, as pure code: what the Dispatcher hears of a batch of events,
//! and when. Starts go first (a limited resource counts a start toward its rate only while the
//! job holds it). A job whose final event is in the batch is released before the batch is
//! written, so that the tasks waiting behind it do not wait for the database too; were the
//! write to fail, the control plane restarts and recovers from the table. Jobs the write or an
//! answer to a redelivered task found ended (a refused report ended as failed, a copy of a job
//! that had ended) are released after it. Each ended job is released once.

use crate::store::JobUpdate;
use std::collections::HashSet;
use uuid::Uuid;

/// What the Dispatcher hears of one batch before its write.
#[derive(Debug, Default, PartialEq)]
pub struct Release {
    /// Jobs whose attempt the batch shows started.
    pub started: Vec<Uuid>,
    /// Jobs whose final event the batch holds: released now.
    pub ended: Vec<Uuid>,
}

impl Release {
    pub fn of(updates: &[JobUpdate]) -> Release {
        let with = |f: fn(&JobUpdate) -> bool| updates.iter().filter(move |u| f(u)).map(|u| u.id);
        Release {
            started: with(|u| u.started_at.is_some()).collect(),
            ended: with(|u| u.end.is_some()).collect(),
        }
    }

    /// Of the jobs found ended by the write and its answers, those not released before it,
    /// each once, in the order found.
    pub fn after_write(&self, found: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        let mut seen: HashSet<Uuid> = self.ended.iter().copied().collect();
        found.into_iter().filter(|id| seen.insert(*id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{End, JobState};
    use proptest::prelude::*;

    fn update(id: u128, started: bool, ended: bool) -> JobUpdate {
        let mut u = JobUpdate::new(Uuid::from_u128(id));
        u.started_at = started.then(chrono::Utc::now);
        u.end = ended.then(|| End {
            state: JobState::Completed,
            result: None,
            error: None,
            at: chrono::Utc::now(),
        });
        u
    }

    proptest! {
        /// Every job ended by its final event or by the write is released exactly once: the
        /// batch's ends before the write, the others after it; starts are the started jobs.
        #[test]
        fn each_ended_job_is_released_once(
            jobs in prop::collection::vec((any::<bool>(), any::<bool>()), 0..20),
            found in prop::collection::vec(0u128..30, 0..30),
        ) {
            let updates: Vec<JobUpdate> = jobs
                .iter()
                .enumerate()
                .map(|(i, (s, e))| update(i as u128, *s, *e))
                .collect();
            let release = Release::of(&updates);
            let found: Vec<Uuid> = found.into_iter().map(Uuid::from_u128).collect();
            let later = release.after_write(found.iter().copied());
            for (i, (started, ended)) in jobs.iter().enumerate() {
                let id = Uuid::from_u128(i as u128);
                prop_assert_eq!(release.started.contains(&id), *started);
                prop_assert_eq!(release.ended.contains(&id), *ended);
            }
            let mut all: Vec<Uuid> = release.ended.iter().chain(&later).copied().collect();
            let n = all.len();
            all.sort();
            all.dedup();
            prop_assert_eq!(all.len(), n, "a job released twice");
            for id in &found {
                prop_assert!(all.contains(id), "a job found ended was never released");
            }
        }
    }

    #[test]
    fn a_refused_report_is_released_after_the_write() {
        let release = Release::of(&[update(1, true, true), update(2, true, false)]);
        assert_eq!(release.started, [1, 2].map(Uuid::from_u128));
        assert_eq!(release.ended, [Uuid::from_u128(1)]);
        let found = [1, 3, 3].map(Uuid::from_u128);
        assert_eq!(release.after_write(found), [Uuid::from_u128(3)]);
    }
}
