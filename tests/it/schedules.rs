//! Recurring schedules: the API and CLI (made, listed, paused, resumed, deleted; bad ones
//! refused with the reason), and exactly one job per tick across a takeover at a tick
//! boundary, counted from the jobs table and from the probe tasks' own execution log. The
//! load test (1,000 schedules every second for a minute) runs alone: `tests/schedule_load.rs`.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{eventually, Opts, TestApp},
    ticks::{jobs_per_tick, one_job_per_tick, probe_args, send},
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn schedules_are_made_listed_paused_resumed_and_deleted() {
    let app = TestApp::spawn().await;
    let post = |body: Value| send(&app, reqwest::Method::POST, "/schedules", Some(body));
    let base =
        json!({"name": "every-2s", "cron": "*/2 * * * * *", "task": "echo", "args": {"n": 1}});
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    for (body, why) in [
        (
            bad(&|b| b["cron"] = json!("every day")),
            "no cron expression",
        ),
        (bad(&|b| b["tz"] = json!("Mars/Olympus")), "no time zone"),
        (bad(&|b| b["task"] = json!("nope")), "unknown task"),
        (bad(&|b| b["name"] = json!("has space")), "name"),
        (
            bad(&|b| b["missed"] = json!("twice")),
            "expected `skip` or `once`",
        ),
        (
            bad(&|b| b["crn"] = json!("* * * * *")),
            "unknown field `crn`",
        ),
    ] {
        let (status, answer) = post(body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(why), "{answer}");
    }
    let (status, made) = post(base.clone()).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["next"].as_array().unwrap().len(), 5, "{made}");
    assert_eq!(post(base.clone()).await.0, 409, "a name is taken once");

    // The CLI adds one too, in a zone of its own.
    let out = app.cli(&[
        "schedules",
        "add",
        "nine-paris",
        "echo",
        "--cron",
        "0 9 * * *",
        "--tz",
        "Europe/Paris",
        "--missed",
        "once",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value =
        serde_json::from_slice(&app.cli(&["schedules", "list", "-o", "json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["name"], "every-2s", "by name");
    let nine = &listed[1];
    assert_eq!(nine["name"], "nine-paris");
    let next: DateTime<Utc> = nine["next"][0].as_str().unwrap().parse().unwrap();
    let paris = next.with_timezone(&chrono_tz::Europe::Paris);
    assert_eq!(
        paris.format("%H:%M:%S").to_string(),
        "09:00:00",
        "read in its zone"
    );

    // Every 2 s: jobs on even seconds, each with the id its tick gives it.
    let done = eventually(
        Duration::from_secs(20),
        "three jobs of every-2s",
        || async {
            let (_, one) = send(&app, reqwest::Method::GET, "/schedules/every-2s", None).await;
            let jobs = one["jobs"].as_array()?.clone();
            let completed = jobs.iter().filter(|j| j["state"] == "completed").count();
            (completed >= 3).then_some(jobs)
        },
    )
    .await;
    for job in done.iter().filter(|j| j["state"] == "completed") {
        let tick: DateTime<Utc> = job["run_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(tick.timestamp() % 2, 0, "{job}");
        assert_eq!(tick.timestamp_subsec_millis(), 0);
        assert_eq!(
            job["id"],
            lanes::schedule::job_id("every-2s", tick).to_string()
        );
        let started: DateTime<Utc> = job["started_at"].as_str().unwrap().parse().unwrap();
        assert!(started >= tick, "it never starts before its tick");
        assert_eq!(job["submitted_by"], "schedule:every-2s");
    }

    // Paused: no more jobs; the one made for the coming tick is left out.
    let out = app.cli(&["schedules", "pause", "every-2s"]);
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = jobs_per_tick(&app, "every-2s").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = jobs_per_tick(&app, "every-2s").await;
    assert_eq!(after.len(), before, "a paused schedule makes no job");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE submitted_by = 'schedule:every-2s' AND state = 'scheduled'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "its coming job was left out");
    let out = app.cli(&["schedules", "resume", "every-2s"]);
    assert!(out.status.success());
    eventually(
        Duration::from_secs(10),
        "jobs again after the resume",
        || async { (jobs_per_tick(&app, "every-2s").await.len() > after.len() + 1).then_some(()) },
    )
    .await;

    // The dashboard lists them.
    let page = app
        .http
        .get(format!("{}/ui/schedules", app.base))
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains("every-2s") && page.contains("nine-paris"),
        "{page}"
    );

    // Deleted: gone, and no job after.
    let out = app.cli(&["schedules", "rm", "every-2s"]);
    assert!(out.status.success());
    assert_eq!(
        send(&app, reqwest::Method::GET, "/schedules/every-2s", None)
            .await
            .0,
        404
    );
    let gone = jobs_per_tick(&app, "every-2s").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(jobs_per_tick(&app, "every-2s").await.len(), gone);
    assert_eq!(
        app.cli(&["schedules", "rm", "every-2s"]).status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_at_a_tick_makes_each_tick_once() {
    let log = ExecLog::new("schedules-takeover");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    let (standby, standby_url) = app.start_standby();
    app.extra.push(standby);
    let n = 20;
    for i in 0..n {
        let body = json!({"name": format!("tk-{i}"), "cron": "* * * * * *", "task": "probe", "args": probe_args(&log)});
        assert_eq!(
            send(&app, reqwest::Method::POST, "/schedules", Some(body))
                .await
                .0,
            201
        );
    }
    let start = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SIGKILL the active server 20 ms before a tick.
    let now = Utc::now();
    let to_boundary = 1000 - now.timestamp_subsec_millis() as u64;
    tokio::time::sleep(Duration::from_millis(to_boundary.saturating_sub(20))).await;
    app.kill_server();
    app.take_over(standby_url).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = Utc::now();
    let from = DateTime::from_timestamp(start.timestamp() + 2, 0).unwrap();
    let to = DateTime::from_timestamp(end.timestamp() - 2, 0).unwrap();
    app.wait_due_ended(to, Duration::from_secs(30)).await;
    one_job_per_tick(&app, &log, "tk-", n, from, to).await;
}
