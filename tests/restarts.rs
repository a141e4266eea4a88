//! Restarts of the shared RabbitMQ and PostgreSQL in the middle of a workload. These disturb
//! every other user of the services, so they live in their own test target and run one after
//! the other in a single test (cargo runs test targets one at a time).

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

use execlog::{worker_env, ExecLog};
use helpers::{assert_completed_in_order, Opts, TestApp};
use std::{process::Command, time::Duration};

fn sh(cmd: &str) {
    let status = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(status.success(), "`{cmd}` failed");
}

/// Runs a workload, restarts a service with `cmd` half a second in, and checks the outcome.
async fn survives(cmd: &str) {
    let mut log = ExecLog::new("restart");
    let app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    app.publish_many(&log.workload(200, 20, 20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| sh(cmd));
    let rows = app.wait_final(200, Duration::from_secs(180)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_and_database_restarts_lose_nothing() {
    // RabbitMQ: the application restarts, every connection is dropped.
    survives("rabbitmqctl -q stop_app && rabbitmqctl -q start_app && rabbitmqctl -q await_startup")
        .await;
    // PostgreSQL: state writes wait; none is lost.
    survives(
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main restart",
    )
    .await;
}
