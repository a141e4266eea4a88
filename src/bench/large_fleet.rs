//! How far the fleet goes (`lanes bench --fleet 100,500,1000,2000`): for each size, one server
//! and that many workers in processes of many workers each (`lanes worker --workers`), on the
//! bench's own prefix and database.
//!
//! For each size it reports:
//! - how long until every worker is live (from the first process spawned to the server listing
//!   them all);
//! - over a quiet window, the longest any live worker went unheard
//!   (`lanes_workers_longest_silence_seconds`, sampled), the workers timed out (each is also
//!   fenced), the server's CPU and memory per worker, the worker processes' memory per worker,
//!   and the broker's connections, channels and memory per worker;
//! - then, while tasks of 100 ms run on 200 resources, a quarter of the worker processes is
//!   SIGKILLed: how soon the server has dropped them, whether every task still completed, how
//!   many ran again, the longest a lane stood still (and the median lane's longest), and
//!   whether any task on a resource started before the one submitted ahead of it had ended.

use super::{
    fleet::{cleanup, run_names, Fleet},
    proc,
    scale::{get, wait_consumed, Broker},
    submit::{bar, submit_all},
    workload::{last_seq, wait_for},
    BenchArgs, BenchError,
};
use chrono::{DateTime, Utc};
use lanes::broker::{self, Publisher, Topology};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Resources the tasks of the kill run are spread over, and tasks on each.
const RESOURCES: usize = 200;
const TASKS_EACH: usize = 20;
const TASK_MS: u64 = 100;
/// The quiet window the steady figures are taken over.
const QUIET: Duration = Duration::from_secs(20);

