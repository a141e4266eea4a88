//! Proof from outside: an execution log written by the tasks themselves.
//!
//! Each task is an `exec` of `sh` that takes a `flock` on a lock file per resource (shared
//! resources take a shared lock) without waiting, writes `overlap` if it could not, appends
//! `start` and `end` lines with its token (the job's message id) and sleeps in between. The
//! lock is held by the task's whole process tree, so a run that outlives its worker is caught
//! by the next run's failed `flock`. What the checks count comes from this log, never from
//! the `jobs` table: overlaps, runs per job, second runs of a job that had ended,
//! per-resource start order against the submit order, and starts per window of a resource with
//! a rate. (`probe` tasks also hold `slot:` resources: one of N slot files each.)

use crate::helpers::Row;
use chrono::{DateTime, Utc};
use lanes::{
    limit::Limit,
    protocol::{resource_kind, Access},
};
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

/// The task's script: `sh -c SCRIPT sh LOG DIR TOKEN SECONDS RESOURCE...`.
const SCRIPT: &str = r#"
log="$1"; dir="$2"; job="$3"; secs="$4"; shift 4
fd=3
for r in "$@"; do
  case "$r" in shared:*) mode=-s; name="${r#shared:}";; *) mode=-x; name="$r";; esac
  eval "exec $fd>>\"$dir/$name.lock\""
  flock -n $mode $fd || echo "overlap $job $name" >> "$log"
  fd=$((fd+1))
done
echo "start $job $(date +%s%N) a${LANES_ATTEMPT:-?} $*" >> "$log"
sleep "$secs"
echo "end $job" >> "$log"
"#;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The environment workers need to run the log's tasks (`exec` of `sh`, and `probe`).
pub fn worker_env() -> Vec<(String, String)> {
    vec![
        ("LANES_EXEC_ALLOW".into(), "sh".into()),
        ("LANES_PROBE_DIR".into(), env!("CARGO_TARGET_TMPDIR").into()),
    ]
}

pub struct ExecLog {
    dir: PathBuf,
    /// Tokens per resource (without `shared:` or `slot:`), in submit order, with how they
    /// hold it.
    submitted: HashMap<String, Vec<(String, Access)>>,
    /// Resources with a limit: probes hold their slots, the report counts their rates.
    limits: HashMap<String, Limit>,
    tokens: Vec<String>,
    /// For traffic with delayed jobs: each job's place in time (when it was published, or
    /// when it fell due) and whether it was delayed; pairs with a delayed job closer than
    /// `margin` (ns) are not ordered by the oracle.
    times: HashMap<String, (i64, bool)>,
    margin: i64,
}

/// What the log shows.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub jobs: usize,
    pub started: usize,
    /// Jobs whose log shows no start at all.
    pub never_started: usize,
    /// Runs that found one of their resources locked by another run.
    pub overlaps: usize,
    /// Runs beyond the first, over all jobs.
    pub extra_runs: usize,
    /// Runs that began after a run of the same job had ended (a worker that died between the
    /// end of a task and its report makes the next one run it again: at least once).
    pub runs_after_end: usize,
    /// Runs that began after the job was recorded as finished: a job that had completed ran
    /// again.
    pub runs_after_finish: usize,
    /// Windows of a rate's period holding more first starts of its resource's jobs than the
    /// rate allows.
    pub rate_violations: usize,
    /// Adjacent pairs of one resource's jobs whose first starts are out of submit order.
    pub order_violations: usize,
    /// The first few of them, `resource: later job started before earlier job`.
    pub out_of_order: Vec<String>,
}

impl ExecLog {
    pub fn new(name: &str) -> ExecLog {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("execlog-{name}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ExecLog {
            dir,
            submitted: HashMap::new(),
            limits: HashMap::new(),
            tokens: Vec::new(),
            times: HashMap::new(),
            margin: 0,
        }
    }

    /// The limit a resource was given (set it on the server too): probes hold its slots, and
    /// the report counts its rate.
    #[allow(dead_code)] // the fault targets
    pub fn limit(&mut self, name: &str, limit: Limit) {
        self.limits.insert(name.to_owned(), limit);
    }

    /// A file in the log's directory, for a test's own scripts.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Registers a task the test builds itself (a webhook job, say) that logs under the
    /// returned token. Call in submit order.
    pub fn expect(&mut self, resources: &[String]) -> String {
        let token = uuid::Uuid::now_v7().to_string();
        for r in resources {
            let (name, access) = resource_kind(r);
            self.submitted
                .entry(name.to_owned())
                .or_default()
                .push((token.clone(), access));
        }
        self.tokens.push(token.clone());
        token
    }

