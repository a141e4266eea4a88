//! Scaling with the fleet, two measurements of their own (`lanes bench --slow N`,
//! `lanes bench --pool-lanes 64,256,1024`):
//!
//! - **Slow work on more workers**: N tasks of `--slow-ms` on N distinct resources, drained by
//!   `--workers` workers, then by four times as many, in the same run. The lane pool follows the
//!   live workers' slots, so the second drain should take about a quarter of the time.
//! - **What lanes cost the broker**: for each pool size, a fleet whose pool is held at that
//!   size (every lane with its owner and its standby consuming), the broker's memory (its
//!   management API) and idle CPU (its `beam.smp` process, when it runs on this machine),
//!   against the same broker before the fleet started.

use super::{
    fleet::{cleanup, run_names, Fleet},
    submit::{bar, submit_all},
    workload::{last_seq, wait_for},
    BenchArgs, BenchError,
};
use chrono::{DateTime, Utc};
use lanes::broker::{self, Publisher, Topology};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// The largest pool measured (and the lanes a run's clean-up deletes).
pub(super) const MOST_LANES: u32 = 2048;

pub(super) async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let mut report = json!({});
    if args.slow > 0 {
        report["slow"] = slow(args).await?;
    }
    if !args.pool_lanes.is_empty() {
        report["pool"] = pool_cost(args).await?;
    }
    if args.json {
        println!("{report}");
        return Ok(());
    }
    if let Some(s) = report.get("slow") {
        println!(
            "\nlanes bench --slow {} ({} ms each, one resource each)",
            args.slow, args.slow_ms
        );
        println!(
            "  {:>3} workers ({:>3} slots)  drained in {:>6.2} s",
            s["workers"], s["slots"], s["secs"]
        );
        println!(
            "  {:>3} workers ({:>3} slots)  drained in {:>6.2} s   {:.2}× faster",
            s["more_workers"], s["more_slots"], s["more_secs"], s["speedup"]
        );
    }
    if let Some(Value::Array(rows)) = report.get("pool") {
        println!("\nwhat lanes cost the broker (an owner and a standby on each)");
        println!("  lanes   memory MB   per lane KB   idle CPU %   tasks/s");
        for r in rows {
            println!(
                "  {:>5}   {:>9}   {:>11}   {:>10}   {:>7}",
                r["lanes"],
                r["memory_mb"],
                r["kb_per_lane"],
                r["idle_cpu_percent"],
                r["tasks_per_sec"]
            );
        }
    }
    Ok(())
}

/// Drains `--slow` tasks with the run's workers, then with four times as many.
async fn slow(args: &BenchArgs) -> Result<Value, BenchError> {
    let (prefix, db) = run_names();
    let conn = broker::connect(&args.amqp_url, "lanes-bench", &Default::default()).await?;
    let mut fleet = Fleet::start(args, &prefix, &db)?;
    let outcome = async {
        fleet.wait_ready().await?;
        let pool = PgPool::connect(&format!("{}/{db}", args.postgres)).await?;
        let publisher = Publisher::new(&conn).await?;
        let topo = Topology::new(&prefix);
        let few = drain(args, &publisher, &topo, &pool, "slow tasks").await?;
        let more = args.workers * 4;
        fleet.resize(more);
        fleet.spawn_workers()?;
        fleet.wait_ready().await?;
        // The Dispatcher sizes the pool at its next sweep (every 500 ms).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let many = drain(args, &publisher, &topo, &pool, "slow tasks, 4× workers").await?;
        Ok::<_, BenchError>((few, many, more))
    }
    .await;
    fleet.stop();
    cleanup(&conn, &prefix, &args.postgres, &db).await;
    let (few, many, more) = outcome?;
    let slots = |workers: usize| workers * worker_slots();
    Ok(json!({
        "tasks": args.slow, "task_ms": args.slow_ms,
        "workers": args.workers, "slots": slots(args.workers), "secs": round2(few),
        "more_workers": more, "more_slots": slots(more), "more_secs": round2(many),
        "speedup": round2(few / many),
    }))
}

