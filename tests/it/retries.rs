//! Failing and panicking tasks: retried in place up to `max_attempts`, then `failed`.

use crate::helpers::{submit, TestApp};
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