pub(super) async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut rows = Vec::new();
    for &size in &args.fleet {
        let row = one_size(args, &http, size.max(4)).await?;
        if !args.json {
            eprintln!("{row}");
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    println!(
        "\nlanes bench --fleet (worker processes of up to {} workers)",
        args.fleet_process
    );
    println!(
        "  workers  live in s  longest silence s  timed out  server CPU %/1k  server KB/worker  worker MB/worker  broker conns/ch per worker  broker KB/worker"
    );
    for r in &rows {
        println!(
            "  {:>7}  {:>9}  {:>17}  {:>9}  {:>15}  {:>16}  {:>16}  {:>14} / {:<9}  {:>16}",
            r["workers"],
            r["live_secs"],
            r["longest_silence_secs"],
            r["timed_out"],
            r["server_cpu_percent_per_1000"],
            r["server_kb_per_worker"],
            r["worker_mb_per_worker"],
            r["broker_connections_per_worker"],
            r["broker_channels_per_worker"],
            r["broker_kb_per_worker"],
        );
    }
    println!("\n  a quarter SIGKILLed while {RESOURCES}×{TASKS_EACH} tasks of {TASK_MS} ms ran:");
    println!("  workers  killed  dropped in s  completed  failed  ran again  out of order  longest stall ms (p50)");
    for r in &rows {
        let k = &r["kill"];
        println!(
            "  {:>7}  {:>6}  {:>12}  {:>9}  {:>6}  {:>9}  {:>12}  {:>8} ({})",
            r["workers"],
            k["killed"],
            k["dropped_secs"],
            k["completed"],
            k["failed"],
            k["ran_again"],
            k["out_of_order"],
            k["longest_stall_ms"],
            k["p50_stall_ms"],
        );
    }
    Ok(())
}

/// One fleet of `size` workers: up, quiet, a quarter killed under load, down.
async fn one_size(
    args: &BenchArgs,
    http: &reqwest::Client,
    size: usize,
) -> Result<Value, BenchError> {
    // At least four processes, so that a quarter of them is a quarter of the workers.
    let each = args.fleet_process.clamp(1, size / 4);
    let processes = size.div_ceil(each);
    let size = processes * each;
    let (prefix, db) = run_names();
    let conn = broker::connect(&args.amqp_url, "lanes-bench", &Default::default()).await?;
    let alone = BenchArgs {
        workers: 0,
        ..args.clone()
    };
    let mut fleet = Fleet::start_with(&alone, &prefix, &db, Vec::new())?;
    let outcome = async {
        let api = format!("http://{}", fleet.http);
        wait_live(http, &api, 0, Duration::from_secs(60)).await?;
        let bare = Broker::measure(http, &args.management_url).await?;
        let bare_totals = totals(http, &args.management_url).await?;
        let server_bare = proc::memory_mb(fleet.server_pid(), "VmRSS:").unwrap_or(0.0);

        let spawned = Instant::now();
        fleet.spawn_processes(processes, each)?;
        wait_live(http, &api, size, Duration::from_secs(300)).await?;
        let live_secs = spawned.elapsed().as_secs_f64();

        // Quiet: the joins' rebalances are over, the broker's statistics caught up.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let timed_out_before = metric(http, &api, "lanes_workers_timed_out_total").await?;
        let cpu_before = proc::cpu_ticks(fleet.server_pid()).unwrap_or(0);
        let started = Instant::now();
        let mut longest: f64 = 0.0;
        let mut fewest = size;
        while started.elapsed() < QUIET {
            longest =
                longest.max(metric(http, &api, "lanes_workers_longest_silence_seconds").await?);
            fewest = fewest.min(live(http, &api).await?);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let cpu = (proc::cpu_ticks(fleet.server_pid()).unwrap_or(0) - cpu_before) as f64
            / started.elapsed().as_secs_f64();
        let timed_out =
            metric(http, &api, "lanes_workers_timed_out_total").await? - timed_out_before;
        let server_rss = proc::memory_mb(fleet.server_pid(), "VmRSS:").unwrap_or(0.0);
        let workers_rss: f64 = fleet
            .worker_pids()
            .into_iter()
            .filter_map(|pid| proc::memory_mb(pid, "VmRSS:"))
            .sum();
        let carried = Broker::measure(http, &args.management_url).await?;
        let carried_totals = totals(http, &args.management_url).await?;

        let pool = PgPool::connect(&format!("{}/{db}", args.postgres)).await?;
        let publisher = Publisher::new(&conn).await?;
        let kill = kill_a_quarter(
            args, &mut fleet, http, &api, &pool, &publisher, &prefix, processes, each,
        )
        .await?;

        let per = |x: f64| x / size as f64;
        Ok::<_, BenchError>(json!({
            "workers": size, "processes": processes, "workers_per_process": each,
            "live_secs": round(live_secs, 1),
            "longest_silence_secs": round(longest, 2),
            "fewest_live": fewest,
            "timed_out": timed_out,
            "server_cpu_percent": round(cpu, 1),
            "server_cpu_percent_per_1000": round(cpu * 1000.0 / size as f64, 1),
            "server_rss_mb": round(server_rss, 1),
            "server_kb_per_worker": round(per((server_rss - server_bare) * 1024.0), 1),
            "worker_mb_per_worker": round(per(workers_rss), 2),
            "broker_connections_per_worker": round(per(carried_totals.0 - bare_totals.0), 2),
            "broker_channels_per_worker": round(per(carried_totals.1 - bare_totals.1), 2),
            "broker_kb_per_worker": round(per((carried.memory - bare.memory) / 1e3), 1),
            "broker_idle_cpu_percent": carried.cpu.map(|c| round(c, 1)),
            "kill": kill,
        }))
    }
    .await;
    fleet.stop();
    cleanup(&conn, &prefix, &args.postgres, &db).await;
    outcome
}

/// Submits the tasks, SIGKILLs a quarter of the processes once a quarter of the tasks has
/// completed, and checks what the survivors made of it.
#[allow(clippy::too_many_arguments)]
async fn kill_a_quarter(
    args: &BenchArgs,
    fleet: &mut Fleet,
    http: &reqwest::Client,
    api: &str,
    pool: &PgPool,
    publisher: &Publisher,
    prefix: &str,
    processes: usize,
    each: usize,
) -> Result<Value, BenchError> {
    let n = RESOURCES * TASKS_EACH;
    let run = Uuid::new_v4().simple().to_string();
    // One task per resource first: the lanes they need open, and get their owners and
    // standbys, before anything is measured.
    let base = last_seq(pool).await?;
    let warm = (0..RESOURCES).map(|i| {
        let body = json!({"task": "noop", "resources": [format!("fleet:{}:{i}", &run[..8])]});
        (Uuid::now_v7(), serde_json::to_vec(&body).expect("json"))
    });
    submit_all(publisher, &Topology::new(prefix), warm).await?;
    let hidden = bar(RESOURCES as u64, "lanes opening", true);
    wait_for(pool, base, Some("completed"), RESOURCES as i64, &hidden).await?;
    let open = metric(http, api, "lanes_lanes_open").await? as u32;
    wait_consumed(http, &args.management_url, prefix, open).await?;

    let base = last_seq(pool).await?;
    let jobs = (0..n).map(|i| {
        let body = json!({"task": "sleep", "args": {"ms": TASK_MS},
                          "resources": [format!("fleet:{}:{}", &run[..8], i % RESOURCES)]});
        (Uuid::now_v7(), serde_json::to_vec(&body).expect("json"))
    });
    submit_all(publisher, &Topology::new(prefix), jobs).await?;
    let quarter = bar(n as u64 / 4, "a quarter done", true);
    wait_for(pool, base, Some("completed"), n as i64 / 4, &quarter).await?;
    let killed_processes = processes / 4;
    let live_before = live(http, api).await?;
    let killed_at: DateTime<Utc> = Utc::now();
    let kill = Instant::now();
    fleet.kill_processes(killed_processes);
    let left = live_before - killed_processes * each;
    wait_live(http, api, left, Duration::from_secs(60)).await?;
    let dropped = kill.elapsed().as_secs_f64();
    let progress = bar(n as u64, "the rest, after the kill", args.json);
    wait_for(pool, base, Some("completed"), n as i64, &progress).await?;
    progress.finish_and_clear();
    let (completed, failed, ran_again): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state = 'failed'),
                coalesce(sum(attempts - 1), 0) FROM jobs WHERE seq > $1",
    )
    .bind(base)
    .fetch_one(pool)
    .await?;
    // Per resource, in submit order: a start before the previous job's end is out of order.
    let (out_of_order,): (i64,) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE started_at < prev) FROM (
             SELECT started_at, lag(finished_at) OVER (PARTITION BY resources[1] ORDER BY seq) AS prev
             FROM jobs WHERE seq > $1) steps",
    )
    .bind(base)
    .fetch_one(pool)
    .await?;
    // Per lane, in the order its tasks ran: the gap from one task's end to the next one's
    // start is how long the lane stood still; a lane whose owner died stands still until its
    // standby runs it.
    let (longest, p50): (Option<f64>, Option<f64>) = sqlx::query_as(
        "WITH steps AS (
             SELECT queue, started_at,
                    lag(finished_at) OVER (PARTITION BY queue ORDER BY started_at) AS prev
             FROM jobs WHERE seq > $1 AND queue IS NOT NULL),
         worst AS (
             SELECT queue, max(extract(epoch FROM started_at - prev)) * 1000 AS ms
             FROM steps WHERE prev IS NOT NULL GROUP BY queue)
         SELECT max(ms)::float8, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::float8 FROM worst",
    )
    .bind(base)
    .fetch_one(pool)
    .await?;
    Ok(json!({
        "killed": killed_processes * each, "killed_at": killed_at.to_rfc3339(),
        "dropped_secs": round(dropped, 2),
        "tasks": n, "completed": completed, "failed": failed, "ran_again": ran_again,
        "out_of_order": out_of_order,
        "longest_stall_ms": longest.map(|x| round(x, 0)),
        "p50_stall_ms": p50.map(|x| round(x, 0)),
    }))
}

