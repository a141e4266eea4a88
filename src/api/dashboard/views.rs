//! The dashboard's pages as askama templates (in `templates/dashboard/`) and the rows they
//! show, with every value already in words, so the templates only place them.

use super::super::ApiState;
use crate::store::JobLine;
use askama::Template;
use chrono::{DateTime, Utc};

/// What every page's frame shows.
pub struct Chrome {
    /// The page, for the navigation's highlight.
    pub nav: &'static str,
    pub prefix: String,
    /// Whether this server runs the control plane (a standby shows no live figures).
    pub active: bool,
}

impl Chrome {
    pub fn new(nav: &'static str, state: &ApiState) -> Chrome {
        Chrome {
            nav,
            prefix: state.topo.prefix.clone(),
            active: state.active.get().is_some(),
        }
    }
}

/// A job in a list.
pub struct JobRow {
    pub id: String,
    pub short: String,
    pub task: String,
    pub state: &'static str,
    pub resources: Vec<String>,
    pub attempts: i32,
    pub worker: String,
    pub created: String,
    pub took: String,
    pub error: String,
}

impl From<&JobLine> for JobRow {
    fn from(j: &JobLine) -> JobRow {
        JobRow {
            id: j.id.to_string(),
            short: short(&j.id.to_string()),
            task: j.task.clone(),
            state: j.state.as_str(),
            resources: j.resources.clone(),
            attempts: j.attempts,
            worker: j.worker.clone().unwrap_or_default(),
            created: clock(j.created_at),
            took: took(j.started_at, j.finished_at),
            error: j.error.clone().unwrap_or_default(),
        }
    }
}

/// A value for a URL's query.
pub fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The first 13 characters of an id: a time-ordered id's millisecond, which tells the jobs of a
/// list apart, and a prefix the API takes for the whole id.
pub fn short(id: &str) -> String {
    id.chars().take(13).collect()
}

/// A time of day (UTC), to the second.
pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// How long a run took, or has run so far.
pub fn took(started: Option<DateTime<Utc>>, finished: Option<DateTime<Utc>>) -> String {
    match (started, finished) {
        (Some(s), Some(f)) => span(f - s),
        (Some(s), None) => format!("{} so far", span(Utc::now() - s)),
        _ => String::new(),
    }
}

/// A duration in the largest unit that fits.
pub fn span(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

/// A count of one state among the newest jobs.
pub struct StateCount {
    pub state: &'static str,
    pub count: usize,
}

/// One minute of the throughput chart: jobs that ended in it, as counts and bar heights (%).
pub struct Minute {
    pub label: String,
    pub completed: usize,
    pub failed: usize,
    pub completed_pct: usize,
    pub failed_pct: usize,
}

/// Figures only the active server has.
pub struct LiveFigures {
    pub workers: usize,
    pub lanes: usize,
    pub waiting: usize,
    pub reserved: usize,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
pub struct OverviewPage {
    pub c: Chrome,
    pub live: Option<LiveFigures>,
    /// Jobs in the table, exact or estimated.
    pub rows: String,
    pub recent: usize,
    pub counts: Vec<StateCount>,
    pub minutes: Vec<Minute>,
}

#[derive(Template)]
#[template(path = "dashboard/jobs.html")]
pub struct JobsPage {
    pub c: Chrome,
    pub rows: Vec<JobRow>,
    pub state: String,
    pub task: String,
    pub resource: String,
    pub states: Vec<&'static str>,
    /// The link to the next (older) page.
    pub older: Option<String>,
}

/// One job that holds a job back, in words.
pub struct BlockerRow {
    pub id: String,
    pub short: String,
    pub state: String,
    pub resource: String,
    pub lane: String,
    pub worker: String,
}

#[derive(Template)]
#[template(path = "dashboard/job.html")]
pub struct JobPage {
    pub c: Chrome,
    pub id: String,
    pub task: String,
    pub state: &'static str,
    pub resources: Vec<String>,
    pub attempts: String,
    pub worker: String,
    pub queue: String,
    /// Who submitted it, and who steered it (`canceled by ops at …`).
    pub submitted_by: String,
    pub steers: Vec<String>,
    pub times: Vec<(&'static str, String)>,
    pub args: String,
    pub result: String,
    pub error: String,
    pub progress: String,
    /// Where it stands (`3rd in the waiting line`), and what holds it back.
    pub position: String,
    pub blocked: Vec<BlockerRow>,
    pub can_cancel: bool,
    pub can_retry: bool,
    pub may_act: bool,
}

/// A lane in words.
pub struct LaneRow {
    pub name: String,
    pub owner: String,
    pub standby: String,
    pub depth: u32,
    pub running: Vec<(String, String)>,
    pub resources: Vec<(String, bool)>,
}

#[derive(Template)]
#[template(path = "dashboard/lanes.html")]
pub struct LanesPage {
    pub c: Chrome,
    pub lanes: Vec<LaneRow>,
    pub waiting: usize,
}

/// A worker in words.
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub heartbeat: String,
    pub owns: String,
    pub standby: String,
    pub running: usize,
    pub concurrency: String,
    pub draining: bool,
}

#[derive(Template)]
#[template(path = "dashboard/workers.html")]
pub struct WorkersPage {
    pub c: Chrome,
    pub workers: Vec<WorkerRow>,
    pub may_act: bool,
}

/// A run on the resource timeline: where its bar starts and how wide it is (% of the window).
pub struct Bar {
    pub id: String,
    pub short: String,
    pub state: &'static str,
    pub left: f64,
    pub width: f64,
    pub label: String,
}

#[derive(Template)]
#[template(path = "dashboard/resource.html")]
pub struct ResourcePage {
    pub c: Chrome,
    pub name: String,
    pub holders: Vec<String>,
    /// Its slots and rate, in words.
    pub limit: String,
    /// Why its first waiter waits, when its limit holds it back.
    pub held: String,
    pub waiting: Vec<(String, String)>,
    pub bars: Vec<Bar>,
    pub window: String,
    pub rows: Vec<JobRow>,
}

/// A dead letter in words.
pub struct DeadRow {
    pub at: String,
    pub source: String,
    pub job: String,
    pub short: String,
    pub reason: String,
    pub body: String,
}

#[derive(Template)]
#[template(path = "dashboard/dead.html")]
pub struct DeadPage {
    pub c: Chrome,
    pub rows: Vec<DeadRow>,
}

/// A schedule in words: its coming ticks, and its latest jobs (id, tick, state).
pub struct ScheduleRow {
    pub name: String,
    pub cron: String,
    pub tz: String,
    pub task: String,
    pub next: Vec<String>,
    pub jobs: Vec<(String, String, &'static str)>,
    pub state: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard/schedules.html")]
pub struct SchedulesPage {
    pub c: Chrome,
    pub rows: Vec<ScheduleRow>,
}

#[derive(Template)]
#[template(path = "dashboard/login.html")]
pub struct LoginPage {
    pub c: Chrome,
    pub next: String,
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_unit_that_fits() {
        let ms = chrono::TimeDelta::milliseconds;
        assert_eq!(span(ms(250)), "250 ms");
        assert_eq!(span(ms(2_500)), "2.5 s");
        assert_eq!(span(ms(180_000)), "3 min");
        assert_eq!(span(ms(5_400_000)), "1.5 h");
        assert_eq!(span(ms(-5)), "0 ms");
        assert_eq!(short("3f2a9c1e-aaaa-7bbb"), "3f2a9c1e-aaaa");
    }
}
