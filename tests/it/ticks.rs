//! Counting schedules' jobs per tick, from the jobs table and from the probe tasks' execution
//! log: shared by the schedules tests and the load test that runs alone (`schedule_load.rs`).

use crate::{execlog::ExecLog, helpers::TestApp};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;

pub async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A probe task's arguments, logging into `log`'s directory.
pub fn probe_args(log: &ExecLog) -> Value {
    let dir = log.path("x");
    let name = dir
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    json!({"log": name, "ms": 0, "resources": []})
}

/// Starts per job id in the log.
pub fn runs(log: &ExecLog) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for line in log.lines() {
        if let Some(job) = line
            .strip_prefix("start ")
            .and_then(|l| l.split(' ').next())
        {
            *runs.entry(job.to_owned()).or_default() += 1;
        }
    }
    runs
}

/// The jobs of schedules named `prefix…`: (schedule, tick) → job ids.
pub async fn jobs_per_tick(
    app: &TestApp,
    prefix: &str,
) -> HashMap<(String, DateTime<Utc>), Vec<String>> {
    let rows: Vec<(uuid::Uuid, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, submitted_by, run_at FROM jobs WHERE submitted_by LIKE $1")
            .bind(format!("schedule:{prefix}%"))
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut out: HashMap<_, Vec<String>> = HashMap::new();
    for (id, by, at) in rows {
        out.entry((by, at)).or_default().push(id.to_string());
    }
    out
}

/// Checks one job per tick for every schedule named `prefix…` over the ticks from `from` to
/// `to`, each run once by the log.
pub async fn one_job_per_tick(
    app: &TestApp,
    log: &ExecLog,
    prefix: &str,
    n: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let per_tick = jobs_per_tick(app, prefix).await;
    let runs = runs(log);
    let mut counted = 0;
    for i in 0..n {
        let by = format!("schedule:{prefix}{i}");
        let mut tick = from;
        while tick <= to {
            let jobs = per_tick
                .get(&(by.clone(), tick))
                .cloned()
                .unwrap_or_default();
            assert_eq!(jobs.len(), 1, "{by} at {tick}: {jobs:?}");
            assert_eq!(runs.get(&jobs[0]), Some(&1), "{by} at {tick} ran once");
            counted += 1;
            tick += chrono::Duration::seconds(1);
        }
    }
    eprintln!("{counted} ticks of {n} schedules, each one job run once");
}
