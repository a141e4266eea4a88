//! Delayed jobs (`run_at`, `delay_ms`), proven from the probe tasks' own execution log: a job
//! never starts before it is due, joins its resources' order when it falls due (after what was
//! submitted before that, before what comes after), can be canceled until then, and fires once
//! across a killed server and a takeover.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{eventually, Opts, TestApp},
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::{collections::HashMap, time::Duration};

/// A probe job's body with a due time added.
fn delayed(body: &[u8], delay_ms: u64) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(body).unwrap();
    doc["delay_ms"] = json!(delay_ms);
    serde_json::to_vec(&doc).unwrap()
}

/// Posts a probe job (its token as its id); returns the API's answer.
async fn post(app: &TestApp, (body, token): &(Vec<u8>, Option<String>)) -> Value {
    let mut doc: Value = serde_json::from_slice(body).unwrap();
    doc["id"] = json!(token.as_deref().unwrap());
    let resp = app
        .http
        .post(format!("{}/jobs", app.base))
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

/// Each job's first start in the log (Unix nanoseconds).
fn starts(log: &ExecLog, tokens: &[&str]) -> HashMap<String, i64> {
    tokens
        .iter()
        .filter_map(|t| Some((t.to_string(), log.started_at(t)?)))
        .collect()
}

fn nanos(at: &Value) -> i64 {
    at.as_str()
        .unwrap()
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_job_joins_its_resources_order_when_due_and_can_be_canceled_before() {
    let mut log = ExecLog::new("delayed");
    let app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    let one = ["repo:1".to_owned()];

    // D is due in 1.5 s; X, submitted after it but before it is due, runs first.
    let (d_body, d) = log.probe(&one, 20);
    let d_job = (delayed(&d_body, 1500), d.clone());
    let answer = post(&app, &d_job).await;
    assert_eq!(answer["state"], "scheduled", "{answer}");
    let x_job = log.probe(&one, 20);
    post(&app, &x_job).await;
    let (c_body, c) = log.probe(&["repo:2".to_owned()], 20);
    post(&app, &(delayed(&c_body, 1500), c.clone())).await;

    // Recorded a few milliseconds after the POST: both are listed as scheduled.
    eventually(Duration::from_secs(10), "two scheduled jobs", || async {
        let listed = app.get_json("/jobs?state=scheduled").await.ok()?;
        (listed.as_array()?.len() == 2).then_some(())
    })
    .await;
    let d_path = format!("/jobs/{}", d.as_deref().unwrap());
    let shown = app.get_json(&d_path).await.unwrap();
    assert_eq!(shown["state"], "scheduled", "{shown}");
    let due = nanos(&shown["run_at"]);
    let why = std::process::Command::new(TestApp::lanes_binary())
        .args(["jobs", "show", d.as_deref().unwrap()])
        .env("LANES_API_URL", &app.base)
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&why.stdout);
    assert!(
        why.contains("scheduled: joins its resources' order at"),
        "{why}"
    );

    // A cancel before it is due: it never runs.
    let canceled = app
        .http
        .post(format!(
            "{}/jobs/{}/cancel",
            app.base,
            c.as_deref().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);

    // After D is due (with a margin for the firing), Y comes behind it.
    let wait = (due - Utc::now().timestamp_nanos_opt().unwrap()) / 1_000_000 + 500;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let y_job = log.probe(&one, 20);
    post(&app, &y_job).await;
    let rows = app.wait_final(4, Duration::from_secs(30)).await;
    let state = |id: &Option<String>| {
        rows.iter()
            .find(|r| Some(r.id.to_string()) == *id)
            .unwrap()
            .state
            .clone()
    };
    assert_eq!(state(&c), "canceled");
    assert_eq!(state(&d), "completed");
    let (x, y) = (x_job.1.clone().unwrap(), y_job.1.clone().unwrap());
    let d = d.unwrap();
    let at = starts(&log, &[&d, &x, &y]);
    assert!(
        at[&d] >= due,
        "D started {} ns before it was due",
        due - at[&d]
    );
    assert!(
        at[&x] < at[&d],
        "X was submitted before D was due: it goes first"
    );
    assert!(
        at[&d] < at[&y],
        "Y was submitted after D was due: it goes after"
    );
    assert!(
        !log.started(c.as_deref().unwrap()),
        "a canceled delayed job never runs"
    );
    let report = log.report(&rows);
    assert_eq!((report.overlaps, report.extra_runs), (0, 0), "{report:?}");
    assert!(app.metric("lanes_jobs_fired_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_jobs_fire_once_across_a_killed_server_and_a_takeover() {
    let mut log = ExecLog::new("delayed-takeover");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    let (standby, standby_url) = app.start_standby();
    app.extra.push(standby);
    // 300 jobs over 20 resources, due from 0.3 s to 4 s from now.
    let jobs: Vec<(Vec<u8>, Option<String>)> = (0..300u64)
        .map(|i| {
            let (body, token) = log.probe(&[format!("repo:{}", i % 20)], 5);
            (delayed(&body, 300 + (i * 37) % 3700), token)
        })
        .collect();
    app.publish_many(&jobs).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The active server dies while jobs fire; the standby takes over; a new server joins.
    app.kill_server();
    app.take_over(standby_url).await;
    let (another, _) = app.start_standby();
    app.extra.push(another);
    let rows = app.wait_final(300, Duration::from_secs(120)).await;
    assert!(
        rows.iter().all(|r| r.state == "completed"),
        "every job completed"
    );
    let report = log.report(&rows);
    assert_eq!(report.never_started, 0, "{report:?}");
    assert_eq!(
        report.extra_runs, 0,
        "a delayed job fired twice: {report:?}"
    );
    assert_eq!(report.overlaps, 0, "{report:?}");
    let due: HashMap<String, i64> =
        sqlx::query_as::<_, (uuid::Uuid, DateTime<Utc>)>("SELECT id, run_at FROM jobs")
            .fetch_all(&app.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, at)| (id.to_string(), at.timestamp_nanos_opt().unwrap()))
            .collect();
    for (_, token) in &jobs {
        let token = token.as_deref().unwrap();
        let started = log.started_at(token).expect("it started");
        assert!(started >= due[token], "{token} started before it was due");
    }
}
