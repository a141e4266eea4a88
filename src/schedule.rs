//! Recurring schedules: a name, a cron expression (seconds allowed) in a time zone, and the task
//! each tick submits. Each tick becomes exactly one job, a delayed one due at the tick, whose id
//! is derived from the schedule's name and the tick's time: two servers, a takeover or a retried
//! write at the tick can only record it once.
//!
//! The active control plane keeps one job ahead per schedule: when the tick it made last has
//! come, it makes the next (`next_tick`), and any it fell behind on (`ticks_to_make`). A new,
//! changed or resumed schedule's first tick is the first after that change, however late the
//! loop sees it. Ticks that passed while no control plane ran are `missed`: skipped, or run
//! once (the latest of them), as the schedule says; a tick late by less than `GRACE` (a
//! takeover) still runs. Everything here is pure; the table is
//! `store::schedules`, the loop `server::dispatcher::schedules`.

use crate::protocol::{validate_submit, Invalid, TaskSpec};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::str::FromStr;
use uuid::Uuid;

/// A tick later than this when first seen was missed (no control plane ran at its time).
pub const GRACE: Duration = Duration::seconds(30);
/// Longest schedule name.
pub const MAX_NAME: usize = 128;
const TICK_NAMESPACE: Uuid = Uuid::from_u128(0x6c61_6e65_735f_7363_6865_645f_7469_636b);

/// What to do with ticks missed while no control plane ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Leave them: the next job is the next tick to come.
    #[default]
    Skip,
    /// Run the latest of them once, now.
    Once,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::Once => "once",
        }
    }
}

impl FromStr for Missed {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        match s {
            "skip" => Ok(Missed::Skip),
            "once" => Ok(Missed::Once),
            other => Err(ScheduleError::Missed(other.to_owned())),
        }
    }
}

/// Why a schedule was refused. The text is what clients see.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("a schedule's name is 1 to {MAX_NAME} characters of letters, digits, `-`, `_`, `.` and `:`: `{0}`")]
    Name(String),
    #[error(
        "`{cron}` is no cron expression (`*/5 * * * *`, or six fields with seconds first): {why}"
    )]
    Cron { cron: String, why: String },
    #[error("`{0}` is no time zone (an IANA name such as `Europe/Paris` or `UTC`)")]
    Zone(String),
    #[error("`{0}` never comes")]
    Never(String),
    #[error("`missed` is `skip` or `once`, not `{0}`")]
    Missed(String),
    #[error("its task: {0}")]
    Task(#[from] Invalid),
}

/// A schedule as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "nightly-sync", "cron": "0 30 2 * * *", "tz": "Europe/Paris",
    "task": "echo", "args": {"full": true}, "resources": ["repo:42"], "missed": "once"}))]
pub struct Schedule {
    pub name: String,
    /// Five fields (minute first) or six (seconds first).
    pub cron: String,
    /// An IANA time zone; the cron's fields are read in it (`UTC` by default).
    #[serde(default = "utc")]
    pub tz: String,
    pub task: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Value,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub max_attempts: Option<i32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default)]
    pub paused: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A schedule whose cron expression and time zone are understood.
#[derive(Debug, Clone)]
pub struct Compiled {
    cron: croner::Cron,
    tz: Tz,
}

impl Schedule {
    /// Checks everything a tick's job needs: the name, the cron, the zone, and the task as a
    /// submit would be checked (`known_task`: whether a worker offers it).
    pub fn check(&self, known_task: impl Fn(&str) -> bool) -> Result<Compiled, ScheduleError> {
        let name_ok = !self.name.is_empty()
            && self.name.chars().count() <= MAX_NAME
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !name_ok {
            return Err(ScheduleError::Name(self.name.chars().take(64).collect()));
        }
        self.spec(Uuid::nil(), Utc::now(), known_task)?;
        let compiled = self.compile()?;
        if compiled.after(Utc::now()).is_none() {
            return Err(ScheduleError::Never(self.cron.clone()));
        }
        Ok(compiled)
    }

