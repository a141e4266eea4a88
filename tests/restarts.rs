//! Restarts of the shared RabbitMQ and PostgreSQL in the middle of a workload, and a RabbitMQ
//! memory alarm. These disturb every other user of the services, so they live in their own
//! test target and run one after the other (cargo runs test targets one at a time).

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

use execlog::{worker_env, ExecLog};
use helpers::{assert_completed_in_order, health_of, submit, Opts, TestApp};
use serde_json::json;
use std::{
    process::Command,
    time::{Duration, Instant},
};

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
async fn broker_and_database_restarts_and_a_broker_alarm_lose_nothing() {
    // RabbitMQ: the application restarts, every connection is dropped.
    survives("rabbitmqctl -q stop_app && rabbitmqctl -q start_app && rabbitmqctl -q await_startup")
        .await;
    // PostgreSQL: state writes wait; none is lost.
    survives(
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main restart",
    )
    .await;
    a_broker_alarm_is_visible_and_loses_nothing().await;
}

/// Puts RabbitMQ's memory watermark back, however the test ends.
struct Watermark;

impl Drop for Watermark {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "set_vm_memory_high_watermark", "0.4"])
            .status();
    }
}

/// While RabbitMQ blocks publishers (a memory alarm), `POST /jobs` answers 503 with the
/// broker's reason instead of hanging, `/healthz` says why, and everything resumes by itself
/// when the alarm lifts, losing nothing.
async fn a_broker_alarm_is_visible_and_loses_nothing() {
    let mut log = ExecLog::new("alarm");
    let app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let post = |body: serde_json::Value| {
        let req = client.post(format!("{}/jobs", app.base)).json(&body);
        async move {
            let resp = req.send().await.expect("the API answers, it does not hang");
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    // The API's connection publishes once before the alarm (the broker blocks publishers).
    assert_eq!(post(json!({"task": "echo", "args": 1})).await.0, 202);
    app.publish_many(&log.workload(60, 6, 20)).await;

    let watermark = Watermark;
    tokio::task::block_in_place(|| sh("rabbitmqctl -q set_vm_memory_high_watermark 0.0000001"));
    // The alarm is raised at the broker's next memory check: submits are taken until then. The
    // first one that meets the block is refused, or not confirmed in time, with why.
    let mut taken = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = post(json!({"task": "echo", "args": 2})).await;
        if status == 202 {
            taken += 1;
            assert!(
                Instant::now() < deadline,
                "the alarm never blocked a submit"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(status, 503, "{body}");
        eprintln!("the submit that met the block: {status} {body}");
        break;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = health_of(&app.base).await.unwrap_or_default();
        if health["broker_blocked"].is_string() {
            eprintln!("healthz during the alarm: {health}");
            assert_eq!(health["status"], json!("degraded"), "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healthz never said why: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Now refused at once, with the broker's reason; nothing was sent.
    let (status, body) = post(json!({"task": "echo", "args": 3})).await;
    assert_eq!(status, 503, "{body}");
    let why = body["error"].as_str().unwrap_or_default();
    assert!(why.contains("blocks publishers"), "{body}");
    eprintln!("a submit during the alarm: {status} {body}");
    drop(watermark);

    let deadline = Instant::now() + Duration::from_secs(60);
    while health_of(&app.base).await.map(|h| h["status"].clone()) != Some(json!("ok")) {
        assert!(Instant::now() < deadline, "healthz did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(post(json!({"task": "echo", "args": 4})).await.0, 202);
    app.publish(&submit("echo", json!(5), &["r"]), None).await;
    // Everything sent completes: the AMQP workload, the submits the API took (the one caught by
    // the block may have been taken too), none lost.
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = app.rows().await;
        let done = rows.iter().filter(|r| r.state == "completed").count();
        if rows.len() >= 62 + taken && done == rows.len() {
            break rows;
        }
        assert!(Instant::now() < deadline, "jobs did not complete: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(rows.len() <= 63 + taken, "{} jobs", rows.len());
    log.assert_kept(&rows);
}
