//! Hostile input: values storage cannot hold (the NUL character), oversized resource lists
//! and names, and task output with NUL in it, each sent between valid tasks over AMQP and
//! HTTP. Each gets its reason; the valid neighbours complete; the control plane never
//! restarts (a batch the database refuses would otherwise come back forever).

use crate::helpers::{submit, Opts, TestApp};
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties,
};
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
            "bad-utf8",
            b"{\"task\":\"echo\",\"args\":\"\xff\xfe\"}".to_vec(),
            "not valid JSON",
        ),
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
    let (status, body) = app
        .post_jobs(b"{\"task\":\"echo\",\"args\":\"\xff\"}".to_vec(), None)
        .await;
    assert_eq!(status, 400, "invalid UTF-8: {body}");
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

/// Publishes one submit message with properties of the test's choosing.
async fn publish_with(
    app: &TestApp,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let ch = app.amqp.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props.with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = ch.close(200, "done".into()).await;
}

/// Rows and reports the database refuses though they pass every check lanes makes (here: a
/// constraint the test adds), an event message that does not parse, a result too large to
/// keep, and a `reply_to` naming one of lanes' own queues, each between valid tasks on the
/// same resource: each is set aside or failed with its reason, the neighbours complete in
/// order, and the control plane never restarts.
#[tokio::test(flavor = "multi_thread")]
async fn rows_the_database_refuses_and_poison_events_are_set_aside_alone() {
    let app = TestApp::with(Opts {
        env: vec![("LANES_MAX_PAYLOAD".into(), (4 << 20).to_string())],
        ..Opts::default()
    })
    .await;
    app.wait_healthy().await;
    sqlx::query(
        "ALTER TABLE jobs ADD CONSTRAINT test_poison_args CHECK (NOT (args ? 'poison')),
         ADD CONSTRAINT test_poison_result CHECK (result IS NULL OR NOT (result ? 'poison_result'))",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let big = "x".repeat(3 << 20);
    let mut messages = Vec::new();
    let cases = [
        ("poison-row", json!({"poison": 1})),
        ("poison-result", json!({"poison_result": 1})),
        ("big-result", json!({"big": big})),
    ];
    for (i, (mid, args)) in cases.iter().enumerate() {
        messages.push((submit("echo", json!(i), &["r"]), Some(format!("valid-{i}"))));
        messages.push((submit("echo", args.clone(), &["r"]), Some(mid.to_string())));
    }
    messages.push((
        submit("echo", json!("last"), &["r"]),
        Some("valid-last".into()),
    ));
    app.publish_many(&messages).await;
    let own_lane = BasicProperties::default()
        .with_message_id("own-reply".into())
        .with_reply_to(format!("{}.q.0", app.prefix).into());
    let body = submit("echo", json!(1), &["r"]);
    publish_with(&app, &app.prefix, "submit", &body, own_lane).await;
    let events = format!("{}.worker-events", app.prefix);
    publish_with(
        &app,
        &events,
        "events",
        b"{\"type\":",
        BasicProperties::default(),
    )
    .await;

    let rows = app
        .wait_final(cases.len() * 2 + 2, Duration::from_secs(60))
        .await;
    let id = lanes::protocol::job_id_from_message_id;
    let row = |mid: &str| rows.iter().find(|r| r.id == id(mid)).unwrap().clone();
    for i in 0..cases.len() {
        assert_eq!(row(&format!("valid-{i}")).state, "completed", "valid-{i}");
    }
    assert_eq!(row("valid-last").state, "completed");
    let error = |mid: &str| {
        let r = row(mid);
        assert_eq!(r.state, "failed", "{mid}: {r:?}");
        r.error.unwrap_or_default()
    };
    assert!(
        error("poison-row").contains("refused"),
        "{}",
        error("poison-row")
    );
    assert!(error("poison-result").contains("test_poison_result"));
    assert!(error("big-result").contains("over the limit"));
    assert!(error("own-reply").contains("reply_to"));
    // In order, and nothing ran after the job behind it started.
    let valid: Vec<_> = rows.iter().filter(|r| r.state == "completed").collect();
    assert!(valid
        .windows(2)
        .all(|w| w[0].finished_at <= w[1].started_at));

    let dead = app.dead_letters(3).await;
    let reasons: Vec<&str> = dead.iter().map(|(_, r)| r.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("refused")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("does not parse")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("reply_to")),
        "{reasons:?}"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("lanes_dead_letters_total{from=\"events\"} 1"),
        "{metrics}"
    );
    assert_eq!(app.metric("lanes_control_plane_restarts_total").await, 0.0);
}
