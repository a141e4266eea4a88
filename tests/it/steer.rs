//! Cancel and retry, from outside: `exec` tasks that log their runs and `flock` their
//! resources (`execlog`) show that a canceled job never runs (or stops), its resources go to
//! the next task, and a retried job runs again in order from the moment of the retry.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{Opts, Row, TestApp},
};
use lanes::protocol::job_id_from_message_id as id_of;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn opts() -> Opts {
    Opts {
        env: worker_env(),
        ..Opts::default()
    }
}

impl TestApp {
    async fn steer(&self, token: &str, action: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/jobs/{}/{action}", self.base, id_of(token)))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn state_of(&self, token: &str) -> Option<String> {
        let job = self
            .get_json(&format!("/jobs/{}", id_of(token)))
            .await
            .ok()?;
        job["state"].as_str().map(str::to_owned)
    }

    /// Waits (bounded) until the job's state is `state`.
    async fn wait_state(&self, token: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.state_of(token).await.as_deref() != Some(state) {
            assert!(Instant::now() < deadline, "{token} never became {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn row<'a>(rows: &'a [Row], token: &str) -> &'a Row {
    rows.iter().find(|r| r.id == id_of(token)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn canceled_jobs_never_run_or_stop_and_release_their_resources() {
    let mut log = ExecLog::new("cancel");
    let app = TestApp::with(opts()).await;
    app.wait_workers(2).await;
    let r = |s: &str| s.to_owned();
    // A long task on `a` and one on `b`; `both` waits for them (its resources are in two
    // lanes); `queued` sits behind `long` in its lane; `after` needs what they all hold.
    let long = log.task(&[r("a")], 30_000);
    let b = log.task(&[r("b")], 1_500);
    let both = log.task(&[r("a"), r("b")], 100);
    let queued = log.task(&[r("a")], 100);
    let after = log.task(&[r("a"), r("b")], 100);
    let token = |t: &(Vec<u8>, Option<String>)| t.1.clone().unwrap();
    app.publish_many(&[long.clone(), b.clone(), both.clone(), queued.clone()])
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.started(&token(&long)) {
        assert!(Instant::now() < deadline, "the long task did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_state(&token(&both), "waiting").await;

    // Waiting: canceled at once.
    let (status, body) = app.steer(&token(&both), "cancel").await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("canceled")),
        "{body}"
    );
    // Queued behind the long one: its worker skips it.
    let (status, body) = app.steer(&token(&queued), "cancel").await;
    assert_eq!(status, 202, "{body}");
    // Running: its program is killed, through the CLI as an operator would.
    let out = std::process::Command::new(TestApp::lanes_binary())
        .args(["cancel", &id_of(&token(&long)).to_string()])
        .env("LANES_API_URL", &app.base)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancel requested"));
    app.publish_many(std::slice::from_ref(&after)).await;

    let rows = app.wait_final(5, Duration::from_secs(60)).await;
    for t in [&long, &both, &queued] {
        let r = row(&rows, &token(t));
        assert_eq!(r.state, "canceled", "{r:?}");
    }
    assert_eq!(row(&rows, &token(&after)).state, "completed");
    // Only the job that ran says it started; the API shows the table's column (so do the CLI
    // and the dashboard).
    for t in [&both, &queued] {
        let r = row(&rows, &token(t));
        assert!(r.started_at.is_none(), "canceled before it ran: {r:?}");
    }
    assert!(row(&rows, &token(&long)).started_at.is_some());
    let shown = app
        .get_json(&format!("/jobs/{}", id_of(&token(&queued))))
        .await
        .unwrap();
    assert!(shown["started_at"].is_null(), "{shown}");
    let report = log.report(&rows);
    assert_eq!(report.overlaps, 0, "{report:?}");
    assert!(!log.started(&token(&both)) && !log.started(&token(&queued)));
    let text = std::fs::read_to_string(log.path("log")).unwrap();
    assert!(
        !text.contains(&format!("end {}", token(&long))),
        "the canceled program ran to its end"
    );
    // An ended job cannot be canceled; an unknown one is not found.
    assert_eq!(app.steer(&token(&after), "cancel").await.0, 409);
    assert_eq!(app.steer("no-such-job", "cancel").await.0, 404);
    // A canceled job retried runs: no worker still holds its old cancel against it.
    let (status, body) = app.steer(&token(&queued), "retry").await;
    assert_eq!(status, 202, "{body}");
    app.wait_state(&token(&queued), "completed").await;
    assert!(log.started(&token(&queued)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_job_runs_again_behind_what_was_submitted_before_the_retry() {
    let log = ExecLog::new("retry");
    let app = TestApp::with(opts()).await;
    app.wait_workers(2).await;
    let (marker, order) = (log.path("ran-once"), log.path("order"));
    let on_r = |script: String, attempts: i32| {
        json!({"task": "exec", "args": {"program": "sh", "args": ["-c", script]},
               "resources": ["r"], "max_attempts": attempts})
        .to_string()
    };
    // Fails the first time it runs, succeeds (and says so in `order`) after.
    let flaky = on_r(
        format!(
            "if [ -f {m} ]; then echo flaky >> {o}; echo again; else touch {m}; exit 3; fi",
            m = marker.display(),
            o = order.display()
        ),
        1,
    );
    app.publish(flaky.as_bytes(), Some("flaky")).await;
    app.wait_state("flaky", "failed").await;
    let said = |name: &str, secs: f32| {
        on_r(
            format!("sleep {secs}; echo {name} >> {}", order.display()),
            1,
        )
    };
    app.publish(said("before", 0.5).as_bytes(), Some("before"))
        .await;
    app.wait_state("before", "running").await;
    let (status, body) = app.steer("flaky", "retry").await;
    assert_eq!(status, 202, "{body}");
    app.publish(said("later", 0.0).as_bytes(), Some("later"))
        .await;
    let rows = app.wait_final(3, Duration::from_secs(60)).await;
    let flaky = row(&rows, "flaky");
    assert_eq!(
        (flaky.state.as_str(), flaky.attempts),
        ("completed", 1),
        "{flaky:?}"
    );
    assert_eq!(flaky.result.as_ref().unwrap()["stdout"], "again\n");
    let ran = std::fs::read_to_string(&order).unwrap();
    assert_eq!(
        ran, "before\nflaky\nlater\n",
        "order on `r` from the retry on"
    );
    // Only a failed or canceled job can be retried.
    assert_eq!(app.steer("flaky", "retry").await.0, 409);
}
