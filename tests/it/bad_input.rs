//! Bad input, over AMQP and HTTP: a clear reason, and nothing else disturbed.

use crate::helpers::{submit, Opts, TestApp};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn invalid_submit_messages_are_dead_lettered_with_a_reason() {
    let app = TestApp::with(Opts {
        env: vec![("LANES_MAX_PAYLOAD".into(), "2048".into())],
        ..Opts::default()
    })
    .await;
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not-json", b"{not json".to_vec(), "not valid JSON"),
        ("array", b"[1, 2]".to_vec(), "must be a JSON object"),
        ("no-task", br#"{"args": {}}"#.to_vec(), "`task` is required"),
        (
            "task-number",
            br#"{"task": 42}"#.to_vec(),
            "`task` is required",
        ),
        (
            "unknown",
            br#"{"task": "no-such-task"}"#.to_vec(),
            "unknown task `no-such-task`",
        ),
        (
            "resources",
            br#"{"task": "echo", "resources": "r"}"#.to_vec(),
            "`resources` must be a list",
        ),
        (
            "resources-2",
            br#"{"task": "echo", "resources": [1]}"#.to_vec(),
            "`resources` must be a list",
        ),
        (
            "big",
            submit("echo", json!("x".repeat(4000)), &[]),
            "payload too large",
        ),
        (
            "attempts",
            br#"{"task": "echo", "max_attempts": -1}"#.to_vec(),
            "`max_attempts`",
        ),
        // A typo never runs without the exclusion it meant to ask for.
        (
            "typo-resources",
            br#"{"task": "echo", "resource": ["repo:1"]}"#.to_vec(),
            "unknown field `resource`; did you mean `resources`?",
        ),
        (
            "typo-attempts",
            br#"{"task": "echo", "max_attempt": 5}"#.to_vec(),
            "unknown field `max_attempt`; did you mean `max_attempts`?",
        ),
    ];
    let mut messages = Vec::new();
    for (i, (mid, body, _)) in bad.iter().enumerate() {
        messages.push((submit("echo", json!(i), &["r"]), None));
        messages.push((body.clone(), Some(mid.to_string())));
    }
    // A duplicate message_id makes one job.
    messages.push((submit("echo", json!("first"), &["r"]), Some("dup".into())));
    messages.push((submit("echo", json!("second"), &["r"]), Some("dup".into())));
    // An invalid message without an id is dead-lettered too, just not recorded.
    messages.push((b"nope".to_vec(), None));
    messages.push((submit("echo", json!("last"), &["r"]), None));
    app.publish_many(&messages).await;

    let rows = app
        .wait_final(bad.len() * 2 + 2, Duration::from_secs(60))
        .await;
    assert_eq!(
        rows.len(),
        bad.len() * 2 + 2,
        "the valid ones, the invalid ones with ids, 1 dup, last"
    );
    let id = lanes::protocol::job_id_from_message_id;
    for (mid, _, reason) in &bad {
        let row = rows.iter().find(|r| r.id == id(mid)).unwrap();
        assert_eq!(row.state, "failed");
        assert!(
            row.error.as_deref().unwrap().contains(reason),
            "{mid}: {:?}",
            row.error
        );
    }
    let dup = rows.iter().find(|r| r.id == id("dup")).unwrap();
    assert_eq!(dup.result, Some(json!("first")));
    let valid = rows.iter().filter(|r| r.state == "completed").count();
    assert_eq!(
        valid,
        bad.len() + 2,
        "valid tasks around the bad ones completed"
    );

    let dead = app.dead_letters(bad.len() + 1).await;
    for (_, _, reason) in &bad {
        assert!(
            dead.iter().any(|(_, r)| r.contains(reason)),
            "dead letter with `{reason}`"
        );
    }
    assert!(dead.iter().any(|(body, _)| body == b"nope"));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_rejects_bad_requests_clearly() {
    let app = TestApp::with(Opts {
        env: vec![
            ("LANES_API_TOKEN".into(), "s3cret".into()),
            ("LANES_MAX_PAYLOAD".into(), "2048".into()),
        ],
        ..Opts::default()
    })
    .await;
    let token = Some("s3cret");
    let cases: Vec<(String, u16, &str)> = vec![
        ("{nope".into(), 400, "not valid JSON"),
        (r#"{"task": 1}"#.into(), 400, "`task` is required"),
        (r#"{"task": "nope"}"#.into(), 400, "unknown task"),
        (
            r#"{"task": "echo", "resources": {"a": 1}}"#.into(),
            400,
            "`resources` must be a list",
        ),
        (
            r#"{"task": "echo", "id": "not-a-uuid"}"#.into(),
            400,
            "`id` must be a UUID",
        ),
        (
            json!({"task": "echo", "args": "x".repeat(3000)}).to_string(),
            413,
            "payload too large",
        ),
    ];
    for (body, status, reason) in cases {
        let (got, resp) = app.post_jobs(body.clone(), token).await;
        assert_eq!(got, status, "{body:.40}: {resp}");
        assert!(resp["error"].as_str().unwrap().contains(reason), "{resp}");
    }
    let (got, resp) = app.post_jobs(r#"{"task": "echo"}"#, None).await;
    assert_eq!(got, 401);
    assert!(resp["error"].as_str().unwrap().contains("bearer token"));
    let (got, _) = app.post_jobs(r#"{"task": "echo"}"#, Some("wrong")).await;
    assert_eq!(got, 401);
    // Steering a job and reporting on it are writes too.
    let job = uuid::Uuid::new_v4();
    for (method, path) in [
        (reqwest::Method::POST, format!("/jobs/{job}/cancel")),
        (reqwest::Method::POST, format!("/jobs/{job}/retry")),
        (reqwest::Method::PATCH, format!("/jobs/{job}")),
    ] {
        let resp = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .json(&json!({"state": "completed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{method} {path}");
        let with_token = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth("s3cret")
            .json(&json!({"attempt": 1, "state": "completed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            with_token.status().as_u16(),
            404,
            "{method} {path}: no such job"
        );
    }

    let resp = app
        .http
        .get(format!("{}/no/such/route", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("no route"));
    let resp = app
        .http
        .get(format!("{}/jobs?limit=abc", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = app
        .http
        .get(format!("{}/jobs?state=bogus", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // An unknown parameter is refused with its name, not ignored (that listed every job).
    let resp = app
        .http
        .get(format!("{}/jobs?status=failed", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `status`"),
        "{body}"
    );
    let (got, body) = app
        .post_jobs(
            json!({"task": "echo", "resource": ["repo:1"]}).to_string(),
            token,
        )
        .await;
    assert_eq!(got, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `resources`?"),
        "{body}"
    );

    // The same id twice is one job; reads need no token.
    let id = Uuid::new_v4();
    for _ in 0..2 {
        let (got, _) = app
            .post_jobs(
                json!({"task": "echo", "id": id, "args": 7}).to_string(),
                token,
            )
            .await;
        assert_eq!(got, 202);
    }
    let rows = app.wait_final(1, Duration::from_secs(30)).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, id);
    assert_eq!(rows[0].state, "completed");
}
