//! The Supervisor's registry of live workers: what it knows about each one (`Entry`), what
//! `GET /workers` shows of it (`WorkerView`), and when a worker counts as dead (`expired`).
//!
//! The liveness decision is a pure function of the entries, the current instant and the
//! timeout, so it is tested here without actors, timers or a broker; the Supervisor only calls
//! it from its sweep timer and acts on the answer.

use crate::protocol::WorkerInfo;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use uuid::Uuid;

/// What `GET /workers` shows about one worker.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub concurrency: Option<usize>,
    pub version: Option<String>,
    pub lanes: Vec<String>,
    /// Lanes it owns.
    pub assigned: Vec<String>,
    /// Lanes it consumes as the standby (the broker makes it active if the owner dies).
    pub standby: Vec<String>,
    pub running: Vec<Uuid>,
    pub heartbeat_age_ms: u64,
    pub draining: bool,
    pub since: DateTime<Utc>,
}

/// One live worker, as the Supervisor knows it. The single record of its last heartbeat.
pub(super) struct Entry {
    /// What the worker said about itself when it came online (absent if the Supervisor first
    /// heard of it through a heartbeat).
    pub(super) info: Option<WorkerInfo>,
    /// The lanes the worker reports it consumes, sorted.
    pub(super) lanes: Vec<String>,
    /// The tasks it holds (delivered, not yet acked).
    pub(super) running: Vec<Uuid>,
    /// Tasks it runs at once, as its heartbeats say (older workers: as `info` says).
    pub(super) slots: Option<usize>,
    /// The control queue of the session that sent the latest heartbeat (None from workers
    /// older than this field): the broker deletes it when that session's connection closes.
    pub(super) control: Option<String>,
    /// When the Supervisor last heard from it.
    pub(super) last_seen: Instant,
    pub(super) draining: bool,
    pub(super) since: DateTime<Utc>,
}

/// Slots counted for a worker that has not said how many it has.
const UNKNOWN_SLOTS: usize = 8;

impl Entry {
    /// Tasks it runs at once.
    pub(super) fn slots(&self) -> usize {
        self.slots
            .or(self.info.as_ref().map(|i| i.concurrency))
            .unwrap_or(UNKNOWN_SLOTS)
    }

    /// A worker first heard of at `now`.
    pub(super) fn joined(now: Instant) -> Entry {
        Entry {
            info: None,
            lanes: Vec::new(),
            running: Vec::new(),
            slots: None,
            control: None,
            last_seen: now,
            draining: false,
            since: Utc::now(),
        }
    }

    /// The worker as `GET /workers` shows it; `assigned` and `standby` come from the
    /// assignment, which the Supervisor keeps apart from the registry.
    pub(super) fn view(&self, id: &str, assigned: Vec<String>, standby: Vec<String>) -> WorkerView {
        WorkerView {
            id: id.to_owned(),
            host: self.info.as_ref().map(|i| i.host.clone()),
            pid: self.info.as_ref().map(|i| i.pid),
            concurrency: self.info.as_ref().map(|i| i.concurrency),
            version: self.info.as_ref().map(|i| i.version.clone()),
            lanes: self.lanes.clone(),
            assigned,
            standby,
            running: self.running.clone(),
            heartbeat_age_ms: self.last_seen.elapsed().as_millis() as u64,
            draining: self.draining,
            since: self.since,
        }
    }
}

/// The workers not heard from for longer than `timeout` at `now`, in id order. A worker
/// silent for exactly `timeout` is still alive.
pub(super) fn expired(
    workers: &BTreeMap<String, Entry>,
    now: Instant,
    timeout: Duration,
) -> Vec<String> {
    workers
        .iter()
        .filter(|(_, e)| now.saturating_duration_since(e.last_seen) > timeout)
        .map(|(id, _)| id.clone())
        .collect()
}