/// The workers' concurrency, as the fleet's processes read it.
fn worker_slots() -> usize {
    std::env::var("LANES_CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Submits the slow tasks, each on a resource of its own, and returns the seconds from the
/// first start to the last end.
async fn drain(
    args: &BenchArgs,
    publisher: &Publisher,
    topo: &Topology,
    pool: &PgPool,
    label: &str,
) -> Result<f64, BenchError> {
    let n = args.slow;
    let base = last_seq(pool).await?;
    let progress = bar(n as u64, label, args.json);
    let run = Uuid::new_v4().simple().to_string();
    let jobs = (0..n).map(|i| {
        let body = json!({"task": "sleep", "args": {"ms": args.slow_ms},
                          "resources": [format!("slow:{}:{i}", &run[..8])]});
        (Uuid::now_v7(), serde_json::to_vec(&body).expect("json"))
    });
    submit_all(publisher, topo, jobs).await?;
    wait_for(pool, base, Some("completed"), n as i64, &progress).await?;
    progress.finish_and_clear();
    let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT min(started_at), max(finished_at) FROM jobs WHERE seq > $1 AND state = 'completed'",
    )
    .bind(base)
    .fetch_one(pool)
    .await?;
    let (Some(first), Some(last)) = (first, last) else {
        return Err(BenchError::Stalled("no slow task recorded its run".into()));
    };
    Ok((last - first).num_milliseconds().max(1) as f64 / 1000.0)
}

/// The broker's memory and idle CPU for each pool size, beside the broker without a fleet.
async fn pool_cost(args: &BenchArgs) -> Result<Value, BenchError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let idle = Broker::measure(&http, &args.management_url).await?;
    let mut rows = Vec::new();
    for &lanes in &args.pool_lanes {
        let lanes = lanes.clamp(1, MOST_LANES);
        let (prefix, db) = run_names();
        let conn = broker::connect(&args.amqp_url, "lanes-bench", &Default::default()).await?;
        let env = vec![
            ("LANES_MIN_QUEUES".to_owned(), lanes.to_string()),
            ("LANES_MAX_QUEUES".to_owned(), lanes.to_string()),
        ];
        let mut fleet = Fleet::start_with(args, &prefix, &db, env)?;
        let outcome = async {
            fleet.wait_ready().await?;
            // Every lane declared and consumed by its owner and its standby.
            wait_consumed(&http, &args.management_url, &prefix, lanes).await?;
            let carried = Broker::measure(&http, &args.management_url).await?;
            let pool = PgPool::connect(&format!("{}/{db}", args.postgres)).await?;
            let publisher = Publisher::new(&conn).await?;
            let topo = Topology::new(&prefix);
            let label = format!("{lanes} lanes");
            let rate = super::workload::rate(
                &mut fleet,
                &publisher,
                &topo,
                &pool,
                args,
                super::workload::Workload::Single,
                &label,
            )
            .await?;
            Ok::<_, BenchError>((carried, rate))
        }
        .await;
        fleet.stop();
        cleanup(&conn, &prefix, &args.postgres, &db).await;
        let (carried, rate) = outcome?;
        let mb = (carried.memory - idle.memory) / 1e6;
        rows.push(json!({
            "lanes": lanes,
            "memory_mb": (mb * 10.0).round() / 10.0,
            "kb_per_lane": (mb * 1000.0 / lanes as f64).round(),
            "idle_cpu_percent": carried.cpu.map(|c| (c * 10.0).round() / 10.0),
            "broker_idle_cpu_percent_without": idle.cpu.map(|c| (c * 10.0).round() / 10.0),
            "tasks_per_sec": rate.round(),
        }));
    }
    Ok(Value::Array(rows))
}

/// Waits until each of the run's `lanes` lanes has two consumers (owner and standby).
pub(super) async fn wait_consumed(
    http: &reqwest::Client,
    management: &str,
    prefix: &str,
    lanes: u32,
) -> Result<(), BenchError> {
    let lane = format!("{prefix}.q.");
    for _ in 0..600 {
        let queues: Value = get(http, management, "/api/queues?columns=name,consumers")
            .await?
            .json()
            .await?;
        let consumed = queues
            .as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["name"].as_str().is_some_and(|n| n.starts_with(&lane)))
            .filter(|q| q["consumers"].as_u64().unwrap_or(0) >= 2)
            .count();
        if consumed >= lanes as usize {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::Stalled(format!(
        "the {lanes} lanes did not get their owners and standbys within 60 s"
    )))
}

pub(super) async fn get(
    http: &reqwest::Client,
    management: &str,
    path: &str,
) -> Result<reqwest::Response, BenchError> {
    let mut url = reqwest::Url::parse(management)
        .map_err(|_| BenchError::Stalled("the management URL does not parse".into()))?;
    let (user, password) = (url.username().to_owned(), url.password().map(str::to_owned));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let url = url
        .join(path)
        .map_err(|_| BenchError::Stalled("the management URL does not parse".into()))?;
    Ok(http
        .get(url)
        .basic_auth(user, password)
        .send()
        .await?
        .error_for_status()?)
}

/// The broker as measured at one moment.
pub(super) struct Broker {
    /// Bytes in use, summed over its nodes.
    pub(super) memory: f64,
    /// Its `beam.smp` process's CPU over 10 s, percent of one core (None: not on this machine).
    pub(super) cpu: Option<f64>,
}

impl Broker {
    pub(super) async fn measure(
        http: &reqwest::Client,
        management: &str,
    ) -> Result<Broker, BenchError> {
        let cpu = beam_cpu(Duration::from_secs(10)).await;
        let nodes: Value = get(http, management, "/api/nodes").await?.json().await?;
        let memory = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["mem_used"].as_f64())
            .sum();
        Ok(Broker { memory, cpu })
    }
}

/// CPU time of the local broker's `beam.smp` over `over`, percent of one core.
async fn beam_cpu(over: Duration) -> Option<f64> {
    let pid = super::proc::broker_pid()?;
    let before = super::proc::cpu_ticks(pid)?;
    tokio::time::sleep(over).await;
    let after = super::proc::cpu_ticks(pid)?;
    Some((after - before) as f64 / over.as_secs_f64())
}
