//! The whole path through each way in: an AMQP publish, `POST /jobs`, and the CLI.

use crate::helpers::{submit, TestApp};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn amqp_submits_complete_with_their_results_in_postgres() {
    let app = TestApp::spawn().await;
    let mut messages = Vec::new();
    for i in 0..40 {
        let resources: Vec<String> = if i % 4 == 0 {
            vec![]
        } else {
            vec![format!("repo:{}", i % 5)]
        };
        let refs: Vec<&str> = resources.iter().map(String::as_str).collect();
        let id = (i % 2 == 0).then(|| Uuid::new_v4().to_string());
        messages.push((submit("echo", json!({ "n": i }), &refs), id));
    }
    app.publish_many(&messages).await;
    let rows = app.wait_final(40, Duration::from_secs(60)).await;
    assert_eq!(rows.len(), 40);
    for r in &rows {
        assert_eq!(r.state, "completed", "{r:?}");
        assert_eq!(r.result, r.args, "echo returns its args");
        assert_eq!(r.attempts, 1);
        assert!(r.worker.is_some() && r.started_at.is_some() && r.finished_at.is_some());
    }
    for (_, id) in messages.iter().filter(|(_, id)| id.is_some()) {
        let id: Uuid = id.as_ref().unwrap().parse().unwrap();
        assert!(
            rows.iter().any(|r| r.id == id),
            "message_id {id} is the job id"
        );
    }
    let no_resources = rows.iter().filter(|r| r.resources.is_empty()).count();
    assert_eq!(no_resources, 10);
    assert!(rows
        .iter()
        .filter(|r| r.resources.is_empty())
        .all(|r| r.queue.as_deref() == Some(&format!("{}.q.default", app.prefix))));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_submit_then_read_back() {
    let app = TestApp::spawn().await;
    let (status, job) = app
        .post_jobs(
            json!({"task": "echo", "args": {"hello": "world"}, "resources": ["r1"]}).to_string(),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["state"], "submitted");
    let id: Uuid = job["id"].as_str().unwrap().parse().unwrap();
    let rows = app.wait_final(1, Duration::from_secs(30)).await;
    assert_eq!(rows[0].id, id);
    let got = app.get_json(&format!("/jobs/{id}")).await.unwrap();
    assert_eq!(got["state"], "completed");
    assert_eq!(got["result"], json!({"hello": "world"}));
    assert_eq!(got["resources"], json!(["r1"]));
    let listed = app.get_json("/jobs?state=completed&limit=5").await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let by_resource = app.get_json("/jobs?resource=r1").await.unwrap();
    assert_eq!(by_resource[0]["id"], json!(id));
    let none = app.get_json("/jobs?resource=r2").await.unwrap();
    assert!(none.as_array().unwrap().is_empty());
    let missing = app
        .get_json(&format!("/jobs/{}", Uuid::new_v4()))
        .await
        .unwrap();
    assert!(missing["error"].as_str().unwrap().starts_with("no job"));
    let health = app.get_json("/healthz").await.unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("lanes_jobs_submitted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"lanes_jobs_finished_total{state="completed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("lanes_workers 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_submits_waits_and_lists() {
    let app = TestApp::spawn().await;
    let cli = |args: &[&str]| {
        std::process::Command::new(TestApp::lanes_binary())
            .args(args)
            .env("LANES_API_URL", &app.base)
            .env_remove("LANES_API_TOKEN")
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| {
        cli(&[
            "submit",
            "sleep",
            "--args",
            r#"{"ms": 600}"#,
            "--resource",
            "repo:1",
            "--wait",
        ])
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stdout.lines().next().unwrap().trim().to_owned();
    assert!(stdout.contains("slept_ms"), "{stdout}");
    assert!(stderr.contains("completed"), "progress is shown: {stderr}");
    assert!(
        stderr.contains('%'),
        "progress percentages are shown: {stderr}"
    );

    let failed = tokio::task::block_in_place(|| {
        cli(&[
            "submit",
            "fail",
            "--args",
            r#"{"message": "nope"}"#,
            "--max-attempts",
            "1",
            "--wait",
        ])
    });
    assert_eq!(
        failed.status.code(),
        Some(5),
        "a failed job makes --wait exit 5"
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("nope"));

    let bad = tokio::task::block_in_place(|| cli(&["submit", "no-such-task"]));
    assert_eq!(bad.status.code(), Some(2), "the API refused the request");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown task"));
    let bad_args = tokio::task::block_in_place(|| cli(&["submit", "echo", "--args", "{"]));
    assert_eq!(bad_args.status.code(), Some(2));
    let nowhere = tokio::task::block_in_place(|| {
        cli(&[
            "jobs",
            "--api-url",
            &format!("http://127.0.0.1:{}", crate::helpers::free_port()),
        ])
    });
    assert_eq!(nowhere.status.code(), Some(3), "an unreachable server");
    let help = tokio::task::block_in_place(|| cli(&["--help"]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes"));

    // -o json and the filters, for programs.
    let listed = tokio::task::block_in_place(|| {
        cli(&[
            "jobs",
            "-o",
            "json",
            "--task",
            "sleep",
            "--resource",
            "repo:1",
        ])
    });
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    for what in [
        &["workers", "-o", "json"][..],
        &["queues", "-o", "json"],
        &["job", &id, "-o", "json"],
    ] {
        let out = tokio::task::block_in_place(|| cli(what));
        let v: Result<serde_json::Value, _> = serde_json::from_slice(&out.stdout);
        assert!(
            v.is_ok(),
            "{what:?} prints JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let completions = tokio::task::block_in_place(|| cli(&["completions", "bash"]));
    assert!(completions.status.success());
    assert!(String::from_utf8_lossy(&completions.stdout).contains("_lanes()"));

    let jobs = tokio::task::block_in_place(|| cli(&["jobs"]));
    assert!(String::from_utf8_lossy(&jobs.stdout).contains(&id));
    let job = tokio::task::block_in_place(|| cli(&["job", &id]));
    let job: serde_json::Value = serde_json::from_slice(&job.stdout).unwrap();
    assert_eq!(job["state"], "completed");
    let workers = tokio::task::block_in_place(|| cli(&["workers"]));
    assert_eq!(
        String::from_utf8_lossy(&workers.stdout).lines().count(),
        3,
        "header + 2 workers"
    );
}
