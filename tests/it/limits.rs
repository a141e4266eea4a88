//! Resources with limits, proven from the probe tasks' execution log: a capacity (`slot:`
//! holders at once; one slot file each, so one more than the capacity overlaps) changed while
//! tasks wait, beside a writer and a multi-resource task; and a rate across a takeover of the
//! control plane. "Why is it waiting" and the metrics name the limit while tasks wait.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{eventually, Opts, TestApp},
};
use lanes::limit::{Limit, Rate};
use serde_json::{json, Value};
use std::time::Duration;

/// The first of `tokens` that has not started, with what `GET /jobs/{id}` says of it.
async fn first_waiting(app: &TestApp, log: &ExecLog, tokens: &[String]) -> Option<Value> {
    let token = tokens.iter().find(|t| !log.started(t))?;
    app.get_json(&format!("/jobs/{token}")).await.ok()
}

/// A dashboard page's HTML.
async fn page(app: &TestApp, path: &str) -> Option<String> {
    let resp = app
        .http
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_admit_their_capacity_in_submit_order_and_change_while_tasks_wait() {
    let mut log = ExecLog::new("slots");
    let app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        max_queues: 32,
        ..Opts::default()
    })
    .await;
    let out = app.cli(&["limits", "set", "tenant:7", "--slots", "1"]);
    assert!(out.status.success());
    // The probes hold one of four slot files: the capacity the test ends with.
    log.limit(
        "tenant:7",
        Limit {
            slots: 4,
            rate: None,
        },
    );
    let (slot, writer) = (
        vec!["slot:tenant:7".to_owned()],
        vec!["tenant:7".to_owned()],
    );
    // `repo:1` is held for a while: the task that also needs it waits (all or nothing), and the
    // slot holders after it wait behind it.
    let mut jobs = vec![log.probe(&["repo:1".to_owned()], 1500)];
    for i in 0..16 {
        jobs.push(match i {
            6 => log.probe(&writer, 100),
            9 => log.probe(&["slot:tenant:7".to_owned(), "repo:1".to_owned()], 300),
            _ => log.probe(&slot, 300),
        });
    }
    app.publish_many(&jobs).await;
    let tokens: Vec<String> = jobs[1..].iter().map(|(_, t)| t.clone().unwrap()).collect();

    // One slot: one at a time, and the next in line says whose slot it waits for.
    // (Asked again should it start in between.)
    let (why, text) = eventually(
        Duration::from_secs(30),
        "a waiter held by the slot",
        || async {
            let job = first_waiting(&app, &log, &tokens).await?;
            if job["held"]["reason"] != "slots" {
                return None;
            }
            let id = job["id"].as_str()?;
            let shown = app.cli(&["jobs", "show", id]);
            let text = String::from_utf8_lossy(&shown.stdout).into_owned();
            // The dashboard's job page and resource page say it too.
            let job_page = page(&app, &format!("/ui/jobs/{id}")).await?;
            let resource_page = page(&app, "/ui/resources?name=tenant:7").await?;
            let said = "slots of tenant:7 full (1 of 1), held by";
            (text.contains(said)
                && job_page.contains(said)
                && resource_page.contains(said)
                && resource_page.contains("1 slot"))
            .then_some((job, text))
        },
    )
    .await;
    assert_eq!(why["held"]["resource"], "tenant:7", "{why}");
    assert_eq!(why["held"]["slots"], 1, "{why}");
    assert_eq!(
        why["held"]["jobs"].as_array().unwrap().len(),
        1,
        "{why} {text}"
    );
    assert!(app.metric("lanes_jobs_slot_waiting").await >= 1.0);
    let listed: Value = serde_json::from_slice(&app.cli(&["limits", "-o", "json"]).stdout).unwrap();
    assert_eq!(listed, json!([{"resource": "tenant:7", "slots": 1}]));

    // Four slots while they wait: the waiters go, up to four at once.
    let widened = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let out = app.cli(&["limits", "set", "tenant:7", "--slots", "4"]);
    assert!(out.status.success());
    let rows = app
        .wait_completed(jobs.len(), Duration::from_secs(60))
        .await;
    // Order (slot holders start in submit order; the writer after the slot holders before it,
    // the slot holders after it after the writer), exclusion and capacity (slot files).
    log.assert_kept(&rows);
    let (mut before, mut after) = (0, 0);
    for (at, running) in log.running_at_starts(&tokens) {
        match at < widened {
            true => before = before.max(running),
            false => after = after.max(running),
        }
    }
    eprintln!("slot holders at once: {before} with one slot, {after} with four");
    assert_eq!(before, 1, "one slot: one holder at a time");
    assert_eq!(after, 4, "four slots: four holders at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_spaces_starts_across_a_takeover() {
    let mut log = ExecLog::new("rate");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        max_queues: 32,
        ..Opts::default()
    })
    .await;
    let (standby, standby_url) = app.start_standby();
    app.extra.push(standby);
    // Bad limits get a clear answer.
    let put = |name: &str, body: Value| {
        let req = app
            .http
            .put(format!("{}/limits/{name}", app.base))
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = put("api:x", json!({"slots": 0})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("slots must be 1 to 100000, not 0"))
    );
    let (status, body) = put("slot:api:x", json!({"slots": 2})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = put("api:x", json!({"rate": {"starts": 5}})).await;
    assert_eq!(status, 400);

    let limit = Limit {
        slots: 10,
        rate: Some(Rate {
            starts: 5,
            per_ms: 3000,
        }),
    };
    app.set_limit("api:x", &limit).await;
    log.limit("api:x", limit);
    let jobs: Vec<_> = (0..15)
        .map(|_| log.probe(&["slot:api:x".to_owned()], 20))
        .collect();
    app.publish_many(&jobs).await;
    let tokens: Vec<String> = jobs.iter().map(|(_, t)| t.clone().unwrap()).collect();
    // The first waiter is held by the rate (asked again should it start in between).
    let (why, text) = eventually(
        Duration::from_secs(30),
        "a waiter held by the rate",
        || async {
            let job = first_waiting(&app, &log, &tokens).await?;
            if job["held"]["reason"] != "rate" {
                return None;
            }
            let shown = app.cli(&["jobs", "show", job["id"].as_str()?]);
            let text = String::from_utf8_lossy(&shown.stdout).into_owned();
            text.contains("rate limited on api:x until")
                .then_some((job, text))
        },
    )
    .await;
    assert!(why["held"]["until"].is_string(), "{why}");
    assert!(why["estimated_start"].is_string(), "{why} {text}");
    assert!(app.metric("lanes_jobs_rate_limited").await >= 1.0);

    // The active server dies right after the first start of the second window; the standby
    // counts the starts the window holds.
    eventually(Duration::from_secs(30), "six starts", || async {
        (tokens.iter().filter(|t| log.started(t)).count() >= 6).then_some(())
    })
    .await;
    app.kill_server();
    app.take_over(standby_url).await;
    let rows = app
        .wait_completed(jobs.len(), Duration::from_secs(60))
        .await;
    // No window of 3 s holds six starts (`rate_violations`), and they keep their order.
    let report = log.assert_kept(&rows);
    let starts: Vec<i64> = tokens.iter().filter_map(|t| log.started_at(t)).collect();
    let span = starts.iter().max().unwrap() - starts.iter().min().unwrap();
    eprintln!(
        "15 starts at 5 per 3 s took {} ms: {report:?}",
        span / 1_000_000
    );
}