    /// A `probe` task (built in, in the worker's process: cheap enough for fast traffic) on
    /// `resources` that runs `ms`; its token is its message id, which is its job id. Call in
    /// submit order.
    #[allow(dead_code)] // not every target that includes this file uses it
    pub fn probe(&mut self, resources: &[String], ms: u64) -> (Vec<u8>, Option<String>) {
        let token = self.expect(resources);
        let log = self.dir.file_name().unwrap().to_string_lossy().into_owned();
        let slots: HashMap<&String, u32> = self.limits.iter().map(|(n, l)| (n, l.slots)).collect();
        let body = serde_json::json!({
            "task": "probe",
            "args": {"log": log, "ms": ms, "resources": resources, "slots": slots},
            "resources": resources,
            "max_attempts": 10,
        });
        (serde_json::to_vec(&body).unwrap(), Some(token))
    }

    /// A task on `resources` that runs `ms`; its token is its message id. Call in submit order.
    pub fn task(&mut self, resources: &[String], ms: u64) -> (Vec<u8>, Option<String>) {
        let token = self.expect(resources);
        let mut argv = vec![
            "-c".to_owned(),
            SCRIPT.to_owned(),
            "sh".to_owned(),
            self.log_path().display().to_string(),
            self.dir.display().to_string(),
            token.clone(),
            format!("{:.3}", ms as f64 / 1000.0),
        ];
        argv.extend(resources.iter().cloned());
        let body = serde_json::json!({
            "task": "exec",
            "args": {"program": "sh", "args": argv},
            "resources": resources,
            "max_attempts": 10,
        });
        (serde_json::to_vec(&body).unwrap(), Some(token))
    }

    /// `n` tasks over `resources` resources (task i on resource i % resources), `ms` each.
    pub fn workload(
        &mut self,
        n: usize,
        resources: usize,
        ms: u64,
    ) -> Vec<(Vec<u8>, Option<String>)> {
        (0..n)
            .map(|i| self.task(&[format!("r{}", i % resources)], ms))
            .collect()
    }

    /// `n` tasks of `ms` from task number `from`, over `resources` resources (task i on
    /// `r{i % resources}`), every `every`-th also on a second one. Call in submit order.
    #[allow(dead_code)] // the fault targets (chaos, cluster, partition)
    pub fn mixed(
        &mut self,
        from: usize,
        n: usize,
        (resources, every): (usize, usize),
        ms: u64,
    ) -> Vec<(Vec<u8>, Option<String>)> {
        (from..from + n)
            .map(|i| {
                let mut names = vec![format!("r{}", i % resources)];
                if i % every == 0 {
                    names.push(format!("r{}", (i * 7 + 3) % resources));
                    names.dedup();
                }
                self.task(&names, ms)
            })
            .collect()
    }

    /// For traffic with delayed jobs: when each job was published (Unix ns) and whether it
    /// was delayed. The oracle then places a delayed job at its recorded due time, and orders
    /// it against another job only where the outside can tell: a job recorded (`created_at`)
    /// before the due time goes first; one published more than `margin` after it (the
    /// firing's lateness) goes after; two delayed jobs go in due order.
    #[allow(dead_code)] // the fault targets
    pub fn published(&mut self, times: HashMap<String, (i64, bool)>, margin: Duration) {
        self.times = times;
        self.margin = margin.as_nanos() as i64;
    }

    /// Each resource's holders in the order the contract gives them, and the pairs it leaves
    /// unordered.
    fn order(&self, rows: &[Row]) -> (HashMap<String, Vec<(String, Access)>>, Unordered) {
        if self.times.is_empty() {
            return (self.submitted.clone(), Unordered::default());
        }
        let ns = |t: DateTime<Utc>| t.timestamp_nanos_opt().unwrap_or(0);
        let recorded: HashMap<String, (i64, Option<i64>)> = rows
            .iter()
            .map(|r| (r.id.to_string(), (ns(r.created_at), r.run_at.map(ns))))
            .collect();
        let mut placed = HashMap::new();
        for (token, &(published, delayed)) in &self.times {
            let (created, due) = recorded.get(token).copied().unwrap_or((published, None));
            let place = match (delayed, due) {
                (true, Some(due)) => Place::Delayed { due },
                _ => Place::Now { published, created },
            };
            placed.insert(token.clone(), place);
        }
        let key = |t: &String| match placed.get(t) {
            Some(Place::Delayed { due }) => *due,
            Some(Place::Now { published, .. }) => *published,
            None => i64::MIN,
        };
        let mut submitted = self.submitted.clone();
        for holders in submitted.values_mut() {
            // Stable: jobs published at the same moment keep their submit order.
            holders.sort_by_key(|(token, _)| key(token));
        }
        (
            submitted,
            Unordered {
                placed,
                margin: self.margin,
            },
        )
    }

