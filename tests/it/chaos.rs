//! Chaos: thousands of tasks over ~100 resources while a bounded loop SIGKILLs random workers
//! and starts new ones. Nothing lost, nothing stuck, and from the tasks' own execution log
//! (`execlog`): no overlap, order held, nothing run after it finished. It also measures failover: for
//! every lane a killed worker owned, the time from the SIGKILL to the lane's next task starting
//! on another worker (printed and written to `target/tmp/chaos.json`, never asserted).

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{assert_completed_in_order, order_violations, Opts, TestApp},
};
use chrono::Utc;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn random_worker_kills_lose_nothing_and_keep_order() {
    let (tasks, resources, kills) = (2000, 100, 12);
    let mut log = ExecLog::new("worker-kills");
    let mut app = TestApp::with(Opts {
        workers: 4,
        max_queues: 8,
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    app.publish_many(&log.workload(tasks, resources, 8)).await;
    let mut killed = Vec::new();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let Ok(Value::Array(ws)) = app.get_json("/workers").await else {
            continue;
        };
        let live: Vec<&Value> = ws
            .iter()
            .filter(|w| {
                app.workers
                    .iter()
                    .any(|c| Some(c.id()) == w["pid"].as_u64().map(|p| p as u32))
            })
            .collect();
        if live.is_empty() {
            continue;
        }
        let victim = live[(Utc::now().timestamp_subsec_nanos() as usize + k) % live.len()];
        let pid = victim["pid"].as_u64().unwrap() as u32;
        let i = app.workers.iter().position(|c| c.id() == pid).unwrap();
        let at = Utc::now();
        app.kill_worker(i);
        let _ = app.workers.remove(i).wait();
        killed.push((
            at,
            victim["id"].as_str().unwrap().to_owned(),
            victim["assigned"].clone(),
        ));
        app.start_worker();
    }
    let rows = app.wait_final(tasks, Duration::from_secs(300)).await;
    let lost = tasks - rows.len();
    let stuck = rows.iter().filter(|r| r.state != "completed").count();
    let violations = order_violations(&rows);
    assert_eq!(lost, 0);
    assert_completed_in_order(&rows);
    let from_log = log.assert_kept(&rows);

    let mut failover_ms = Vec::new();
    for (at, worker, lanes) in &killed {
        for lane in lanes.as_array().unwrap() {
            let next = rows
                .iter()
                .filter(|r| {
                    r.queue.as_deref() == lane.as_str() && r.worker.as_deref() != Some(worker)
                })
                .filter_map(|r| r.started_at.filter(|s| s > at))
                .min();
            if let Some(next) = next {
                failover_ms.push((next - *at).num_milliseconds());
            }
        }
    }
    failover_ms.sort();
    let median = failover_ms.get(failover_ms.len() / 2).copied();
    let report = json!({
        "tasks": tasks, "resources": resources, "kills": killed.len(), "lost": lost, "stuck": stuck,
        "order_violations": violations, "redelivered": rows.iter().filter(|r| r.attempts > 1).count(),
        "failover_samples": failover_ms.len(), "failover_median_ms": median,
        "failover_worst_ms": failover_ms.last(), "log": from_log,
    });
    eprintln!("chaos: {report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/chaos.json"),
        report.to_string(),
    );
}
