//! A library user's own tasks: a worker built from `examples/custom_worker.rs` offers `resize`,
//! which the server's own registry does not have. Submits of it are accepted over AMQP and
//! HTTP, also after the server restarted while the worker stayed up, and on a standby.

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