    /// The log's lines, in the order they were written.
    #[allow(dead_code)] // the fault targets
    pub fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// At each start of one of `tokens` (its Unix ns), how many of them were running then
    /// (it included).
    #[allow(dead_code)] // the fault targets
    pub fn running_at_starts(&self, tokens: &[String]) -> Vec<(i64, usize)> {
        let (mut running, mut out) = (0, Vec::new());
        for line in self.lines() {
            let mut words = line.split(' ');
            match (words.next(), words.next()) {
                (Some("start"), Some(job)) if tokens.iter().any(|t| t == job) => {
                    running += 1;
                    let at = words.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                    out.push((at, running));
                }
                (Some("end"), Some(job)) if tokens.iter().any(|t| t == job) => running -= 1,
                _ => {}
            }
        }
        out
    }

    /// Whether the log shows a start of the job with this token.
    pub fn started(&self, token: &str) -> bool {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .any(|l| l.starts_with(&format!("start {token} ")))
    }

    /// When the job with this token first started (Unix nanoseconds), if it did.
    #[allow(dead_code)] // tests/cluster.rs
    pub fn started_at(&self, token: &str) -> Option<i64> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = format!("start {token} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&start)?.split(' ').next()?.parse().ok())
    }

    /// The longest time (ms) without a task start between `from` and `to` (Unix nanoseconds):
    /// how long work stood still.
    #[allow(dead_code)] // tests/cluster.rs
    pub fn longest_pause_ms(&self, from: i64, to: i64) -> i64 {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut starts: Vec<i64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("start ")?.split(' ').nth(1)?.parse().ok())
            .filter(|t| (from..=to).contains(t))
            .chain([from, to])
            .collect();
        starts.sort_unstable();
        starts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) / 1_000_000
    }

    /// Reads the log and counts; `rows` (the jobs table) give each job's recorded end.
    pub fn report(&self, rows: &[Row]) -> Report {
        let finished: HashMap<String, i64> = rows
            .iter()
            .filter_map(|r| Some((r.id.to_string(), r.finished_at?.timestamp_nanos_opt()?)))
            .collect();
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut report = Report {
            jobs: self.tokens.len(),
            ..Report::default()
        };
        let mut starts: HashMap<&str, usize> = HashMap::new();
        // Line number and attempt of each job's first start.
        let mut first_start: HashMap<&str, (usize, &str)> = HashMap::new();
        // Each job's first start (Unix ns).
        let mut first_at: HashMap<&str, i64> = HashMap::new();
        let mut ended: HashMap<&str, bool> = HashMap::new();
        for (line_no, line) in text.lines().enumerate() {
            let mut words = line.split(' ');
            match (words.next(), words.next()) {
                (Some("overlap"), Some(_)) => report.overlaps += 1,
                (Some("start"), Some(job)) => {
                    let at: Option<i64> = words.next().and_then(|t| t.parse().ok());
                    let attempt = words.next().unwrap_or("a?");
                    if let (Some(at), Some(end)) = (at, finished.get(job)) {
                        if at > *end {
                            report.runs_after_finish += 1;
                        }
                    }
                    *starts.entry(job).or_default() += 1;
                    first_start.entry(job).or_insert((line_no, attempt));
                    if let Some(at) = at {
                        first_at.entry(job).or_insert(at);
                    }
                    if ended.get(job) == Some(&true) {
                        report.runs_after_end += 1;
                    }
                }
                (Some("end"), Some(job)) => {
                    ended.insert(job, true);
                }
                _ => {}
            }
        }
        report.started = starts.len();
        report.never_started = self
            .tokens
            .iter()
            .filter(|t| !starts.contains_key(t.as_str()))
            .count();
        report.extra_runs = starts.values().map(|n| n - 1).sum();
        for (name, limit) in &self.limits {
            let Some(rate) = limit.rate else { continue };
            let mut at: Vec<i64> = self.submitted[name]
                .iter()
                .filter_map(|(token, _)| first_at.get(token.as_str()).copied())
                .collect();
            at.sort_unstable();
            let per_ns = rate.per_ms as i64 * 1_000_000;
            report.rate_violations += at
                .windows(rate.starts as usize + 1)
                .filter(|w| w[w.len() - 1] - w[0] < per_ns)
                .count();
        }
        let (submitted, unordered) = self.order(rows);
        for (resource, holders) in &submitted {
            for (earlier, later) in conflicts(holders) {
                if !unordered.ordered(earlier, later) {
                    continue;
                }
                let (Some(a), Some(b)) = (
                    first_start.get(earlier.as_str()),
                    first_start.get(later.as_str()),
                ) else {
                    continue;
                };
                if a.0 > b.0 {
                    report.order_violations += 1;
                    if report.out_of_order.len() < 10 {
                        // With the attempts of their first starts: a later job's first attempt
                        // before an earlier one's second says the earlier one's first was lost.
                        report.out_of_order.push(format!(
                            "{resource}: {later} ({}{}) started before {earlier} ({}{})",
                            b.1,
                            unordered.describe(later),
                            a.1,
                            unordered.describe(earlier),
                        ));
                    }
                }
            }
        }
        report
    }

    /// Asserts every promise: each job started, none overlapped, none ran again after it was
    /// recorded finished, and each resource's jobs first started in submit order.
    pub fn assert_kept(&self, rows: &[Row]) -> Report {
        let r = self.assert_exclusive(rows);
        assert_eq!(
            r.order_violations, 0,
            "resources ran out of submit order: {r:?}"
        );
        r
    }

    /// Asserts each job started, none overlapped and none ran again after it was recorded
    /// finished; the order is reported, not asserted.
    pub fn assert_exclusive(&self, rows: &[Row]) -> Report {
        let r = self.report(rows);
        eprintln!("execution log: {r:?}");
        assert_eq!(r.never_started, 0, "jobs that never ran: {r:?}");
        assert_eq!(r.overlaps, 0, "runs overlapped on a resource: {r:?}");
        assert_eq!(
            r.runs_after_finish, 0,
            "jobs ran again after they finished: {r:?}"
        );
        assert_eq!(r.rate_violations, 0, "a rate was exceeded: {r:?}");
        r
    }
}

