//! Secrets stay secret: no password or token in `--help`, in logs, or in a startup error;
//! secrets can come from files (`<NAME>_FILE`); a setting protects reads with the token.

use crate::helpers::{Opts, TestApp};
use std::process::Command;

const SECRET: &str = "hunter2-s3cret";

fn lanes() -> Command {
    let mut cmd = Command::new(TestApp::lanes_binary());
    cmd.env(
        "LANES_AMQP_URL",
        format!("amqp://u:{SECRET}@127.0.0.1:5672/%2f"),
    )
    .env("DATABASE_URL", format!("postgres://u:{SECRET}@127.0.0.1/x"))
    .env(
        "LANES_MANAGEMENT_URL",
        format!("http://a:{SECRET}@127.0.0.1:15672"),
    )
    .env("LANES_API_TOKEN", SECRET)
    .env("LANES_WEBHOOK_SECRET", SECRET);
    cmd
}

#[test]
fn help_shows_no_secret() {
    for role in ["server", "worker", "up", "submit", "jobs", "cancel"] {
        let out = lanes().args([role, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{role} --help: {out:?}");
        assert!(text.contains("LANES_AMQP_URL") || text.contains("LANES_API_URL"));
        assert!(
            !text.contains(SECRET),
            "`lanes {role} --help` shows a secret:\n{text}"
        );
    }
}

#[test]
fn a_secret_set_twice_is_a_clear_error_that_shows_no_secret() {
    let file = std::env::temp_dir().join(format!("lanes-token-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = lanes()
        .arg("server")
        .env("LANES_API_TOKEN_FILE", &file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("either LANES_API_TOKEN or LANES_API_TOKEN_FILE"),
        "{err}"
    );
    assert!(!err.contains(SECRET));
    let out = Command::new(TestApp::lanes_binary())
        .arg("server")
        .env("DATABASE_URL_FILE", "/nonexistent/secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("DATABASE_URL_FILE: cannot read /nonexistent/secret"),
        "{err}"
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_program_sees_none_of_the_workers_secrets() {
    let app = TestApp::with(Opts {
        workers: 1,
        env: vec![
            ("LANES_EXEC_ALLOW".into(), "sh".into()),
            ("LANES_API_TOKEN".into(), SECRET.into()),
        ],
        ..Opts::default()
    })
    .await;
    let script = "echo \"[$LANES_API_TOKEN][$LANES_AMQP_URL][$DATABASE_URL]\"";
    let body =
        serde_json::json!({"task": "exec", "args": {"program": "sh", "args": ["-c", script]}});
    app.publish(body.to_string().as_bytes(), Some("peek")).await;
    let rows = app.wait_final(1, std::time::Duration::from_secs(60)).await;
    assert_eq!(rows[0].state, "completed", "{rows:?}");
    assert_eq!(rows[0].result.as_ref().unwrap()["stdout"], "[][][]\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_a_file_protects_writes_and_reads() {
    let file = std::env::temp_dir().join(format!("lanes-token-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, "from-a-file\n").unwrap();
    let app = TestApp::with(Opts {
        workers: 1,
        env: vec![
            ("LANES_API_TOKEN_FILE".into(), file.display().to_string()),
            ("LANES_PROTECT_READS".into(), "true".into()),
        ],
        read_token: Some("from-a-file".into()),
        ..Opts::default()
    })
    .await;
    let (status, _) = app.post_jobs(r#"{"task": "echo"}"#, None).await;
    assert_eq!(status, 401);
    let (status, job) = app
        .post_jobs(r#"{"task": "echo"}"#, Some("from-a-file"))
        .await;
    assert_eq!(status, 202, "{job}");
    // Recorded (and ended) first: a 202 is before the Dispatcher's insert.
    app.wait_final(1, std::time::Duration::from_secs(30)).await;
    for path in [
        "/jobs",
        &format!("/jobs/{}", job["id"].as_str().unwrap()),
        "/workers",
        "/queues",
    ] {
        let url = format!("{}{path}", app.base);
        let open = app.http.get(&url).send().await.unwrap();
        assert_eq!(open.status().as_u16(), 401, "GET {path} without the token");
        let with = app
            .http
            .get(&url)
            .bearer_auth("from-a-file")
            .send()
            .await
            .unwrap();
        assert_eq!(with.status().as_u16(), 200, "GET {path} with the token");
    }
    // Health and metrics stay open for probes and scrapers.
    for path in ["/healthz", "/metrics"] {
        let open = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(open.status().as_u16(), 200, "GET {path}");
    }
    // No process logged a password or the token.
    let logs = app.process_log("server") + &app.process_log("worker0");
    assert!(!logs.contains("guest:guest@"), "a password in the logs");
    assert!(!logs.contains("from-a-file"), "the token in the logs");
    let _ = std::fs::remove_file(file);
}
