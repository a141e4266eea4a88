//! Proof from outside: an execution log written by the tasks themselves.
//!
//! Each task is an `exec` of `sh` that takes a `flock` on a lock file per resource (shared
//! resources take a shared lock) without waiting, writes `overlap` if it could not, appends
//! `start` and `end` lines with its token (the job's message id) and sleeps in between. The
//! lock is held by the task's whole process tree, so a run that outlives its worker is caught
//! by the next run's failed `flock`. What the checks count comes from this log, never from
//! the `jobs` table: overlaps, runs per job, second runs of a job that had ended, and
//! per-resource start order against the submit order.

use crate::helpers::Row;
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
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
    /// Tokens per resource (without `shared:`), in submit order, with whether they hold it
    /// shared.
    submitted: HashMap<String, Vec<(String, bool)>>,
    tokens: Vec<String>,
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
            tokens: Vec::new(),
        }
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
            let (name, shared) = match r.strip_prefix("shared:") {
                Some(name) => (name.to_owned(), true),
                None => (r.clone(), false),
            };
            self.submitted
                .entry(name)
                .or_default()
                .push((token.clone(), shared));
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
        let body = serde_json::json!({
            "task": "probe",
            "args": {"log": log, "ms": ms, "resources": resources},
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
        for (resource, holders) in &self.submitted {
            for (earlier, later) in conflicts(holders) {
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
                            "{resource}: {later} ({}) started before {earlier} ({})",
                            b.1, a.1
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
        r
    }
}

/// The pairs (earlier, later) of one resource's holders, in submit order, whose first starts
/// the contract orders: a writer after every holder since the writer before it, a reader
/// after the writer before it. Readers between two writers may start in any order.
pub fn conflicts(holders: &[(String, bool)]) -> Vec<(&String, &String)> {
    let mut pairs = Vec::new();
    let mut writer: Option<&String> = None;
    let mut readers: Vec<&String> = Vec::new();
    for (token, shared) in holders {
        if *shared {
            pairs.extend(writer.map(|w| (w, token)));
            readers.push(token);
        } else {
            match readers.is_empty() {
                true => pairs.extend(writer.map(|w| (w, token))),
                false => pairs.extend(readers.drain(..).map(|r| (r, token))),
            }
            writer = Some(token);
        }
    }
    pairs
}
