//! Bounded memory under requests that would otherwise grow a process without limit: a waiting
//! line of large tasks (their arguments stay in the table), `GET /jobs` over large rows (a
//! byte budget per page), and an `exec` task that prints far more than it may keep. Each is
//! driven well past what the process may hold, and the process's resident size (VmRSS) is
//! checked against a stated bound.

use crate::helpers::{eventually, submit, Opts, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};

/// A process's resident set size in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb / 1024.0
}

/// Jobs of `task` recorded, in any state.
async fn recorded(app: &TestApp, task: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE task = $1")
        .bind(task)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Jobs per state, for a failure's message.
async fn states(app: &TestApp) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT task, state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// The server's bound while 200 MiB of arguments wait, and while a page of them is read.
const SERVER_MIB: f64 = 150.0;
/// The worker's bound while a task prints 200 MiB.
const WORKER_MIB: f64 = 100.0;

#[tokio::test(flavor = "multi_thread")]
async fn large_waiting_lines_pages_and_outputs_stay_within_a_stated_memory() {
    let app = TestApp::with(Opts {
        env: vec![("LANES_EXEC_ALLOW".into(), "sh".into())],
        ..Opts::default()
    })
    .await;
    app.wait_healthy().await;
    // r1 and r2 held in two lanes for the whole test: every task on both waits. A worker cut
    // off by a slow broker on a loaded machine runs its hold again; it must not run out of
    // attempts (its waiters would then all be routed).
    let hold = |r: &str| {
        serde_json::to_vec(
            &json!({"task": "sleep", "args": {"ms": 600_000}, "resources": [r],
            "max_attempts": 100}),
        )
        .unwrap()
    };
    app.publish_many(&[
        (hold("r1"), Some("hold-r1".into())),
        (hold("r2"), Some("hold-r2".into())),
    ])
    .await;

    // 20 rounds of 50 tasks with 200 KiB of arguments each: 200 MiB in the waiting line.
    let pad = "x".repeat(200 << 10);
    let server = app.server_pid();
    let mut peak: f64 = 0.0;
    for round in 1..=20 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                (
                    submit("echo", json!({"i": i, "pad": pad}), &["r1", "r2"]),
                    Some(format!("big-{round}-{i}")),
                )
            })
            .collect();
        app.publish_many(&batch).await;
        let what = format!("round {round} to be recorded");
        eventually(Duration::from_secs(120), &what, || async {
            (recorded(&app, "echo").await >= round * 50).then_some(())
        })
        .await;
        peak = peak.max(rss_mib(server));
    }
    let held: Vec<(String, String, i64)> = states(&app).await;
    assert!(
        held.iter()
            .all(|(task, state, _)| task != "echo" || state == "waiting"),
        "every large task still waits behind the holds: {held:?}"
    );
    assert!(
        peak < SERVER_MIB,
        "server RSS {peak:.0} MiB with 200 MiB of arguments waiting (bound {SERVER_MIB} MiB)"
    );

    // A page of those rows stops at the byte budget instead of reading 200 MiB.
    let resp = app
        .http
        .get(format!("{}/jobs?state=waiting&limit=1000000", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["lanes-truncated"], "true");
    let page: Vec<serde_json::Value> = resp.json().await.unwrap();
    assert!(page.len() < 1000 && !page.is_empty(), "{} rows", page.len());
    let after_page = rss_mib(server);
    assert!(
        after_page < SERVER_MIB,
        "server RSS {after_page:.0} MiB after a page over large rows (bound {SERVER_MIB} MiB)"
    );

    // An exec task that prints 200 MiB keeps 1 MiB of it.
    let loud = json!({"task": "exec", "args": {"program": "sh",
        "args": ["-c", "head -c 209715200 /dev/zero | tr '\\000' 'a'; echo; echo done"]}});
    app.publish(loud.to_string().as_bytes(), Some("loud")).await;
    let id = lanes::protocol::job_id_from_message_id("loud");
    let worker = app.workers[0].id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut worker_peak: f64 = 0.0;
    let job = loop {
        worker_peak = worker_peak.max(rss_mib(worker));
        let job = app.get_json(&format!("/jobs/{id}")).await.unwrap();
        if job["state"] == "completed" || job["state"] == "failed" {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the loud task did not end: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"]["stdout_truncated_at"], 1 << 20);
    assert!(
        worker_peak < WORKER_MIB,
        "worker RSS {worker_peak:.0} MiB while a task printed 200 MiB (bound {WORKER_MIB} MiB)"
    );
    println!("server peak {peak:.0} MiB, after a page {after_page:.0} MiB, worker peak {worker_peak:.0} MiB");
}