/// Waits until the server lists exactly `n` live workers (for 0: until it answers).
async fn wait_live(
    http: &reqwest::Client,
    api: &str,
    n: usize,
    within: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if live(http, api).await.is_ok_and(|live| live == n) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let now = live(http, api).await.unwrap_or(0);
    Err(BenchError::Stalled(format!(
        "{now} workers live, not {n}, after {} s",
        within.as_secs()
    )))
}

/// The live workers the server lists.
async fn live(http: &reqwest::Client, api: &str) -> Result<usize, BenchError> {
    let workers: Value = http
        .get(format!("{api}/workers"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(workers.as_array().map_or(0, Vec::len))
}

/// One unlabelled series of the server's `/metrics` (0 if absent).
async fn metric(http: &reqwest::Client, api: &str, name: &str) -> Result<f64, BenchError> {
    let text = http
        .get(format!("{api}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// The broker's connections and channels, from its management API.
async fn totals(http: &reqwest::Client, management: &str) -> Result<(f64, f64), BenchError> {
    let overview: Value = get(http, management, "/api/overview").await?.json().await?;
    let t = &overview["object_totals"];
    Ok((
        t["connections"].as_f64().unwrap_or(0.0),
        t["channels"].as_f64().unwrap_or(0.0),
    ))
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}