    /// The cron and zone, understood.
    pub fn compile(&self) -> Result<Compiled, ScheduleError> {
        let cron = croner::Cron::from_str(&self.cron).map_err(|e| ScheduleError::Cron {
            cron: self.cron.chars().take(100).collect(),
            why: e.to_string(),
        })?;
        let tz = self
            .tz
            .parse::<Tz>()
            .map_err(|_| ScheduleError::Zone(self.tz.chars().take(64).collect()))?;
        Ok(Compiled { cron, tz })
    }

    /// The job of the tick at `tick`: due then, with the id the tick gives it.
    pub fn spec(
        &self,
        id: Uuid,
        tick: DateTime<Utc>,
        known_task: impl Fn(&str) -> bool,
    ) -> Result<TaskSpec, ScheduleError> {
        let mut doc = serde_json::json!({
            "task": self.task, "args": self.args, "resources": self.resources,
        });
        if let Some(m) = self.max_attempts {
            doc["max_attempts"] = m.into();
        }
        if let Some(t) = self.timeout_ms {
            doc["timeout_ms"] = t.into();
        }
        let mut spec = validate_submit(doc, id, tick, known_task)?;
        spec.run_at = Some(tick);
        Ok(spec)
    }
}

impl Compiled {
    /// The first tick after `t`.
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The last tick at or before `t`.
    pub fn at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&local, true).ok()?;
        Some(prev.with_timezone(&Utc))
    }

    /// The next `n` ticks after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

/// What a schedule needs now, given the tick it made a job for last (`last`; None: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Its job for the coming tick exists.
    Wait,
    /// Make the job of this tick (its due time; in the past for a late or missed one).
    Make {
        tick: DateTime<Utc>,
        /// Ticks left out before it (missed while no control plane ran).
        skipped: bool,
    },
    /// Never again (the cron has no tick after `last`).
    Done,
}

/// The next job a schedule makes (see the module's doc).
pub fn next_tick(
    compiled: &Compiled,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    missed: Missed,
) -> Next {
    if last.is_some_and(|last| last > now) {
        return Next::Wait;
    }
    let Some(next) = compiled.after(last.unwrap_or(now)) else {
        return Next::Done;
    };
    if next > now - GRACE {
        return Next::Make {
            tick: next,
            skipped: false,
        };
    }
    // Missed: `next` and maybe more passed long ago.
    let tick = match missed {
        Missed::Once => compiled.at_or_before(now).unwrap_or(next),
        Missed::Skip => match compiled.after(now) {
            Some(t) => t,
            None => return Next::Done,
        },
    };
    Next::Make {
        tick,
        skipped: tick != next,
    }
}

/// The most jobs one schedule makes in one round: `GRACE` of ticks a second apart, and the next.
const MOST_PER_ROUND: usize = 64;

/// The ticks whose jobs a schedule needs now, in order: `next_tick` asked until the job of the
/// coming tick exists. A loop that fell behind (a slow database) so catches up in one round
/// instead of one tick per round; `skipped` as the first `Next::Make` says.
pub fn ticks_to_make(
    compiled: &Compiled,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    missed: Missed,
) -> (Vec<DateTime<Utc>>, bool) {
    let (mut ticks, mut skipped_any, mut last) = (Vec::new(), false, last);
    while ticks.len() < MOST_PER_ROUND {
        let Next::Make { tick, skipped } = next_tick(compiled, last, now, missed) else {
            break;
        };
        skipped_any |= skipped;
        ticks.push(tick);
        last = Some(tick);
    }
    (ticks, skipped_any)
}

/// Whether the job made for `last` (not fired yet) is left out: its tick passed longer than
/// `GRACE` ago, and the schedule skips missed ticks, or runs once a later missed tick (`next`)
/// in its place.
pub fn leave_out(last: DateTime<Utc>, now: DateTime<Utc>, missed: Missed, next: Next) -> bool {
    last < now - GRACE
        && match missed {
            Missed::Skip => true,
            Missed::Once => matches!(next, Next::Make { skipped: true, .. }),
        }
}

