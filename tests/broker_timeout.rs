//! Tasks longer than RabbitMQ's consumer timeout. The broker closes a channel whose oldest
//! unacked delivery is older than `consumer_timeout` and hands its tasks back, the running one
//! included. A long task must still run once, the tasks behind it in order, and nothing beside
//! it (asserted from the execution log, `it/execlog.rs`).
//!
//! RabbitMQ 3.10 has only the broker-wide setting, so this test shortens it (and the channel
//! tick that checks it) for the whole broker while it runs: a test target of its own, which
//! cargo runs alone. The settings are restored when the test ends, however it ends.

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

use execlog::{worker_env, ExecLog};
use helpers::{Opts, TestApp};
use std::{path::PathBuf, process::Command, time::Duration};

/// The broker's settings for the test: consumer timeout and channel tick, in ms.
const SHORT: (u64, u64) = (2_000, 500);
/// RabbitMQ's defaults.
const DEFAULTS: (u64, u64) = (1_800_000, 60_000);

fn set_timeouts((timeout, tick): (u64, u64)) {
    let expr = format!(
        "application:set_env(rabbit, consumer_timeout, {timeout}), \
         application:set_env(rabbit, channel_tick_interval, {tick})."
    );
    let status = Command::new("rabbitmqctl")
        .args(["eval", &expr])
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl eval {expr} failed");
}

/// Shortens the broker's consumer timeout until dropped. Channels opened meanwhile keep it.
struct ShortTimeout;

impl ShortTimeout {
    fn set() -> ShortTimeout {
        set_timeouts(SHORT);
        ShortTimeout
    }
}

impl Drop for ShortTimeout {
    fn drop(&mut self) {
        set_timeouts(DEFAULTS);
    }
}

fn worker_logs(app: &TestApp) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    (0..app.workers.len())
        .map(|i| {
            std::fs::read_to_string(dir.join(format!("{}-worker{i}.log", app.name)))
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_longer_than_the_consumer_timeout_runs_once_and_in_order() {
    let _short = ShortTimeout::set();
    let mut log = ExecLog::new("consumer-timeout");
    let app = TestApp::with(Opts {
        workers: 2,
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    app.wait_workers(2).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // standbys subscribe after 300 ms
                                                          // On each of two resources: a task three timeouts long, then short ones prefetched behind
                                                          // it (their deliveries age too). One long task has no resources (the default queue).
    let mut work = Vec::new();
    for r in ["a", "b"] {
        work.push(log.task(&[r.to_owned()], 6_500));
        for _ in 0..4 {
            work.push(log.task(&[r.to_owned()], 100));
        }
    }
    work.push(log.task(&[], 6_500));
    app.publish_many(&work).await;
    let rows = app.wait_final(work.len(), Duration::from_secs(90)).await;
    let bad: Vec<_> = rows.iter().filter(|r| r.state != "completed").collect();
    assert!(bad.is_empty(), "jobs not completed: {bad:?}");
    let report = log.assert_kept(&rows);
    assert_eq!(report.extra_runs, 0, "a task ran twice: {report:?}");
    let logs = worker_logs(&app);
    assert!(
        logs.contains("the broker closed the lane's channel"),
        "the consumer timeout never fired; the test shows nothing"
    );
    println!("consumer timeout: {report:?}");
}
