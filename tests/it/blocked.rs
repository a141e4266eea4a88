//! "Why is my job not running?": `GET /jobs/{id}` carries `blocked_by` for waiting and queued
//! jobs, and `lanes job ID` says it in words, in scenarios whose answer is known.

use crate::helpers::{submit, TestApp};
use lanes::protocol::job_id_from_message_id as id_of;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn job(app: &TestApp, token: &str) -> Value {
    app.get_json(&format!("/jobs/{}", id_of(token)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_or_queued_job_says_what_it_waits_for() {
    let app = TestApp::spawn().await;
    let long = json!({"ms": 60_000});
    let work = vec![
        (submit("sleep", long.clone(), &["a"]), Some("A".to_owned())),
        (submit("sleep", long, &["b"]), Some("B".to_owned())),
        (submit("echo", json!("F"), &["a"]), Some("F".to_owned())),
        (
            submit("echo", json!("C"), &["a", "b"]),
            Some("C".to_owned()),
        ),
        (
            submit("echo", json!("D"), &["shared:b"]),
            Some("D".to_owned()),
        ),
    ];
    app.publish_many(&work).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while job(&app, "A").await["state"] != "running" || job(&app, "B").await["state"] != "running" {
        assert!(Instant::now() < deadline, "the long tasks did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = |v: &Value| -> Vec<(String, String)> {
        v["blocked_by"]
            .as_array()
            .unwrap_or_else(|| panic!("no blocked_by: {v}"))
            .iter()
            .map(|b| {
                let who = b["id"].as_str().unwrap().to_owned();
                (who, b["resource"].as_str().unwrap_or("-").to_owned())
            })
            .collect()
    };
    let s = |t: &str| id_of(t).to_string();
    // C (on a and b) waits for the holders of a (A, and F queued behind it) and of b (B).
    let c = job(&app, "C").await;
    assert_eq!(c["state"], "waiting");
    assert_eq!(c["waiting_position"], 0);
    let mut by_c = ids(&c);
    by_c.sort();
    let mut want = vec![
        (s("A"), "a".into()),
        (s("B"), "b".into()),
        (s("F"), "a".into()),
    ];
    want.sort();
    assert_eq!(by_c, want, "{c}");
    let a_entry = c["blocked_by"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == s("A"))
        .unwrap();
    assert_eq!(a_entry["state"], "running");
    assert!(
        a_entry["worker"].is_string() && a_entry["lane"].is_string(),
        "{a_entry}"
    );
    // D (a reader of b) waits behind B and behind C, the earlier waiter on b.
    let d = job(&app, "D").await;
    assert_eq!(d["waiting_position"], 1);
    assert_eq!(
        ids(&d),
        vec![(s("B"), "b".into()), (s("C"), "b".into())],
        "{d}"
    );
    // F is in A's lane, right behind it.
    let f = job(&app, "F").await;
    assert_eq!(f["lane_position"], 1, "{f}");
    assert_eq!(ids(&f), vec![(s("A"), "a".into())]);

    // The CLI says it in words.
    let out = std::process::Command::new(TestApp::lanes_binary())
        .args(["job", &s("C")])
        .env("LANES_API_URL", &app.base)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let short: String = s("A").chars().take(13).collect();
    assert!(
        text.contains(&format!("waits for {short}… (running on w-")) && text.contains(") on a"),
        "{text}"
    );
    // Once A and B are canceled, everything runs and nothing is blocked.
    for t in ["A", "B"] {
        let url = format!("{}/jobs/{}/cancel", app.base, id_of(t));
        assert_eq!(app.http.post(url).send().await.unwrap().status(), 202);
    }
    app.wait_final(5, Duration::from_secs(60)).await;
    assert!(job(&app, "C").await.get("blocked_by").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_job_gets_an_estimated_start_near_its_real_one() {
    let app = TestApp::spawn().await;
    let sleep = json!({"ms": 800});
    // The recent run times the estimate goes by: three sleeps of 800 ms.
    let warm: Vec<_> = (0..3)
        .map(|i| {
            (
                submit("sleep", sleep.clone(), &[&format!("w{i}")]),
                Some(format!("W{i}")),
            )
        })
        .collect();
    app.publish_many(&warm).await;
    app.wait_completed(3, Duration::from_secs(30)).await;
    let ahead = vec![
        (submit("sleep", sleep.clone(), &["r"]), Some("A".to_owned())),
        (submit("sleep", sleep.clone(), &["r"]), Some("B".to_owned())),
        (submit("sleep", sleep.clone(), &["r"]), Some("C".to_owned())),
    ];
    app.publish_many(&ahead).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while job(&app, "A").await["state"] != "running" {
        assert!(Instant::now() < deadline, "A did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = job(&app, "C").await;
    let estimated: chrono::DateTime<chrono::Utc> = c["estimated_start"]
        .as_str()
        .unwrap_or_else(|| panic!("no estimate: {c}"))
        .parse()
        .unwrap();
    let shown = std::process::Command::new(TestApp::lanes_binary())
        .args(["jobs", "show", &id_of("C").to_string()])
        .env("LANES_API_URL", &app.base)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("estimated start: "), "{shown}");
    let rows = app.wait_completed(6, Duration::from_secs(30)).await;
    let started = rows
        .iter()
        .find(|r| r.id == id_of("C"))
        .and_then(|r| r.started_at)
        .unwrap();
    let off = (started - estimated).num_milliseconds();
    eprintln!("C estimated to start at {estimated}, started at {started}: {off} ms off");
    assert!(off.abs() < 600, "estimate {estimated}, start {started}");
}
