//! `lanes bench`: measures, in one run on the same broker and database, (1) the ceiling — the
//! raw round trip of persistent, confirmed, acked messages through a quorum queue; (2) lanes end
//! to end — N no-op tasks over R resources and W workers, from the first submit publish to the
//! last `completed` row; (3) latency under a fixed offered load. Server and workers are real
//! child processes (so their peak RSS is theirs). Everything lives under its own prefix and
//! database, removed at the end.
//!
//! This file holds the arguments, the errors and the run that ties the steps together and
//! prints the report; `measure` takes the measurements, `fleet` runs the processes under test
//! and removes what the run left behind. The bench drives the `lanes` binary as a black box
//! (it starts `lanes server` and `lanes worker`), so it belongs to the binary, not the library.

mod delayed;
mod fleet;
mod hot;
mod http;
mod large_fleet;
mod measure;
mod proc;
mod scale;
mod simulate;
mod submit;
mod workload;

use clap::Args;
use fleet::{cleanup, run_names, Fleet};
use lanes::broker::{self, Publisher, Topology};
use measure::{ceiling, hop_latency, latency};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use workload::Workload;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// No-op tasks in the throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    /// Resources the tasks are spread over.
    #[arg(long, default_value_t = 100)]
    pub resources: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Offered load of the latency run, tasks per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Length of the latency run, seconds.
    #[arg(long, default_value_t = 5)]
    pub latency_secs: u64,
    /// Fraction (0 to 1) of tasks that lock 2–3 resources instead of one; above 0 the mixed
    /// workload is measured too, beside the single-resource one of the same run.
    #[arg(long, default_value_t = 0.0)]
    pub multi: f64,
    /// Measure draining a backlog: the tasks are submitted and recorded with no worker
    /// running, then the workers start; the rate is tasks / (last end − first start).
    #[arg(long)]
    pub backlog: bool,
    /// Finished rows to put in the jobs table (one INSERT … SELECT generate_series) and
    /// measure again, beside the figure of the empty table.
    #[arg(long, default_value_t = 0)]
    pub table_rows: u64,
    /// Submit with random (v4) message ids, as a client that does not follow the advice to
    /// use time-ordered (v7) ones; the filled table's ids are then random too.
    #[arg(long)]
    pub random_ids: bool,
    /// Delayed tasks to measure lateness with (0: none): submitted at once, due evenly over
    /// `--delayed-secs`; reported is how long after its due time each started.
    #[arg(long, default_value_t = 0)]
    pub delayed: usize,
    /// The window the delayed tasks fall due in, seconds.
    #[arg(long, default_value_t = 600)]
    pub delayed_secs: u64,
    /// Measure `POST /jobs` with one client and with this many at once (0: not measured).
    #[arg(long, default_value_t = 0)]
    pub http_clients: usize,
    /// How long each of the two HTTP submit runs lasts, seconds.
    #[arg(long, default_value_t = 10)]
    pub http_secs: u64,
    /// Tasks waiting on one hot resource while the latency run is measured again beside them
    /// (0: not measured); reported beside the idle latency of the same run.
    #[arg(long, default_value_t = 0)]
    pub hot: usize,
    /// Measure scaling with the fleet instead of the usual run: this many tasks of
    /// `--slow-ms` on as many resources, drained by `--workers` workers and then by four times
    /// as many (0: not measured).
    #[arg(long, default_value_t = 0)]
    pub slow: usize,
    /// How long each of the `--slow` tasks runs, milliseconds.
    #[arg(long, default_value_t = 400)]
    pub slow_ms: u64,
    /// Measure what lane pools of these sizes cost the broker instead of the usual run
    /// (e.g. `64,256,1024`): its memory and idle CPU with an owner and a standby on each lane,
    /// beside the same broker without them.
    #[arg(long, value_delimiter = ',')]
    pub pool_lanes: Vec<u32>,
    /// Measure fleets of these sizes instead of the usual run (e.g. `100,500,1000,2000`): how
    /// soon all are live, heartbeats and fencing, what each worker costs the server and the
    /// broker, and a quarter SIGKILLed under load.
    #[arg(long, value_delimiter = ',')]
    pub fleet: Vec<usize>,
    /// With `--fleet`, the most workers one worker process runs (`lanes worker --workers`).
    #[arg(long, default_value_t = 250)]
    pub fleet_process: usize,
    /// The broker's management API, for its memory (`--pool-lanes`, `--fleet`).
    #[arg(
        long,
        env = "LANES_MANAGEMENT_URL",
        default_value = "http://guest:guest@127.0.0.1:15672",
        hide_env_values = true
    )]
    pub management_url: String,
    /// Simulate instead of measuring: the real Router drains the backlog of the single and
    /// the mixed workload in simulated time, with no broker and no database.
    #[arg(long)]
    pub simulate: bool,
    /// In a simulation, how long a finished task takes to reach the Router, in task run times.
    #[arg(long, default_value_t = 10)]
    pub sim_feedback: u64,
    /// In a simulation, how much run and feedback times vary: each is drawn from
    /// `(1 ± jitter) ×` its mean (0: every run the same).
    #[arg(long, default_value_t = 0.5)]
    pub sim_jitter: f64,
    /// In a simulation, how many drains (each with its own random seed) to report on.
    #[arg(long, default_value_t = 5)]
    pub sim_runs: u64,
    /// In a simulation, the lanes' depth (`LANES_LANE_DEPTH`; 0: unbounded).
    #[arg(long, default_value_t = 0)]
    pub sim_depth: u32,
    /// In a simulation, the Router's `LANES_REBALANCE_AFTER` (0: never).
    #[arg(long, default_value_t = 0)]
    pub sim_rebalance: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// AMQP URL of RabbitMQ.
    #[arg(
        long,
        env = "LANES_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// PostgreSQL server URL (a database `lanes_bench_*` is created on it and dropped).
    #[arg(long, default_value = "postgres://127.0.0.1")]
    pub postgres: String,
}

