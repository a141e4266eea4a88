//! Processes of many workers (`lanes worker --workers N`): each worker is its own worker to the
//! server, a lane's standby runs in another process than its owner, and when a whole process
//! dies its lanes go on in the other one, and all its workers are dropped as soon as one is
//! found dead.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{eventually, Opts, TestApp},
};
use serde_json::Value;
use std::{collections::BTreeMap, time::Duration};

/// Each lane's owner pid and standby pid, as `GET /workers` shows them.
async fn lane_pids(app: &TestApp) -> BTreeMap<String, (Option<u64>, Option<u64>)> {
    let ws = app.get_json("/workers").await.unwrap();
    let mut lanes: BTreeMap<String, (Option<u64>, Option<u64>)> = BTreeMap::new();
    for w in ws.as_array().unwrap() {
        let pid = w["pid"].as_u64();
        let names = |key: &str| -> Vec<String> {
            w[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        for lane in names("assigned") {
            lanes.entry(lane).or_default().0 = pid;
        }
        for lane in names("standby") {
            lanes.entry(lane).or_default().1 = pid;
        }
    }
    lanes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_of_many_workers_dies_and_its_lanes_go_on_in_the_other() {
    let mut log = ExecLog::new("many_workers_process_dies");
    // A heartbeat timeout the test never reaches: the dead process's workers must be found
    // by their connections.
    let mut env = worker_env();
    env.push(("LANES_HEARTBEAT_TIMEOUT_MS".into(), "120000".into()));
    let mut app = TestApp::with(Opts {
        workers: 0,
        max_queues: 8,
        concurrency: 2,
        env,
        ..Opts::default()
    })
    .await;
    app.start_workers_process(3);
    app.start_workers_process(3);
    app.wait_workers(6).await;
    let ws = app.get_json("/workers").await.unwrap();
    let ws = ws.as_array().unwrap();
    let pids: BTreeMap<u64, usize> = ws.iter().fold(BTreeMap::new(), |mut by, w| {
        *by.entry(w["pid"].as_u64().unwrap()).or_default() += 1;
        by
    });
    assert_eq!(
        pids.values().copied().collect::<Vec<_>>(),
        vec![3, 3],
        "two processes of three workers each, each worker on its own: {ws:?}"
    );

    // Work on more resources than lanes opens them all; each lane's standby runs in the
    // other process (ids alone would often pair two workers of one process).
    app.publish_many(&log.workload(160, 16, 80)).await;
    let lanes = eventually(
        Duration::from_secs(30),
        "8 lanes with owner and standby",
        || async {
            let lanes = lane_pids(&app).await;
            (lanes.len() == 8 && lanes.values().all(|(o, s)| o.is_some() && s.is_some()))
                .then_some(lanes)
        },
    )
    .await;
    for (lane, (owner, standby)) in &lanes {
        assert_ne!(owner, standby, "{lane}: owner and standby in one process");
    }
    // Each worker consumes what it was given, standbys included: a lane whose owner dies
    // before its standby subscribed waits for the heartbeat timeout.
    app.wait_workers(6).await;

    // The first process dies whole, mid-work: nothing is lost, nothing overlaps, every
    // resource keeps its order, and its workers are dropped (the first found dead by a task
    // it held, the others as its process's) and the survivors own every lane, long before any
    // heartbeat timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.kill_worker(0);
    let rows = app.wait_final(160, Duration::from_secs(120)).await;
    log.assert_kept(&rows);
    assert!(rows.iter().all(|r| r.state == "completed"), "{rows:?}");
    let survivor = u64::from(app.workers[1].id());
    eventually(
        Duration::from_secs(30),
        "only the survivors, owning every lane",
        || async {
            let ws = app.get_json("/workers").await.ok()?;
            let alone = ws
                .as_array()?
                .iter()
                .all(|w| w["pid"].as_u64() == Some(survivor));
            let lanes = lane_pids(&app).await;
            (alone && lanes.values().all(|(o, _)| *o == Some(survivor))).then_some(())
        },
    )
    .await;
}

#[test]
fn a_process_whose_workers_cannot_connect_says_why_and_exits() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanes"))
        .args(["worker", "--workers", "3"])
        .env("LANES_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success(), "it exits non-zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach RabbitMQ"), "{err}");
    assert!(!err.contains("guest:guest"), "no password printed: {err}");
}