/// What a sweep may do about liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judgement {
    /// Writes flow: workers silent past the timeout are dead.
    Judge,
    /// The job-state writer is stalled: heartbeats wait behind it, so silence means nothing.
    Hold,
    /// A stall just ended: every worker gets a fresh timeout before it is judged again.
    Restart,
}

/// Whether a sweep may judge liveness, given how long the Callback's write in progress has
/// taken (`stalled_for`), whether the last sweep held, and how long a write may take before
/// it counts as a stall.
pub(super) fn judge(stalled_for: Option<Duration>, holding: bool, grace: Duration) -> Judgement {
    match stalled_for {
        Some(d) if d > grace => Judgement::Hold,
        _ if holding => Judgement::Restart,
        _ => Judgement::Judge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_writer_holds_judgement_and_its_end_restarts_every_clock() {
        let grace = Duration::from_millis(500);
        let ms = Duration::from_millis;
        assert_eq!(judge(None, false, grace), Judgement::Judge);
        assert_eq!(judge(Some(ms(100)), false, grace), Judgement::Judge);
        assert_eq!(judge(Some(ms(501)), false, grace), Judgement::Hold);
        assert_eq!(judge(Some(ms(5000)), true, grace), Judgement::Hold);
        assert_eq!(judge(None, true, grace), Judgement::Restart);
        assert_eq!(judge(Some(ms(10)), true, grace), Judgement::Restart);
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn registry(t0: Instant, seen_after: &[(&str, u64)]) -> BTreeMap<String, Entry> {
        seen_after
            .iter()
            .map(|(id, secs)| {
                (
                    (*id).to_owned(),
                    Entry::joined(t0 + Duration::from_secs(*secs)),
                )
            })
            .collect()
    }

    #[test]
    fn no_workers_none_expired() {
        assert!(expired(&BTreeMap::new(), Instant::now(), TIMEOUT).is_empty());
    }

    #[test]
    fn a_worker_heard_from_recently_is_alive() {
        let t0 = Instant::now();
        let workers = registry(t0, &[("a", 0)]);
        assert!(expired(&workers, t0, TIMEOUT).is_empty());
        assert!(expired(&workers, t0 + Duration::from_secs(9), TIMEOUT).is_empty());
    }

    #[test]
    fn silence_of_exactly_the_timeout_is_not_yet_death() {
        let t0 = Instant::now();
        let workers = registry(t0, &[("a", 0)]);
        assert!(expired(&workers, t0 + TIMEOUT, TIMEOUT).is_empty());
        assert_eq!(
            expired(&workers, t0 + TIMEOUT + Duration::from_millis(1), TIMEOUT),
            vec!["a".to_owned()]
        );
    }

    #[test]
    fn only_the_silent_workers_expire_in_id_order() {
        let t0 = Instant::now();
        let workers = registry(t0, &[("c", 0), ("b", 15), ("a", 1), ("d", 20)]);
        assert_eq!(
            expired(&workers, t0 + Duration::from_secs(20), TIMEOUT),
            vec!["a".to_owned(), "c".to_owned()]
        );
    }

    #[test]
    fn a_heartbeat_later_than_now_does_not_expire() {
        // A heartbeat recorded after the sweep took its instant must not count as silence.
        let t0 = Instant::now();
        let workers = registry(t0, &[("a", 30)]);
        assert!(expired(&workers, t0, TIMEOUT).is_empty());
    }

    #[test]
    fn a_fresh_entry_knows_nothing_yet() {
        let t0 = Instant::now();
        let e = Entry::joined(t0);
        assert_eq!(e.last_seen, t0);
        assert!(e.info.is_none() && e.lanes.is_empty() && e.running.is_empty() && !e.draining);
        assert!(e.control.is_none());
        let v = e.view("w1", vec!["lane.0".into()], Vec::new());
        assert_eq!(v.id, "w1");
        assert_eq!(v.assigned, vec!["lane.0".to_owned()]);
        assert!(v.host.is_none() && v.standby.is_empty());
    }
}