impl BenchArgs {
    /// A task's message id (its job id): time-ordered, as the README advises clients, unless
    /// `--random-ids`.
    fn new_id(&self) -> Uuid {
        if self.random_ids {
            Uuid::new_v4()
        } else {
            Uuid::now_v7()
        }
    }
}

/// The run's rates: single-resource; mixed; with a pre-filled table.
#[derive(Default)]
struct Rates {
    single: f64,
    mixed: Option<f64>,
    filled: Option<Filled>,
    lateness: Option<delayed::Lateness>,
    http: Option<http::HttpSubmits>,
    hot: Option<hot::Hot>,
}

/// The figures measured again over a pre-filled table.
struct Filled {
    rate: f64,
    fill_secs: f64,
    /// VACUUM and CHECKPOINT after the fill: a table that has lived months has been through
    /// both, and the first autovacuum of ten million fresh rows would otherwise run during
    /// the measurement.
    settle_secs: f64,
    /// Medians in ms of `GET /jobs?limit=100` and `GET /jobs?state=failed&limit=100`.
    list_ms: f64,
    failed_ms: f64,
    latency: measure::Latency,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("cannot start `{0}`: {1}")]
    Spawn(String, std::io::Error),
    #[error("{0}")]
    Stalled(String),
    #[error("HTTP error: {0}")]
    Http(#[from] reqwest::Error),
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    if args.simulate {
        simulate::run(&args);
        return Ok(());
    }
    if !args.fleet.is_empty() {
        return large_fleet::run(&args).await;
    }
    if args.slow > 0 || !args.pool_lanes.is_empty() {
        return scale::run(&args).await;
    }
    let (prefix, db) = run_names();
    let quiet = args.json;
    let conn = broker::connect(&args.amqp_url, "lanes-bench", &Default::default()).await?;

    let ceiling = ceiling(&conn, &prefix, args.tasks, quiet).await?;
    let hop = hop_latency(&conn, &prefix, args.rate, quiet).await?;
    let mut fleet = Fleet::start(&args, &prefix, &db)?;
    let outcome = async {
        fleet.wait_ready().await?;
        let pool = PgPool::connect(&format!("{}/{db}", args.postgres)).await?;
        let publisher = Publisher::new(&conn).await?;
        let topo = Topology::new(&prefix);
        let mut rates = Rates::default();
        let f = &mut fleet;
        rates.single = workload::rate(
            f,
            &publisher,
            &topo,
            &pool,
            &args,
            Workload::Single,
            "single-resource",
        )
        .await?;
        if args.multi > 0.0 {
            let mixed = Workload::Mixed(args.multi);
            rates.mixed =
                Some(workload::rate(f, &publisher, &topo, &pool, &args, mixed, "mixed").await?);
        }
        let empty_latency = latency(&publisher, &topo, &pool, &args, quiet).await?;
        if args.delayed > 0 {
            rates.lateness = Some(delayed::lateness(&publisher, &topo, &pool, &args).await?);
        }
        if args.http_clients > 0 {
            rates.http = Some(http::submits(&f.http, &args).await?);
        }
        if args.hot > 0 {
            rates.hot = Some(hot::latency_beside_hot(&publisher, &topo, &pool, &args).await?);
        }
        if args.table_rows > 0 {
            let (fill, settle) =
                workload::fill(&pool, args.table_rows, args.random_ids, quiet).await?;
            let rate = workload::rate(
                f,
                &publisher,
                &topo,
                &pool,
                &args,
                Workload::Single,
                "filled table",
            )
            .await?;
            rates.filled = Some(Filled {
                rate,
                fill_secs: fill.as_secs_f64(),
                settle_secs: settle.as_secs_f64(),
                list_ms: workload::page_ms(&f.http, "/jobs?limit=100").await?,
                failed_ms: workload::page_ms(&f.http, "/jobs?state=failed&limit=100").await?,
                latency: latency(&publisher, &topo, &pool, &args, quiet).await?,
            });
        }
        Ok::<_, BenchError>((rates, empty_latency))
    }
    .await;
    let (server_rss, worker_rss) = fleet.peak_rss();
    fleet.stop();
    cleanup(&conn, &prefix, &args.postgres, &db).await;
    let (rates, lat) = outcome?;
    let tasks_per_sec = rates.single;
    // Ratios to three decimals, seconds to one.
    let third = |x: f64| (x * 1000.0).round() / 1000.0;
    let tenth = |x: f64| (x * 10.0).round() / 10.0;
    let mut report = json!({
        "tasks": args.tasks, "resources": args.resources, "workers": args.workers,
        "ceiling_msgs_per_sec": ceiling.round(),
        "hop_p50_ms": hop[0], "hop_p99_ms": hop[1],
        "tasks_per_sec": tasks_per_sec.round(),
        "ratio": third(tasks_per_sec / ceiling),
        "offered_rate": args.rate,
        "p50_recorded_ms": lat.recorded[0], "p99_recorded_ms": lat.recorded[1],
        "p50_start_ms": lat.start[0], "p99_start_ms": lat.start[1], "max_start_ms": lat.start[2],
        "p50_done_ms": lat.done[0], "p99_done_ms": lat.done[1], "max_done_ms": lat.done[2],
        "server_peak_rss_mb": server_rss, "worker_peak_rss_mb": worker_rss,
        "mode": if args.backlog { "backlog" } else { "end_to_end" },
    });
    if let Some(mixed) = rates.mixed {
        report["multi"] = json!(args.multi);
        report["mixed_tasks_per_sec"] = json!(mixed.round());
        report["mixed_vs_single"] = json!(third(mixed / tasks_per_sec));
    }
    if let Some(filled) = &rates.filled {
        report["table_rows"] = json!(args.table_rows);
        report["fill_secs"] = json!(tenth(filled.fill_secs));
        report["settle_secs"] = json!(tenth(filled.settle_secs));
        report["filled_tasks_per_sec"] = json!(filled.rate.round());
        report["filled_vs_empty"] = json!(third(filled.rate / tasks_per_sec));
        report["list_ms"] = json!(filled.list_ms);
        report["list_failed_ms"] = json!(filled.failed_ms);
        let l = &filled.latency;
        report["filled_p50_start_ms"] = json!(l.start[0]);
        report["filled_p99_start_ms"] = json!(l.start[1]);
        report["filled_vs_empty_p50_start"] = json!(third(lat.start[0] / l.start[0]));
    }
    if let Some(l) = &rates.lateness {
        report["delayed"] = json!(args.delayed);
        report["delayed_secs"] = json!(args.delayed_secs);
        report["delayed_due_per_sec"] = json!(tenth(l.due_per_sec));
        report["lateness_p50_ms"] = json!(l.ms[0]);
        report["lateness_p99_ms"] = json!(l.ms[1]);
        report["lateness_max_ms"] = json!(l.ms[2]);
        report["delayed_recorded_late"] = json!(l.recorded_late);
    }
    if let Some(h) = &rates.hot {
        let l = &h.latency;
        report["hot"] = json!(args.hot);
        report["hot_still_waiting"] = json!(h.still_waiting);
        report["hot_p50_start_ms"] = json!(l.start[0]);
        report["hot_p99_start_ms"] = json!(l.start[1]);
        report["hot_vs_idle_p99_start"] = json!(third(l.start[1] / lat.start[1]));
    }
    if let Some(h) = &rates.http {
        report["http_clients"] = json!(h.clients);
        report["http_submits_per_sec_one"] = json!(h.one.round());
        report["http_submits_per_sec_many"] = json!(h.many.round());
        report["http_many_vs_one"] = json!(third(h.many / h.one));
    }
    if args.json {
        println!("{report}");
    } else {
        println!();
        println!(
            "lanes bench ({} tasks, {} resources, {} workers)",
            args.tasks, args.resources, args.workers
        );
        println!("  ceiling (raw broker round trip)  {:>10.0} msg/s", ceiling);
        println!(
            "  one broker hop at {} msg/s      p50 {:>7.2} ms   p99 {:>7.2} ms",
            args.rate, hop[0], hop[1]
        );
        let mode = if args.backlog {
            "draining a backlog"
        } else {
            "end to end"
        };
        println!(
            "  lanes {mode:<26} {:>10.0} tasks/s   ratio {:.3}",
            tasks_per_sec,
            tasks_per_sec / ceiling
        );
        if let Some(mixed) = rates.mixed {
            println!(
                "  mixed ({:.0}% on 2–3 resources)     {:>10.0} tasks/s   {:.3} of single",
                args.multi * 100.0,
                mixed,
                mixed / tasks_per_sec
            );
        }
        if let Some(filled) = &rates.filled {
            println!(
                "  with {} finished rows          {:>10.0} tasks/s   {:.3} of empty (filled in {:.0} s, vacuumed in {:.0} s)",
                args.table_rows,
                filled.rate,
                filled.rate / tasks_per_sec,
                filled.fill_secs,
                filled.settle_secs
            );
            println!(
                "    GET /jobs?limit=100 {:.1} ms   GET /jobs?state=failed {:.1} ms (medians of 5)",
                filled.list_ms, filled.failed_ms
            );
            println!(
                "    submit → started   p50 {:>7.2} ms   p99 {:>7.2} ms (empty: p50 {:.2} ms)",
                filled.latency.start[0], filled.latency.start[1], lat.start[0]
            );
        }
        println!("  latency at {} tasks/s offered:", args.rate);
        println!(
            "    submit → recorded  p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
            lat.recorded[0], lat.recorded[1], lat.recorded[2]
        );
        println!(
            "    submit → started   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
            lat.start[0], lat.start[1], lat.start[2]
        );
        println!(
            "    submit → completed p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
            lat.done[0], lat.done[1], lat.done[2]
        );
        if let Some(l) = &rates.lateness {
            println!(
                "  {} delayed tasks due over {} s ({:.1}/s): started after their due time p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
                args.delayed, args.delayed_secs, l.due_per_sec, l.ms[0], l.ms[1], l.ms[2]
            );
            if l.recorded_late > 0 {
                println!(
                    "    {} of them were recorded after their due time (the submits were slow) and are left out",
                    l.recorded_late
                );
            }
        }
        if let Some(h) = &rates.http {
            println!(
                "  POST /jobs: one client {:.0}/s, {} clients {:.0}/s ({:.2}×)",
                h.one,
                h.clients,
                h.many,
                h.many / h.one
            );
        }
        if let Some(h) = &rates.hot {
            println!(
                "  beside {} tasks on one hot resource ({} still waiting at the end): submit → started p50 {:.2} ms   p99 {:.2} ms ({:.2}× idle p99)",
                args.hot,
                h.still_waiting,
                h.latency.start[0],
                h.latency.start[1],
                h.latency.start[1] / lat.start[1]
            );
        }
        println!("  peak RSS: server {server_rss:.1} MB, worker {worker_rss:.1} MB");
    }
    Ok(())
}
