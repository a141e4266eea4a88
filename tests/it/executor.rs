//! External executors over the callback API: `webhook` tasks handed to the worked example in
//! Python (`examples/executor.py`), which reports with `PATCH /jobs/{id}`. Exclusion and order
//! are proven from the log the executor writes (the `execlog` format: it holds a `flock` on
//! each resource while it works).

use crate::{
    execlog::ExecLog,
    helpers::{eventually, free_port, submit, Opts, TestApp},
};
use lanes::protocol::job_id_from_message_id as id_of;
use serde_json::{json, Value};
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The example executor on a free port, killed when dropped.
struct Executor {
    child: Child,
    url: String,
}

impl Executor {
    /// The executor process on `port`, logging to `log`.
    fn spawn(log: &ExecLog, api: &str, port: u16) -> Child {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/executor.py");
        Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--api", api])
            .arg("--log")
            .arg(log.path("log"))
            .arg("--lock-dir")
            .arg(log.path(""))
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs")
    }

    async fn start(log: &ExecLog, api: &str) -> Executor {
        let port = free_port();
        let child = Executor::spawn(log, api, port);
        eventually(Duration::from_secs(20), "the executor to start", || async {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        })
        .await;
        Executor {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        }
    }
}

/// An app with no server-side workers yet, the executor, and `workers` workers allowed to
/// post to it.
async fn app_with_executor(log: &ExecLog, workers: usize) -> (TestApp, Executor) {
    let mut app = TestApp::with(Opts {
        workers: 0,
        ..Opts::default()
    })
    .await;
    let executor = Executor::start(log, &app.base).await;
    app.opts.env = vec![
        ("LANES_WEBHOOK_ALLOW".into(), executor.url.clone()),
        ("LANES_API_URL".into(), app.base.clone()),
    ];
    for _ in 0..workers {
        app.start_worker();
    }
    app.wait_workers(workers).await;
    (app, executor)
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_jobs_keep_order_and_exclusion_and_end_by_the_executors_report() {
    let mut log = ExecLog::new("executor");
    let (app, executor) = app_with_executor(&log, 2).await;
    // Twelve jobs over three resources, every third on two of them.
    let mut work = Vec::new();
    for i in 0..12 {
        let mut resources = vec![format!("r{}", i % 3)];
        if i % 3 == 0 {
            resources.push(format!("r{}", (i + 1) % 3));
        }
        let token = log.expect(&resources);
        let args = json!({"url": executor.url, "seconds": 0.2, "lock": resources, "token": token});
        let refs: Vec<&str> = resources.iter().map(String::as_str).collect();
        work.push((submit("webhook", args, &refs), Some(token)));
    }
    app.publish_many(&work).await;
    let rows = app.wait_final(12, Duration::from_secs(90)).await;
    assert!(rows.iter().all(|r| r.state == "completed"), "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r.result.as_ref().unwrap()["by"] == "executor.py"));
    let report = log.assert_kept(&rows);
    assert_eq!(report.extra_runs, 0, "posted twice: {report:?}");

    // A URL outside LANES_WEBHOOK_ALLOW fails at once; a report of a bad shape is refused.
    let elsewhere = json!({"url": "http://127.0.0.1:1/", "seconds": 0});
    app.publish(&submit("webhook", elsewhere, &["x"]), Some("elsewhere"))
        .await;
    app.wait_final(13, Duration::from_secs(30)).await;
    let patch = |token: &str, body: Value| {
        app.http
            .patch(format!("{}/jobs/{}", app.base, id_of(token)))
            .json(&body)
            .send()
    };
    let row = app
        .get_json(&format!("/jobs/{}", id_of("elsewhere")))
        .await
        .unwrap();
    assert_eq!(row["state"], "failed");
    assert!(row["error"]
        .as_str()
        .unwrap()
        .contains("LANES_WEBHOOK_ALLOW"));
    assert_eq!(row["attempts"], 1, "not retried");
    let bad = patch("elsewhere", json!({"state": "done"})).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    // An ended job takes no more reports.
    let late = patch("elsewhere", json!({"attempt": 1, "state": "completed"}))
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canceled_webhook_job_tells_its_executor_and_refuses_its_reports() {
    let log = ExecLog::new("executor-cancel");
    let (app, executor) = app_with_executor(&log, 1).await;
    let args = json!({"url": executor.url, "seconds": 30, "token": "long"});
    app.publish(&submit("webhook", args, &["r"]), Some("long"))
        .await;
    let after = json!({"url": executor.url, "seconds": 0.1, "token": "after"});
    app.publish(&submit("webhook", after, &["r"]), Some("after"))
        .await;
    eventually(
        Duration::from_secs(30),
        "the executor to start the job",
        || async {
            let text = std::fs::read_to_string(log.path("log")).unwrap_or_default();
            text.contains("start long").then_some(())
        },
    )
    .await;
    let resp = app
        .http
        .post(format!("{}/jobs/{}/cancel", app.base, id_of("long")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let rows = app.wait_final(2, Duration::from_secs(60)).await;
    let by = |t: &str| rows.iter().find(|r| r.id == id_of(t)).unwrap();
    assert_eq!(by("long").state, "canceled");
    assert_eq!(by("after").state, "completed", "the resource was released");
    eventually(
        Duration::from_secs(10),
        "the executor to get a cancel notice",
        || async {
            let text = std::fs::read_to_string(log.path("log")).unwrap_or_default();
            text.contains("cancel long").then_some(())
        },
    )
    .await;
    let late = app
        .http
        .patch(format!("{}/jobs/{}", app.base, id_of("long")))
        .json(&json!({"attempt": 1, "state": "completed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 409);
}

/// The worker of a webhook job dies while the executor works on it: the worker that takes the
/// job over posts it again under its new attempt, the executor keeps working (no second run)
/// and reports under that attempt, and a report for the old attempt is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_job_whose_worker_dies_is_posted_again_under_its_new_attempt_and_runs_once() {
    let mut log = ExecLog::new("executor-kill");
    let (mut app, executor) = app_with_executor(&log, 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // standbys subscribe after 300 ms
    let mut work = Vec::new();
    for r in ["a", "b"] {
        let token = log.expect(&[r.to_owned()]);
        let args = json!({"url": executor.url, "seconds": 4, "lock": [r], "token": token});
        work.push((submit("webhook", args, &[r]), Some(token)));
    }
    app.publish_many(&work).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    eventually(
        Duration::from_secs(30),
        "the executor to start both jobs",
        || async { (log.report(&[]).started >= 2).then_some(()) },
    )
    .await;
    // The worker that holds the first job dies while the executor works on it (the job's
    // record says the executor has it).
    let token = work[0].1.clone().unwrap();
    let delivered = |job: &Value| {
        job["progress"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("handed to its executor"))
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let job = eventually(left, "the delivery to be recorded", || async {
        let job = app
            .get_json(&format!("/jobs/{}", id_of(&token)))
            .await
            .unwrap();
        (delivered(&job) && job["worker"].is_string()).then_some(job)
    })
    .await;
    let Value::Array(workers) = app.get_json("/workers").await.unwrap() else {
        panic!("no worker list")
    };
    let pid = workers
        .iter()
        .find(|w| w["id"] == job["worker"])
        .and_then(|w| w["pid"].as_u64())
        .expect("the job's worker is listed") as u32;
    let i = app.workers.iter().position(|c| c.id() == pid).unwrap();
    app.kill_worker(i);
    // Taken over: attempt 2 runs, and a report of attempt 1 is too late.
    eventually(
        Duration::from_secs(30),
        "the job to be taken over (attempt 2 running)",
        || async {
            let job = app
                .get_json(&format!("/jobs/{}", id_of(&token)))
                .await
                .unwrap();
            (job["attempts"] == 2 && job["state"] == "running").then_some(())
        },
    )
    .await;
    let stale = app
        .http
        .patch(format!("{}/jobs/{}", app.base, id_of(&token)))
        .json(&json!({"attempt": 1, "state": "completed", "result": "stale"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 409);
    let rows = app.wait_final(2, Duration::from_secs(60)).await;
    assert!(rows.iter().all(|r| r.state == "completed"), "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r.result.as_ref().unwrap()["by"] == "executor.py"));
    let report = log.assert_kept(&rows);
    assert_eq!(report.extra_runs, 0, "a job ran again: {report:?}");
    let text = std::fs::read_to_string(log.path("log")).unwrap();
    assert!(
        text.contains(&format!("repost {token} a2")),
        "posted again under attempt 2:\n{text}"
    );
}

/// With a secret, the executor takes only requests signed by it, and each only once.
#[tokio::test(flavor = "multi_thread")]
async fn signed_webhooks_are_taken_and_unsigned_or_replayed_ones_refused() {
    let mut log = ExecLog::new("executor-signed");
    let secret = "s3cret-for-tests";
    let mut app = TestApp::with(Opts {
        workers: 0,
        ..Opts::default()
    })
    .await;
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/executor.py"))
        .args(["--port", &port.to_string(), "--api", &app.base])
        .args(["--secret", secret])
        .arg("--log")
        .arg(log.path("log"))
        .arg("--lock-dir")
        .arg(log.path(""))
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    eventually(Duration::from_secs(20), "the executor to start", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(())
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/");
    app.opts.env = vec![
        ("LANES_WEBHOOK_ALLOW".into(), url.clone()),
        ("LANES_API_URL".into(), app.base.clone()),
        ("LANES_WEBHOOK_SECRET".into(), secret.into()),
    ];
    app.start_worker();
    app.wait_workers(1).await;
    let token = log.expect(&["r".to_owned()]);
    let args = json!({"url": url, "seconds": 0.1, "lock": ["r"], "token": token});
    app.publish(&submit("webhook", args, &["r"]), Some(&token))
        .await;
    let rows = app.wait_final(1, Duration::from_secs(60)).await;
    assert_eq!(rows[0].state, "completed", "signed: taken {rows:?}");

    let post = |body: Vec<u8>, signature: Option<String>| {
        let mut req = app.http.post(&url).body(body);
        if let Some(s) = signature {
            req = req.header(lanes::tasks::signature::HEADER, s);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let body = serde_json::to_vec(&json!({"id": uuid::Uuid::now_v7(), "cancel": true})).unwrap();
    let now = chrono::Utc::now().timestamp();
    let signed = lanes::tasks::signature::sign(secret.as_bytes(), now, &body);
    assert_eq!(post(body.clone(), None).await, 401, "unsigned");
    let forged = lanes::tasks::signature::sign(b"not the secret", now, &body);
    assert_eq!(
        post(body.clone(), Some(forged)).await,
        401,
        "another secret"
    );
    let old = lanes::tasks::signature::sign(secret.as_bytes(), now - 3600, &body);
    assert_eq!(post(body.clone(), Some(old)).await, 401, "an hour old");
    assert_eq!(
        post(body.clone(), Some(signed.clone())).await,
        202,
        "signed"
    );
    assert_eq!(post(body, Some(signed)).await, 401, "replayed");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_executor_takes_up_the_jobs_it_was_running() {
    let mut log = ExecLog::new("executor-restart");
    let (app, mut executor) = app_with_executor(&log, 1).await;
    let token = log.expect(&["r".to_owned()]);
    let args = json!({"url": executor.url, "seconds": 1, "lock": ["r"], "token": token});
    app.publish(&submit("webhook", args, &["r"]), Some(&token))
        .await;
    eventually(
        Duration::from_secs(30),
        "the executor to start the job",
        || async { log.started(&token).then_some(()) },
    )
    .await;
    // The executor dies mid-job and comes back on the same address.
    let _ = executor.child.kill();
    let _ = executor.child.wait();
    let port = executor.url.trim_end_matches('/').rsplit(':').next();
    let port: u16 = port.unwrap().parse().unwrap();
    executor.child = Executor::spawn(&log, &app.base, port);
    let rows = app.wait_final(1, Duration::from_secs(60)).await;
    assert_eq!(rows[0].state, "completed", "{rows:?}");
    let text = std::fs::read_to_string(log.path("log")).unwrap();
    assert_eq!(
        text.matches("start ").count(),
        2,
        "taken up once more: {text}"
    );
    assert_eq!(text.matches("end ").count(), 1, "{text}");
}
