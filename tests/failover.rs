//! Failover, measured: SIGKILL the owner of a busy lane twenty times and time how long the
//! lane takes to run its next task on another worker (owners have hot standbys, so this should
//! be milliseconds, not the heartbeat timeout). The figures are printed and written to
//! `target/tmp/failover.json`; what is asserted, from the tasks' own execution log
//! (`it/execlog.rs`), is that nothing is lost, overlaps, or runs out of order.
//! Its own target: the kills are timed, so they should not share the machine with other tests.

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

use chrono::Utc;
use execlog::{worker_env, ExecLog};
use helpers::{Opts, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn failover_after_sigkill_is_measured() {
    let kills = 20;
    let mut log = ExecLog::new("failover");
    let mut app = TestApp::with(Opts {
        workers: 3,
        max_queues: 6,
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    let mut samples = Vec::new();
    let mut total = 0;
    for round in 0..kills {
        app.wait_workers(3).await;
        tokio::time::sleep(Duration::from_millis(500)).await; // standbys subscribe after 300 ms
                                                              // Six resources over six lanes: every lane has a line of work.
        let work = log.workload(60, 6, 15);
        total += work.len();
        app.publish_many(&work).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let Value::Array(ws) = app.get_json("/workers").await.unwrap() else {
            panic!()
        };
        // Only a worker of ours that is registered and alive (a dead one lingers until its
        // heartbeat times out).
        let live: Vec<&Value> = ws
            .iter()
            .filter(|w| {
                app.workers
                    .iter()
                    .any(|c| Some(c.id() as u64) == w["pid"].as_u64())
            })
            .collect();
        let victim = live[round % live.len()];
        let pid = victim["pid"].as_u64().unwrap() as u32;
        let lanes: Vec<String> = victim["assigned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect();
        let i = app.workers.iter().position(|c| c.id() == pid).unwrap();
        let at = Utc::now();
        app.kill_worker(i);
        let _ = app.workers.remove(i).wait();
        let rows = app.wait_final(total, Duration::from_secs(120)).await;
        for lane in &lanes {
            let next = rows
                .iter()
                .filter(|r| r.queue.as_deref() == Some(lane.as_str()))
                .filter(|r| r.worker.as_deref() != victim["id"].as_str())
                .filter_map(|r| r.started_at.filter(|s| *s > at))
                .min();
            if let Some(next) = next {
                samples.push((next - at).num_milliseconds());
            }
        }
        app.start_worker();
    }
    let rows = app.wait_final(total, Duration::from_secs(120)).await;
    let bad: Vec<_> = rows.iter().filter(|r| r.state != "completed").collect();
    assert!(bad.is_empty(), "jobs not completed: {bad:?}");
    let kept = log.assert_kept(&rows);
    samples.sort();
    let report = json!({
        "kills": kills, "samples": samples.len(),
        "median_ms": samples[samples.len() / 2], "p90_ms": samples[samples.len() * 9 / 10],
        "worst_ms": samples.last(), "redelivered": rows.iter().filter(|r| r.attempts > 1).count(),
        "runs": kept.started + kept.extra_runs, "extra_runs": kept.extra_runs,
    });
    eprintln!("failover: {report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/failover.json"),
        report.to_string(),
    );
}
