//! A library user's own tasks: a worker built from `examples/custom_worker.rs` offers `resize`,
//! which the server's own registry does not have. Submits of it are accepted over AMQP and
//! HTTP, also after the server restarted while the worker stayed up, and on a standby. Its
//! typed `resize` fails bad args at once; its blocking `crunch` runs on the blocking pool.

use crate::helpers::{submit, Opts, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn own_tasks_are_known_after_a_server_restart_and_on_a_standby() {
    let mut app = TestApp::with(Opts {
        workers: 0,
        ..Opts::default()
    })
    .await;
    app.start_custom_worker();
    app.wait_workers(1).await;
    let id = lanes::protocol::job_id_from_message_id;
    app.publish(
        &submit("resize", json!({"width": 640}), &["img:1"]),
        Some("first"),
    )
    .await;
    let rows = app.wait_final(1, Duration::from_secs(60)).await;
    assert_eq!(rows[0].state, "completed", "{:?}", rows[0]);
    assert_eq!(rows[0].result.as_ref().unwrap()["width"], json!(640));

    // The server restarts; the worker stays up and only heartbeats from now on.
    app.kill_server();
    app.start_server();
    app.wait_healthy().await;
    app.publish(
        &submit("resize", json!({"width": 320}), &["img:1"]),
        Some("after-restart"),
    )
    .await;
    let (status, body) = app
        .post_jobs(
            json!({"task": "resize", "args": {"width": 100}}).to_string(),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // A standby's HTTP API accepts it too, though no worker ever spoke to that server.
    let (standby, url) = app.start_standby();
    app.extra.push(standby);
    let deadline = Instant::now() + Duration::from_secs(30);
    let accepted = loop {
        let resp = reqwest::Client::new()
            .post(format!("{url}/jobs"))
            .header("content-type", "application/json")
            .body(json!({"task": "resize", "args": {"width": 50}}).to_string())
            .send()
            .await;
        if let Ok(resp) = resp {
            break resp.status().as_u16();
        }
        assert!(Instant::now() < deadline, "the standby did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(accepted, 202);
    let rows = app.wait_final(4, Duration::from_secs(60)).await;
    assert!(rows.iter().all(|r| r.state == "completed"), "{rows:?}");
    assert!(rows.iter().any(|r| r.id == id("after-restart")));
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_args_that_do_not_parse_fail_at_once_with_the_reason() {
    let mut app = TestApp::with(Opts {
        workers: 0,
        ..Opts::default()
    })
    .await;
    app.start_custom_worker();
    app.wait_workers(1).await;
    app.publish(
        &submit("resize", json!({"width": "wide"}), &["img:1"]),
        Some("bad"),
    )
    .await;
    app.publish(&submit("resize", json!({"width": 640}), &["img:1"]), None)
        .await;
    let rows = app.wait_final(2, Duration::from_secs(60)).await;
    let bad = rows
        .iter()
        .find(|r| r.id == lanes::protocol::job_id_from_message_id("bad"))
        .unwrap();
    assert_eq!(bad.state, "failed");
    assert_eq!(bad.attempts, 1, "a permanent failure is not retried");
    let error = bad.error.as_deref().unwrap();
    assert!(error.contains("invalid args for `resize`"), "{error}");
    let good = rows.iter().find(|r| r.id != bad.id).unwrap();
    assert_eq!(good.result.as_ref().unwrap()["height"], json!(480));
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_tasks_run_beside_async_ones_and_heartbeats_never_miss() {
    let mut app = TestApp::with(Opts {
        workers: 0,
        concurrency: 16,
        env: vec![("LANES_BLOCKING_THREADS".into(), "6".into())],
        ..Opts::default()
    })
    .await;
    app.start_custom_worker();
    app.wait_workers(1).await;
    // Six blocking tasks of 3 s (three per core here) and, beside them, forty async ones
    // without resources (the default queue: no lane is shared with a blocking task).
    let mut work = Vec::new();
    for i in 0..6 {
        let body = submit("crunch", json!({"ms": 3000}), &[&format!("cpu:{i}")]);
        work.push((body, Some(format!("crunch-{i}"))));
    }
    for i in 0..40 {
        let body = submit("sleep", json!({"ms": 20}), &[]);
        work.push((body, Some(format!("sleep-{i}"))));
    }
    app.publish_many(&work).await;
    // The server's view of the worker's heartbeats while the work runs.
    let (mut worst_age, mut ids) = (0, std::collections::BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(serde_json::Value::Array(ws)) = app.get_json("/workers").await {
            for w in &ws {
                worst_age = worst_age.max(w["heartbeat_age_ms"].as_u64().unwrap_or(0));
                ids.insert(w["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        let rows = app.rows().await;
        let finished = rows.iter().filter(|r| r.finished_at.is_some()).count();
        if finished == work.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the work did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = app.rows().await;
    assert!(rows.iter().all(|r| r.state == "completed"), "{rows:?}");
    assert!(rows.iter().all(|r| r.attempts == 1), "nothing ran twice");
    eprintln!("blocking pool: worst heartbeat age {worst_age} ms, workers seen {ids:?}");
    assert!(
        worst_age < 1500,
        "a heartbeat was late by {worst_age} ms (the timeout is 1500 ms)"
    );
    assert_eq!(ids.len(), 1, "the worker was replaced: {ids:?}");
    // The async tasks did not wait for the blocking ones.
    let id = lanes::protocol::job_id_from_message_id;
    let last_sleep = (0..40)
        .filter_map(|i| rows.iter().find(|r| r.id == id(&format!("sleep-{i}"))))
        .filter_map(|r| r.finished_at)
        .max()
        .unwrap();
    let first_crunch = (0..6)
        .filter_map(|i| rows.iter().find(|r| r.id == id(&format!("crunch-{i}"))))
        .filter_map(|r| r.finished_at)
        .min()
        .unwrap();
    assert!(
        last_sleep < first_crunch,
        "async tasks waited for blocking ones"
    );
}