/// Where a job joined its resources' order, as far as the outside can tell.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Published then (outside clock), recorded then (`created_at`).
    Now { published: i64, created: i64 },
    /// Due then (`run_at`).
    Delayed { due: i64 },
}

/// Which pairs the oracle leaves unordered (see `ExecLog::published`).
#[derive(Debug, Default)]
struct Unordered {
    placed: HashMap<String, Place>,
    margin: i64,
}

impl Unordered {
    /// Where a job joined its order, for a report: `, due at N` or `, published at N`.
    fn describe(&self, token: &str) -> String {
        match self.placed.get(token) {
            Some(Place::Delayed { due }) => format!(", due at {due}"),
            Some(Place::Now { published, created }) => {
                format!(", published at {published}, recorded at {created}")
            }
            None => String::new(),
        }
    }

    /// Whether `earlier` must start before `later` (they come in this order).
    fn ordered(&self, earlier: &str, later: &str) -> bool {
        match (self.placed.get(earlier), self.placed.get(later)) {
            (Some(Place::Now { created, .. }), Some(Place::Delayed { due })) => created < due,
            (Some(Place::Delayed { due }), Some(Place::Now { published, .. })) => {
                *published > due + self.margin
            }
            (Some(Place::Delayed { due: a }), Some(Place::Delayed { due: b })) => a < b,
            _ => true,
        }
    }
}

/// The pairs (earlier, later) of one resource's holders, in submit order, whose first starts
/// the contract orders: a writer after every holder since the writer before it; a reader after
/// the holders before its run of readers; slot holders likewise, and each after the slot holder
/// before it (they start in submit order). Readers of one run may start in any order.
pub fn conflicts(holders: &[(String, Access)]) -> Vec<(&String, &String)> {
    let mut pairs = Vec::new();
    // The current run of holders that may hold the resource together, and the one before.
    let (mut run, mut before): (Vec<&String>, Vec<&String>) = (Vec::new(), Vec::new());
    let mut kind: Option<Access> = None;
    for (token, access) in holders {
        let joins = kind == Some(*access) && *access != Access::Exclusive;
        if joins {
            pairs.extend(before.iter().map(|b| (*b, token)));
            if *access == Access::Slot {
                pairs.extend(run.last().map(|last| (*last, token)));
            }
            run.push(token);
        } else {
            pairs.extend(run.iter().map(|r| (*r, token)));
            before = std::mem::replace(&mut run, vec![token]);
            kind = Some(*access);
        }
    }
    pairs
}
