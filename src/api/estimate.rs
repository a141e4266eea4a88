//! "When will it start?": an estimate for a job that waits, from the recent run times of the
//! tasks ahead of it. A lane runs one task at a time, so a queued job starts once the jobs
//! ahead in its lane have run; a waiting job once every resource it waits on is free, each
//! after the jobs ahead on it. A running job ahead counts what is left of its task's mean run
//! time. Pure (`estimate`), with the means kept by `RunTimes` (read again every `REFRESH`).

use crate::store::{JobState, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use std::{collections::HashMap, sync::Mutex, time::Instant};

/// How often the means are read again.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// The completed jobs the means are taken over (the newest).
const SAMPLE: i64 = 2_000;

/// A job ahead of the one estimated.
#[derive(Debug, Clone)]
pub struct Ahead<'a> {
    pub task: &'a str,
    pub state: JobState,
    pub started_at: Option<DateTime<Utc>>,
    /// The resource it holds the estimated job back on (None: ahead in its lane).
    pub resource: Option<&'a str>,
}

/// When a job with `ahead` in front of it starts, given each task's mean run time (ms); None
/// when a task ahead has no recent run to go by.
pub fn estimate(
    ahead: &[Ahead],
    means: &HashMap<String, f64>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut per_resource: HashMap<Option<&str>, f64> = HashMap::new();
    for a in ahead {
        *per_resource.entry(a.resource).or_default() += left(a, means, now)?;
    }
    let wait = per_resource.values().copied().fold(0.0, f64::max);
    Some(now + Duration::milliseconds(wait.round() as i64))
}

/// When the first of `holders` (of a resource's slots) ends, by their tasks' means; None when
/// one has no recent run to go by.
pub fn first_free(
    holders: &[Ahead],
    means: &HashMap<String, f64>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut first = f64::MAX;
    for a in holders {
        first = first.min(left(a, means, now)?);
    }
    (first < f64::MAX).then(|| now + Duration::milliseconds(first.round() as i64))
}

/// What is left of a job's run (ms), by its task's mean.
fn left(a: &Ahead, means: &HashMap<String, f64>, now: DateTime<Utc>) -> Option<f64> {
    let mean = *means.get(a.task)?;
    Some(match (a.state, a.started_at) {
        (JobState::Running, Some(at)) => (mean - (now - at).num_milliseconds() as f64).max(0.0),
        _ => mean,
    })
}

/// Each task's mean run time over the latest completed jobs, read again when it is older than
/// `REFRESH`.
#[derive(Default)]
pub struct RunTimes(Mutex<Option<(Instant, HashMap<String, f64>)>>);

impl RunTimes {
    pub async fn means(&self, store: &Store) -> Result<HashMap<String, f64>, StoreError> {
        if let Some((at, means)) = &*self.0.lock().expect("run times lock") {
            if at.elapsed() < REFRESH {
                return Ok(means.clone());
            }
        }
        let means: HashMap<String, f64> =
            store.recent_run_times(SAMPLE).await?.into_iter().collect();
        *self.0.lock().expect("run times lock") = Some((Instant::now(), means.clone()));
        Ok(means)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_resource_frees_a_slot_when_its_first_holder_ends() {
        let now = at("2026-12-07T12:00:10Z");
        let means = HashMap::from([("sync".to_owned(), 1000.0)]);
        let holder = |started| Ahead {
            task: "sync",
            state: JobState::Running,
            started_at: Some(at(started)),
            resource: Some("api"),
        };
        let holders = [
            holder("2026-12-07T12:00:09.900Z"),
            holder("2026-12-07T12:00:09.300Z"),
        ];
        assert_eq!(
            first_free(&holders, &means, now),
            Some(at("2026-12-07T12:00:10.300Z"))
        );
        assert_eq!(first_free(&[], &means, now), None);
    }

    #[test]
    fn a_lane_adds_up_and_resources_wait_side_by_side() {
        let now = at("2026-12-07T12:00:10Z");
        let means = HashMap::from([("sync".to_owned(), 1000.0), ("echo".to_owned(), 10.0)]);
        let running = Ahead {
            task: "sync",
            state: JobState::Running,
            started_at: Some(at("2026-12-07T12:00:09.600Z")),
            resource: None,
        };
        let queued = Ahead {
            task: "sync",
            state: JobState::Queued,
            started_at: None,
            resource: None,
        };
        // In a lane: 600 ms left of the running one, then 1000 ms.
        let lane = estimate(&[running.clone(), queued.clone()], &means, now);
        assert_eq!(lane, Some(now + Duration::milliseconds(1600)));
        // Waiting on two resources: the longer wait counts.
        let on = |r, a: &Ahead<'static>| Ahead {
            resource: Some(r),
            ..a.clone()
        };
        let two = [on("a", &running), on("a", &queued), on("b", &queued)];
        assert_eq!(
            estimate(&two, &means, now),
            Some(now + Duration::milliseconds(1600))
        );
        // A run longer than the mean has nothing left; an unknown task gives no estimate.
        let late = Ahead {
            started_at: Some(at("2026-12-07T12:00:00Z")),
            ..running.clone()
        };
        assert_eq!(estimate(&[late], &means, now), Some(now));
        let unknown = Ahead {
            task: "new",
            ..queued
        };
        assert_eq!(estimate(&[unknown], &means, now), None);
        assert_eq!(estimate(&[], &means, now), Some(now), "nothing ahead: now");
    }
}
