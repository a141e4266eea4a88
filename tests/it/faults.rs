//! Real faults: SIGKILL and SIGTERM of workers, joins under load, server crashes and
//! failover to a standby, poison tasks. Nothing may be lost, stuck, or run out of order.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{assert_completed_in_order, submit, Opts, TestApp},
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn owners(app: &TestApp) -> Vec<(String, Vec<String>)> {
    let ws = app.get_json("/workers").await.unwrap();
    ws.as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let lanes = w["assigned"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_owned())
                .collect();
            (w["id"].as_str().unwrap().to_owned(), lanes)
        })
        .collect()
}

async fn wait_for<F: Fn(&Value) -> bool>(app: &TestApp, path: &str, what: &str, ok: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(v) = app.get_json(path).await {
            if ok(&v) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_a_worker_mid_workload_loses_nothing() {
    let mut log = ExecLog::new("sigkill_a_worker_mid_wor");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 3,
        max_queues: 6,
        ..Opts::default()
    })
    .await;
    app.publish_many(&log.workload(150, 15, 60)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = app.workers[0].id();
    let killed_lanes: Vec<String> = {
        let ws = app.get_json("/workers").await.unwrap();
        let w = ws
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["pid"] == json!(pid))
            .unwrap()
            .clone();
        w["assigned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    };
    app.kill_worker(0);
    let rows = app.wait_final(150, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
    assert!(
        rows.iter().any(|r| r.attempts == 2),
        "the killed worker's in-flight task ran again"
    );
    // The standbys ran the lanes at once; the registry notices the death at the timeout.
    wait_for(
        &app,
        "/workers",
        "the dead worker to leave the registry",
        |v| v.as_array().is_some_and(|ws| ws.len() == 2),
    )
    .await;
    let after = owners(&app).await;
    for lane in &killed_lanes {
        assert!(
            after.iter().any(|(_, lanes)| lanes.contains(lane)),
            "{lane} has a new owner"
        );
    }
    // Every open lane has an owner (the pool may have grown under the workload).
    let queues = app.get_json("/queues").await.unwrap();
    let open = queues["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.get("unfinished").is_some())
        .count();
    assert_eq!(open, after.iter().map(|(_, l)| l.len()).sum::<usize>());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_worker_without_redelivery() {
    let mut log = ExecLog::new("sigterm_drains_a_worker_");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    app.publish_many(&log.workload(60, 8, 80)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let code = app.term_worker(0).await;
    assert_eq!(code, Some(0), "a drained worker exits 0");
    let rows = app.wait_final(60, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
    assert!(rows.iter().all(|r| r.attempts == 1), "no task ran twice");
    wait_for(&app, "/workers", "one worker owning every lane", |v| {
        v.as_array()
            .is_some_and(|ws| ws.len() == 1 && ws[0]["assigned"].as_array().unwrap().len() == 6)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_the_server_and_every_worker_at_once_stops_all_and_loses_nothing() {
    let mut log = ExecLog::new("sigterm_to_the_server_an");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    app.publish_many(&log.workload(60, 8, 40)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let codes = app.term_all().await;
    assert!(
        codes.iter().all(|c| *c == Some(0)),
        "every process exits 0: {codes:?}"
    );
    // The next fleet finishes what the stopped one left, in order.
    app.start_server();
    app.wait_healthy().await;
    app.start_worker();
    app.start_worker();
    let rows = app.wait_final(60, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_over_http_moves_lanes_away() {
    let mut log = ExecLog::new("drain_over_http_moves_la");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    app.publish_many(&log.workload(40, 8, 50)).await;
    let ws = app.get_json("/workers").await.unwrap();
    let id = ws[0]["id"].as_str().unwrap().to_owned();
    let resp = app
        .http
        .post(format!("{}/workers/{id}/drain", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let resp = app
        .http
        .post(format!("{}/workers/nope/drain", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let rows = app.wait_final(40, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
    // Each ran once (the log says so above). A drain costs no attempt, but for one known race
    // (ARCHITECTURE.md, Known limits): the first task of a lane handed over may count one.
    let recounted: Vec<_> = rows.iter().filter(|r| r.attempts != 1).collect();
    assert!(
        recounted.len() <= 1 && recounted.iter().all(|r| r.attempts == 2),
        "a drain costs no attempt: {recounted:?}"
    );
    if let Some(r) = recounted.first() {
        eprintln!("the known race: {} counted twice", r.id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let exited = loop {
        let mut any = None;
        for (i, w) in app.workers.iter_mut().enumerate() {
            if let Some(s) = w.try_wait().unwrap() {
                any = Some((i, s.code()));
            }
        }
        if let Some(x) = any {
            break x;
        }
        assert!(Instant::now() < deadline, "the drained worker did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(exited.1, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_joining_under_load_get_lanes_and_order_holds() {
    let mut log = ExecLog::new("workers_joining_under_lo");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 1,
        max_queues: 6,
        ..Opts::default()
    })
    .await;
    // About 2 s of work per lane: it outlasts the new workers' start.
    app.publish_many(&log.workload(200, 20, 60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.start_worker();
    app.start_worker();
    let rows = app.wait_final(200, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
    let ws = owners(&app).await;
    assert_eq!(ws.len(), 3);
    assert!(
        ws.iter().all(|(_, lanes)| lanes.len() == 2),
        "lanes spread evenly: {ws:?}"
    );
    let workers: std::collections::HashSet<_> =
        rows.iter().filter_map(|r| r.worker.clone()).collect();
    assert!(workers.len() >= 2, "the new workers ran tasks");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_task_is_failed_after_max_attempts_and_its_lane_moves_on() {
    let mut app = TestApp::with(Opts {
        workers: 2,
        env: vec![("LANES_EXEC_ALLOW".into(), "sh".into())],
        ..Opts::default()
    })
    .await;
    let poison = json!({"task": "exec", "args": {"program": "sh", "args": ["-c", "kill -9 $PPID"]},
                        "resources": ["p"], "max_attempts": 2});
    app.publish(poison.to_string().as_bytes(), Some("poison"))
        .await;
    app.publish(&submit("echo", json!("next"), &["p"]), Some("next"))
        .await;
    // Keep the fleet alive: restart workers the poison task kills (bounded).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = app.rows().await;
        if rows.len() == 2
            && rows
                .iter()
                .all(|r| r.state == "completed" || r.state == "failed")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "poison task not resolved: {rows:?}"
        );
        app.replace_dead_workers();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = app.rows().await;
    let id = lanes::protocol::job_id_from_message_id;
    let poison = rows.iter().find(|r| r.id == id("poison")).unwrap();
    assert_eq!(poison.state, "failed");
    assert!(
        poison.error.as_deref().unwrap().contains("gave up"),
        "{poison:?}"
    );
    let next = rows.iter().find(|r| r.id == id("next")).unwrap();
    assert_eq!(next.state, "completed");
}

/// How many consumers of `worker` the management API lists.
async fn consumers_of(worker: &str) -> usize {
    let list: Value = reqwest::Client::new()
        .get("http://127.0.0.1:15672/api/consumers/%2f")
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prefix = format!("lanes-worker-{worker}/");
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["consumer_tag"]
                .as_str()
                .is_some_and(|t| t.starts_with(&prefix))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_worker_is_fenced_and_its_lanes_move_on() {
    let mut log = ExecLog::new("a_hung_worker_is_fenced_");
    let app = TestApp::with(Opts {
        env: worker_env(),
        workers: 3,
        ..Opts::default()
    })
    .await;
    app.publish_many(&log.workload(60, 6, 100)).await;
    let pid = app.workers[0].id();
    let ws = app.get_json("/workers").await.unwrap();
    let worker = ws
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"] == json!(pid))
        .unwrap();
    let hung = worker["id"].as_str().unwrap().to_owned();
    // The management API lists consumers a few seconds after they appear.
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumers_of(&hung).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker's consumers are not listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Stopped, not killed: its TCP connection stays open, so only fencing frees its lanes.
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
    };
    signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Fenced: the broker drops its channels (the connection itself lingers until the broker
    // gives up waiting for the stopped process to acknowledge the close).
    while consumers_of(&hung).await > 0 {
        assert!(Instant::now() < deadline, "the hung worker still consumes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = app.wait_final(60, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
    // Woken up, it finds its connection gone, drops what it ran, and comes back.
    signal("-CONT");
    wait_for(&app, "/workers", "the woken worker to rejoin", |v| {
        v.as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["id"] == json!(hung)))
    })
    .await;
    assert!(app.rows().await.iter().all(|r| r.state == "completed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_whose_lane_messages_vanish_are_dispatched_again() {
    // Prefetch 1 keeps the waiting tasks in the queue, where a purge can reach them.
    let app = TestApp::with(Opts {
        workers: 1,
        env: vec![("LANES_LANE_PREFETCH".into(), "1".into())],
        ..Opts::default()
    })
    .await;
    let sleep = |ms: u64| submit("sleep", json!({ "ms": ms }), &["x"]);
    app.publish(&sleep(1500), Some("long")).await;
    app.publish(&sleep(10), Some("next")).await;
    app.publish(&sleep(10), Some("last")).await;
    let id = lanes::protocol::job_id_from_message_id;
    // While the first runs, the other two wait in its lane (prefetch 1) — and an operator
    // purges that lane.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lane = loop {
        let rows = app.rows().await;
        let long = rows.iter().find(|r| r.id == id("long"));
        if let Some(long) = long.filter(|r| r.state == "running") {
            if rows.len() == 3 && rows.iter().all(|r| r.queue.is_some()) {
                break long.queue.clone().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "the first task did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ch = app.amqp.create_channel().await.unwrap();
    let purged = ch
        .queue_purge(lane.as_str().into(), Default::default())
        .await
        .unwrap();
    assert_eq!(purged, 2, "the two waiting tasks' messages are gone");
    let rows = app.wait_final(3, Duration::from_secs(60)).await;
    assert_completed_in_order(&rows);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("lanes_jobs_reconciled_total 2"));
}
