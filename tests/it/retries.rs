//! Failing and panicking tasks: retried in place up to `max_attempts`, then `failed`.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{submit, Opts, TestApp},
};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn failures_retry_in_place_and_panics_fail_only_their_task() {
    let app = TestApp::spawn().await;
    let flaky = br#"{"task": "fail", "args": {"times": 2}, "resources": ["x"], "max_attempts": 3}"#;
    let hopeless = br#"{"task": "fail", "args": {"message": "always"}, "resources": ["x"], "max_attempts": 2}"#;
    let panics = br#"{"task": "fail", "args": {"message": "kaboom", "panic": true}, "resources": ["y"], "max_attempts": 1}"#;
    app.publish(flaky, Some("flaky")).await;
    app.publish(hopeless, Some("hopeless")).await;
    app.publish(panics, Some("panics")).await;
    app.publish(&submit("echo", json!("after"), &["y"]), Some("after"))
        .await;
    let rows = app.wait_final(4, Duration::from_secs(60)).await;
    let by = |mid: &str| {
        let id = lanes::protocol::job_id_from_message_id(mid);
        rows.iter().find(|r| r.id == id).unwrap().clone()
    };
    let flaky = by("flaky");
    assert_eq!(
        (flaky.state.as_str(), flaky.attempts),
        ("completed", 3),
        "{flaky:?}"
    );
    let hopeless = by("hopeless");
    assert_eq!((hopeless.state.as_str(), hopeless.attempts), ("failed", 2));
    assert_eq!(hopeless.error.as_deref(), Some("always"));
    let panics = by("panics");
    assert_eq!(panics.state, "failed");
    assert!(
        panics
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: kaboom"),
        "{panics:?}"
    );
    assert_eq!(
        by("after").state,
        "completed",
        "the worker survived the panic"
    );
    assert!(
        flaky.finished_at <= hopeless.started_at,
        "retries happen in place, in order"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_over_its_timeout_is_stopped_and_retried_then_failed() {
    let mut log = ExecLog::new("timeout");
    let app = TestApp::with(Opts {
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    // An `exec` task of 5 s bounded to 300 ms per attempt, two attempts; then a task on the
    // same resource, which must neither wait 5 s nor run beside a program left behind.
    let (body, _) = log.task(&["r".to_owned()], 5_000);
    let mut slow: serde_json::Value = serde_json::from_slice(&body).unwrap();
    slow["timeout_ms"] = json!(300);
    slow["max_attempts"] = json!(2);
    app.publish(slow.to_string().as_bytes(), Some("slow")).await;
    let next = log.task(&["r".to_owned()], 50);
    app.publish(&next.0, next.1.as_deref()).await;
    let rows = app.wait_final(2, Duration::from_secs(30)).await;
    let slow = rows
        .iter()
        .find(|r| r.id == lanes::protocol::job_id_from_message_id("slow"))
        .unwrap();
    assert_eq!(
        (slow.state.as_str(), slow.attempts),
        ("failed", 2),
        "{slow:?}"
    );
    assert!(
        slow.error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out after"),
        "{slow:?}"
    );
    let report = log.report(&rows);
    assert_eq!(
        report.overlaps, 0,
        "a timed-out program kept running: {report:?}"
    );
    // Each attempt logs in a span with its job, task and attempt: the timeouts warn, the
    // completion says how long it took.
    let worker_logs: String = (0..app.workers.len())
        .map(|i| app.process_log(&format!("worker{i}")))
        .collect();
    let slow_id = slow.id.to_string();
    assert!(
        worker_logs.lines().any(|l| l.contains("attempt timed out")
            && l.contains(&slow_id)
            && l.contains("exec")
            && l.contains("attempt")),
        "no timeout warning in the attempt's span"
    );
    let next_id = rows
        .iter()
        .find(|r| r.id != slow.id)
        .unwrap()
        .id
        .to_string();
    assert!(
        worker_logs
            .lines()
            .any(|l| l.contains("task completed") && l.contains(&next_id) && l.contains("elapsed")),
        "no completion line with its time"
    );
    let text = std::fs::read_to_string(log.path("log")).unwrap();
    assert_eq!(
        text.matches("end ").count(),
        1,
        "only the short task ended: {text}"
    );
}
