//! 1,000 schedules firing every second for a minute: exactly one job per tick, each run once,
//! from the jobs table and from the probe tasks' execution log.
//!
//! A test target of its own, which cargo runs alone: a thousand jobs a second through a debug
//! build fill both cores, and beside the other integration tests the machine could not keep
//! up (the schedules' loop fell past the 30 s after which ticks count as missed).

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

#[allow(dead_code)]
#[path = "it/ticks.rs"]
mod ticks;

use chrono::{DateTime, Utc};
use execlog::{worker_env, ExecLog};
use helpers::{Opts, TestApp};
use serde_json::json;
use std::time::Duration;
use ticks::{one_job_per_tick, probe_args, send};

fn seconds() -> i64 {
    std::env::var("LANES_SCHEDULE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_schedules_every_second_make_one_job_per_tick() {
    let log = ExecLog::new("schedules-load");
    // A thousand jobs a second of a no-op task: each worker keeps enough of them in hand to
    // cover the broker's confirm of their ends (8 would cap the fleet near 500/s here). A debug
    // build at that rate fills both cores, and the broker's confirms can lag past the suite's
    // 1 s silence: a worker would cut itself off and run again what it had not got on record,
    // which is the partition tests' subject, not this one's.
    let mut env = worker_env();
    env.push(("LANES_BROKER_SILENCE_MS".into(), "5000".into()));
    env.push(("LANES_HEARTBEAT_TIMEOUT_MS".into(), "6000".into()));
    let app = TestApp::with(Opts {
        env,
        workers: 2,
        concurrency: 32,
        ..Opts::default()
    })
    .await;
    let n = 1_000;
    for i in 0..n {
        let body = json!({"name": format!("load-{i}"), "cron": "* * * * * *", "task": "probe", "args": probe_args(&log)});
        let (status, answer) = send(&app, reqwest::Method::POST, "/schedules", Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    let start = Utc::now();
    tokio::time::sleep(Duration::from_secs(seconds() as u64)).await;
    let end = Utc::now();
    // Ticks from the first full second after every schedule exists to the last one well before
    // the end, once their jobs ran.
    let from = DateTime::from_timestamp(start.timestamp() + 2, 0).unwrap();
    let to = DateTime::from_timestamp(end.timestamp() - 3, 0).unwrap();
    app.wait_due_ended(to, Duration::from_secs(60)).await;
    one_job_per_tick(&app, &log, "load-", n, from, to).await;
    let lateness = app.metric("lanes_scheduled_lateness_seconds_sum").await
        / app.metric("lanes_scheduled_lateness_seconds_count").await;
    eprintln!(
        "mean lateness from tick to its order: {:.1} ms",
        lateness * 1000.0
    );
}
