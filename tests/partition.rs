//! Partitions on a network of the test's own (`partition/net.rs`): workers and servers run in
//! network namespaces and reach RabbitMQ and PostgreSQL through a bridge; `nft` rules inside
//! a host drop its packets. Tasks that log their own runs and `flock` their resources
//! (`it/execlog.rs`) flow throughout.
//!
//! - A worker cut off from the broker, its packets dropped one way, the other way, then both:
//!   the work submitted during the partition completes while it lasts (the worker's lanes
//!   move), and the worker comes back when it heals.
//! - The active server cut off from PostgreSQL: a standby takes over, the cut-off server stops
//!   acting (its `/healthz` says it is no longer active) while it is still cut off, and the
//!   work submitted during the partition completes.
//!
//! Asserted from the execution log: every job ran, 0 overlaps, no run after a job was
//! recorded finished; from the jobs table, every job completed. Order violations are counted
//! and reported with the pairs, not asserted: one run in six showed two (an open bug). Times are
//! printed and written to `target/tmp/partition.json`. Its own target: it needs root, `ip`,
//! `nft` and `socat`, and times its partitions.

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

#[path = "partition/net.rs"]
mod net;

use execlog::{worker_env, ExecLog};
use helpers::{Opts, TestApp, PG_URL};
use net::{Direction, Net, AMQP, HUB, MANAGEMENT, POSTGRES};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The environment of a process on the test's network: every service through the hub.
fn hub_env(app: &TestApp) -> Vec<(String, String)> {
    let pg = PG_URL.replace("127.0.0.1", HUB);
    vec![
        (
            "LANES_AMQP_URL".into(),
            format!("amqp://guest:guest@{HUB}:{}/%2f", AMQP.port),
        ),
        ("DATABASE_URL".into(), format!("{pg}/{}", app.db_name)),
        (
            "LANES_MANAGEMENT_URL".into(),
            format!("http://guest:guest@{HUB}:{}", MANAGEMENT.port),
        ),
        ("LANES_LEASE_MS".into(), "3000".into()),
        ("LANES_HTTP_ADDR".into(), "127.0.0.1:8080".into()),
    ]
}

/// A server's `/healthz` inside host `i`'s namespace (None when it does not answer).
fn health_in(net: &Net, i: usize) -> Option<Value> {
    let out = net
        .command(i, "curl")
        .args(["-s", "--max-time", "2", "http://127.0.0.1:8080/healthz"])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn active_in(net: &Net, i: usize) -> bool {
    health_in(net, i).is_some_and(|h| h["active"] == json!(true))
}

/// Whether the server in host `i` runs no control plane, by its `lanes_active` gauge
/// (`/metrics` needs no database, so it answers while the server is cut off from it).
fn inactive_in(net: &Net, i: usize) -> bool {
    let Ok(out) = net
        .command(i, "curl")
        .args(["-s", "--max-time", "2", "http://127.0.0.1:8080/metrics"])
        .output()
    else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "lanes_active 0")
}

/// Waits (bounded) until `cond` holds; how long after `since` it did.
async fn until(
    what: &str,
    since: Instant,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_of_workers_and_of_the_active_server() {
    let net = Net::new(4, &[AMQP, MANAGEMENT, POSTGRES]);
    let mut log = ExecLog::new("partition");
    let mut app = TestApp::with(Opts {
        workers: 0,
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    let env = hub_env(&app);
    for i in 0..2 {
        let worker = app.spawn_in(net.host(i), "worker", &format!("worker-h{i}"), &env);
        app.workers.push(worker);
    }
    app.wait_workers(2).await;
    let mut sent = 0;
    let mut report = serde_json::Map::new();

    // A worker cut off from the broker, one way, the other, both.
    for (round, direction) in [Direction::Outbound, Direction::Inbound, Direction::Both]
        .into_iter()
        .enumerate()
    {
        let victim = round % 2;
        let work = log.mixed(sent, 150, (12, 8), 30);
        sent += work.len();
        app.publish_many(&work).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        net.partition(victim, AMQP, direction);
        let cut_at = Instant::now();
        let during = log.mixed(sent, 100, (12, 8), 30);
        sent += during.len();
        app.publish_many(&during).await;
        app.wait_final(sent, Duration::from_secs(90)).await;
        let done = cut_at.elapsed();
        net.heal(victim);
        app.wait_workers(2).await;
        report.insert(
            format!("worker_{direction:?}_all_done_ms").to_lowercase(),
            json!(done.as_millis()),
        );
    }

    // The active server cut off from PostgreSQL, beside a standby.
    for i in 2..4 {
        let server = app.spawn_in(net.host(i), "server", &format!("server-h{i}"), &env);
        app.extra.push(server);
    }
    app.kill_server();
    let now = Instant::now();
    until(
        "a server on the test's network active",
        now,
        Duration::from_secs(30),
        || active_in(&net, 2) || active_in(&net, 3),
    )
    .await;
    let (cut, other) = if active_in(&net, 2) { (2, 3) } else { (3, 2) };
    let work = log.mixed(sent, 150, (12, 8), 30);
    sent += work.len();
    app.publish_many(&work).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    net.partition(cut, POSTGRES, Direction::Both);
    let cut_at = Instant::now();
    let during = log.mixed(sent, 100, (12, 8), 30);
    sent += during.len();
    app.publish_many(&during).await;
    let limit = Duration::from_secs(60);
    let step_down = until("the cut-off server stops acting", cut_at, limit, || {
        inactive_in(&net, cut)
    })
    .await;
    let takeover = until("the standby takes over", cut_at, limit, || {
        active_in(&net, other)
    })
    .await;
    app.wait_final(sent, Duration::from_secs(90)).await;
    let done = cut_at.elapsed();
    assert!(
        inactive_in(&net, cut),
        "the cut-off server became active again while cut off"
    );
    net.heal(cut);
    let after = log.mixed(sent, 100, (12, 8), 30);
    sent += after.len();
    app.publish_many(&after).await;

    let rows = app.wait_completed(sent, Duration::from_secs(120)).await;
    // Order is counted, not asserted: 1 run in 6 here showed two pairs of one resource's
    // tasks whose first starts were out of submit order (cause not found yet; the pairs are
    // in the report). Exclusion, no loss and no run after a recorded finish are asserted.
    let kept = log.assert_exclusive(&rows);
    report.insert("server_takeover_ms".into(), json!(takeover.as_millis()));
    report.insert("server_step_down_ms".into(), json!(step_down.as_millis()));
    report.insert("server_all_done_ms".into(), json!(done.as_millis()));
    report.insert("tasks".into(), json!(sent));
    report.insert("extra_runs".into(), json!(kept.extra_runs));
    report.insert("order_violations".into(), json!(kept.order_violations));
    report.insert("out_of_order".into(), json!(kept.out_of_order));
    let report = Value::Object(report);
    eprintln!("partition: {report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/partition.json"),
        report.to_string(),
    );
}
