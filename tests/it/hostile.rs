//! Hostile input: values storage cannot hold (the NUL character), oversized resource lists
//! and names, and task output with NUL in it, each sent between valid tasks over AMQP and
//! HTTP. Each gets its reason; the valid neighbours complete; the control plane never
//! restarts (a batch the database refuses would otherwise come back forever).

use crate::helpers::{submit, Opts, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn values_storage_cannot_hold_are_refused_or_made_safe_and_wedge_nothing() {
    let app = TestApp::with(Opts {
        env: vec![("LANES_EXEC_ALLOW".into(), "sh".into())],
        ..Opts::default()
    })
    .await;
    let many: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "nul-args",
            br#"{"task":"echo","args":{"a":"x\u0000y"}}"#.to_vec(),
            "NUL",
        ),
        (
            "nul-key",
            br#"{"task":"echo","args":{"k\u0000":1}}"#.to_vec(),
            "NUL",
        ),
        (
            "nul-resource",
            br#"{"task":"echo","resources":["r\u0000"]}"#.to_vec(),
            "NUL",
        ),
        ("nul-task", br#"{"task":"ec\u0000ho"}"#.to_vec(), "NUL"),
        (
            "long-resource",
            submit("echo", json!(1), &[&"r".repeat(5000)]),
            "too long",
        ),
        (
            "many-resources",
            json!({"task": "echo", "resources": many})
                .to_string()
                .into_bytes(),
            "too many resources",
        ),
    ];
    let mut messages = Vec::new();
    for (i, (mid, body, _)) in bad.iter().enumerate() {
        messages.push((submit("echo", json!(i), &["r"]), Some(format!("valid-{i}"))));
        messages.push((body.clone(), Some(mid.to_string())));
    }
    // Output that cannot be stored as it is: made safe, never looped.
    let nul_out = json!({"task": "exec", "args": {"program": "sh", "args": ["-c", "printf 'a\\000b'"]}, "resources": ["r"]});
    let nul_err = json!({"task": "exec", "args": {"program": "sh", "args": ["-c", "printf 'x\\000y' >&2; exit 3"]}, "resources": ["r"], "max_attempts": 1});
    messages.push((nul_out.to_string().into_bytes(), Some("nul-output".into())));
    messages.push((nul_err.to_string().into_bytes(), Some("nul-error".into())));
    messages.push((
        submit("echo", json!("last"), &["r"]),
        Some("valid-last".into()),
    ));
    app.publish_many(&messages).await;

    // Over HTTP: a 400 with the reason, and nothing recorded.
    let (status, body) = app
        .post_jobs(r#"{"task":"echo","args":"\u0000"}"#, None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("NUL"), "{body}");
    let (status, body) = app
        .post_jobs(
            json!({"task": "echo", "resources": ["q".repeat(300)]}).to_string(),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app
        .post_jobs(json!({"task": "echo", "args": "fine"}).to_string(), None)
        .await;
    assert_eq!(status, 202);

    let total = bad.len() * 2 + 3 + 1;
    let rows = app.wait_final(total, Duration::from_secs(60)).await;
    let id = lanes::protocol::job_id_from_message_id;
    let row = |mid: &str| rows.iter().find(|r| r.id == id(mid)).unwrap().clone();
    for (i, (mid, _, reason)) in bad.iter().enumerate() {
        assert_eq!(row(&format!("valid-{i}")).state, "completed");
        let r = row(mid);
        assert_eq!(r.state, "failed", "{mid}");
        assert!(r.error.as_deref().unwrap().contains(reason), "{mid}: {r:?}");
    }
    assert_eq!(row("valid-last").state, "completed");
    let out = row("nul-output");
    assert_eq!(out.state, "completed");
    assert_eq!(
        out.result.as_ref().unwrap()["stdout"],
        Value::from("a\u{FFFD}b\n")
    );
    let err = row("nul-error");
    assert_eq!(err.state, "failed");
    assert!(
        err.error.as_deref().unwrap().contains("x\u{FFFD}y"),
        "{err:?}"
    );
    // Every refused message is dead-lettered with its reason.
    let dead = app.dead_letters(bad.len()).await;
    assert_eq!(dead.len(), bad.len());
    assert_eq!(app.metric("lanes_control_plane_restarts_total").await, 0.0);
}