/// The id of the job of `name`'s tick at `tick`.
pub fn job_id(name: &str, tick: DateTime<Utc>) -> Uuid {
    let key = format!("{name}@{}", tick.timestamp_millis());
    Uuid::new_v5(&TICK_NAMESPACE, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn every_second() -> Schedule {
        Schedule {
            name: "tick".into(),
            cron: "* * * * * *".into(),
            tz: "UTC".into(),
            task: "echo".into(),
            args: Value::Null,
            resources: vec![],
            max_attempts: None,
            timeout_ms: None,
            missed: Missed::Skip,
            paused: false,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_schedule_is_checked_like_a_submit() {
        let ok = every_second();
        assert!(ok.check(|t| t == "echo").is_ok());
        let bad = |f: &dyn Fn(&mut Schedule)| {
            let mut s = every_second();
            f(&mut s);
            s.check(|t| t == "echo").unwrap_err().to_string()
        };
        assert!(bad(&|s| s.name = "has space".into()).contains("name"));
        assert!(bad(&|s| s.cron = "every day".into()).contains("no cron expression"));
        assert!(bad(&|s| s.tz = "Mars/Olympus".into()).contains("no time zone"));
        assert!(bad(&|s| s.task = "nope".into()).contains("unknown task"));
        assert!(bad(&|s| s.max_attempts = Some(0)).contains("max_attempts"));
    }

    #[test]
    fn cron_fields_are_read_in_the_schedules_zone() {
        let mut nine = every_second();
        nine.cron = "0 9 * * *".into();
        nine.tz = "Europe/Paris".into();
        let c = nine.compile().unwrap();
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(
            c.after(at("2026-12-07T10:00:00Z")),
            Some(at("2026-12-08T08:00:00Z"))
        );
        assert_eq!(
            c.after(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn one_job_ahead_then_the_next_when_its_tick_comes() {
        let c = every_second().compile().unwrap();
        let now = at("2026-12-07T12:00:00.400Z");
        let first = Next::Make {
            tick: at("2026-12-07T12:00:01Z"),
            skipped: false,
        };
        assert_eq!(next_tick(&c, None, now, Missed::Skip), first);
        assert_eq!(
            next_tick(&c, Some(at("2026-12-07T12:00:01Z")), now, Missed::Skip),
            Next::Wait
        );
        let later = at("2026-12-07T12:00:01.002Z");
        assert_eq!(
            next_tick(&c, Some(at("2026-12-07T12:00:01Z")), later, Missed::Skip),
            Next::Make {
                tick: at("2026-12-07T12:00:02Z"),
                skipped: false
            }
        );
    }

    #[test]
    fn missed_ticks_are_skipped_or_run_once_but_a_late_one_runs() {
        let c = every_second().compile().unwrap();
        let last = Some(at("2026-12-07T12:00:00Z"));
        // Back 5 s later (a takeover): the next tick runs late.
        let soon = at("2026-12-07T12:00:05.5Z");
        assert_eq!(
            next_tick(&c, last, soon, Missed::Skip),
            Next::Make {
                tick: at("2026-12-07T12:00:01Z"),
                skipped: false
            }
        );
        // Back an hour later.
        let hour = at("2026-12-07T13:00:00.5Z");
        assert_eq!(
            next_tick(&c, last, hour, Missed::Skip),
            Next::Make {
                tick: at("2026-12-07T13:00:01Z"),
                skipped: true
            }
        );
        assert_eq!(
            next_tick(&c, last, hour, Missed::Once),
            Next::Make {
                tick: at("2026-12-07T13:00:00Z"),
                skipped: true
            }
        );
        let made = at("2026-12-07T12:00:00Z");
        let once = next_tick(&c, last, hour, Missed::Once);
        assert!(leave_out(
            made,
            hour,
            Missed::Skip,
            next_tick(&c, last, hour, Missed::Skip)
        ));
        assert!(
            leave_out(made, hour, Missed::Once, once),
            "the latest runs in its place"
        );
        assert!(!leave_out(
            made,
            soon,
            Missed::Skip,
            next_tick(&c, last, soon, Missed::Skip)
        ));
        // A daily schedule down for a minute at its tick: `once` runs that tick late.
        let mut daily = every_second();
        daily.cron = "0 0 12 * * *".into();
        let d = daily.compile().unwrap();
        let (tick, back) = (at("2026-12-07T12:00:00Z"), at("2026-12-07T12:01:00Z"));
        let next = next_tick(&d, Some(tick), back, Missed::Once);
        assert_eq!(
            next,
            Next::Make {
                tick: at("2026-12-08T12:00:00Z"),
                skipped: false
            }
        );
        assert!(
            !leave_out(tick, back, Missed::Once, next),
            "it is the one that runs"
        );
        assert!(leave_out(tick, back, Missed::Skip, next));
    }

    #[test]
    fn a_loop_that_fell_behind_makes_every_late_tick_and_the_next_in_one_round() {
        let c = every_second().compile().unwrap();
        let last = Some(at("2026-12-07T12:00:00Z"));
        let now = at("2026-12-07T12:00:04.5Z");
        let expected: Vec<_> = (1..=5)
            .map(|s| at("2026-12-07T12:00:00Z") + Duration::seconds(s))
            .collect();
        assert_eq!(
            ticks_to_make(&c, last, now, Missed::Skip),
            (expected, false)
        );
        // Behind by more than the grace: the missed ticks are left out, the next one made.
        let hour = at("2026-12-07T13:00:00.5Z");
        assert_eq!(
            ticks_to_make(&c, last, hour, Missed::Skip),
            (vec![at("2026-12-07T13:00:01Z")], true)
        );
        assert_eq!(
            ticks_to_make(&c, last, hour, Missed::Once),
            (
                vec![at("2026-12-07T13:00:00Z"), at("2026-12-07T13:00:01Z")],
                true
            )
        );
        assert_eq!(
            ticks_to_make(&c, Some(at("2026-12-07T12:00:05Z")), now, Missed::Skip),
            (vec![], false)
        );
    }

    #[test]
    fn a_tick_has_one_id_per_schedule() {
        let t = at("2026-12-07T12:00:01Z");
        assert_eq!(job_id("a", t), job_id("a", t));
        assert_ne!(job_id("a", t), job_id("b", t));
        assert_ne!(job_id("a", t), job_id("a", t + Duration::seconds(1)));
    }

    proptest! {
        /// Whenever a schedule is asked, it makes at most one job ahead, never a tick twice,
        /// and never goes back in time; run at every step it misses no tick.
        #[test]
        fn following_next_tick_makes_every_tick_once_in_order(
            steps in proptest::collection::vec(1i64..2500, 1..60),
            missed in prop_oneof![Just(Missed::Skip), Just(Missed::Once)],
        ) {
            let c = every_second().compile().unwrap();
            let mut now = at("2026-12-07T12:00:00.250Z");
            let mut last: Option<DateTime<Utc>> = None;
            let mut made: Vec<DateTime<Utc>> = Vec::new();
            for ms in steps {
                now += Duration::milliseconds(ms);
                let (ticks, skipped) = ticks_to_make(&c, last, now, missed);
                prop_assert!(!skipped, "steps under the grace miss nothing");
                for tick in ticks {
                    prop_assert!(last.is_none_or(|l| tick > l));
                    made.push(tick);
                    last = Some(tick);
                }
                prop_assert!(last.is_some_and(|l| l > now), "one job is ahead");
                prop_assert_eq!(next_tick(&c, last, now, missed), Next::Wait);
            }
            for pair in made.windows(2) {
                prop_assert_eq!(pair[1] - pair[0], Duration::seconds(1), "no tick left out");
            }
        }
    }
}
