//! `lanes bench`: measures, in one run on the same broker and database, (1) the ceiling — the
//! raw round trip of persistent, confirmed, acked messages through a quorum queue; (2) lanes end
//! to end — N no-op tasks over R resources and W workers, from the first submit publish to the
//! last `completed` row; (3) latency under a fixed offered load. Server and workers are real
//! child processes (so their peak RSS is theirs). Everything lives under its own prefix and
//! database, removed at the end.

use crate::broker::{self, json_properties, Outgoing, Publisher, Topology};
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use serde_json::json;
use sqlx::PgPool;
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use uuid::Uuid;

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
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let id = Uuid::new_v4().simple().to_string();
    let prefix = format!("bench{}", &id[..8]);
    let db = format!("lanes_bench_{}", &id[..8]);
    let quiet = args.json;
    let conn = broker::connect(&args.amqp_url, "lanes-bench").await?;

    let ceiling = ceiling(&conn, &prefix, args.tasks, quiet).await?;
    let hop = hop_latency(&conn, &prefix, args.rate, quiet).await?;
    let mut fleet = Fleet::start(&args, &prefix, &db)?;
    let outcome = async {
        fleet.wait_ready().await?;
        let pool = PgPool::connect(&format!("{}/{db}", args.postgres)).await?;
        let publisher = Publisher::new(&conn).await?;
        let topo = Topology::new(&prefix);
        let throughput = throughput(&publisher, &topo, &pool, &args, quiet).await?;
        let latency = latency(&publisher, &topo, &pool, &args, quiet).await?;
        Ok::<_, BenchError>((throughput, latency))
    }
    .await;
    let (server_rss, worker_rss) = fleet.peak_rss();
    fleet.stop();
    cleanup(&conn, &prefix, &args.postgres, &db).await;
    let (tasks_per_sec, lat) = outcome?;
    let report = json!({
        "tasks": args.tasks, "resources": args.resources, "workers": args.workers,
        "ceiling_msgs_per_sec": ceiling.round(),
        "hop_p50_ms": hop[0], "hop_p99_ms": hop[1],
        "tasks_per_sec": tasks_per_sec.round(),
        "ratio": (tasks_per_sec / ceiling * 1000.0).round() / 1000.0,
        "offered_rate": args.rate,
        "p50_recorded_ms": lat.recorded[0], "p99_recorded_ms": lat.recorded[1],
        "p50_start_ms": lat.start[0], "p99_start_ms": lat.start[1], "max_start_ms": lat.start[2],
        "p50_done_ms": lat.done[0], "p99_done_ms": lat.done[1], "max_done_ms": lat.done[2],
        "server_peak_rss_mb": server_rss, "worker_peak_rss_mb": worker_rss,
    });
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
        println!(
            "  lanes end to end                 {:>10.0} tasks/s   ratio {:.3}",
            tasks_per_sec,
            tasks_per_sec / ceiling
        );
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
        println!("  peak RSS: server {server_rss:.1} MB, worker {worker_rss:.1} MB");
    }
    Ok(())
}

fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(what.to_owned());
    b
}

/// The raw round trip: persistent messages, confirms (window 1,000), prefetch 500, multiple acks.
async fn ceiling(
    conn: &lapin::Connection,
    prefix: &str,
    n: usize,
    quiet: bool,
) -> Result<f64, BenchError> {
    let queue = format!("{prefix}.ceiling");
    let (ch, publisher, mut consumer) = probe_queue(conn, &queue, "lanes-bench/ceiling").await?;
    let progress = bar(n as u64, "ceiling", quiet);
    let started = Instant::now();
    let consume = async {
        let mut seen = 0;
        while seen < n {
            let batch = consumer
                .next()
                .await
                .ok_or_else(|| BenchError::Stalled("ceiling consumer ended".into()))??;
            seen += 1;
            if seen % 250 == 0 || seen == n {
                batch.acker.ack(BasicAckOptions { multiple: true }).await?;
                progress.set_position(seen as u64);
            }
        }
        Ok::<_, BenchError>(())
    };
    let message = Outgoing {
        exchange: "",
        routing_key: &queue,
        body: br#"{"task":"noop"}"#.to_vec(),
        props: json_properties(),
    };
    let publish = send_in_windows(&publisher, std::iter::repeat_n(message, n));
    let (c, p) = futures::join!(consume, publish);
    c?;
    p?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    Ok(rate)
}

/// Declares a quorum queue for a raw measurement; returns a channel (to delete it with), a
/// confirming publisher and a consumer (prefetch 500) tagged `tag`.
async fn probe_queue(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
) -> Result<(lapin::Channel, Publisher, lapin::Consumer), BenchError> {
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, args).await?;
    let publisher = Publisher::new(conn).await?;
    let consumer_ch = conn.create_channel().await?;
    broker::prefetch(&consumer_ch, 500).await?;
    let consumer = consumer_ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, publisher, consumer))
}

/// The latency of one hop through the broker (publish → delivery to a consumer) on the queue
/// type lanes uses, at `rate` messages/s for two seconds: the floor under every latency lanes
/// can show, since a task takes two such hops (submit, then its lane).
async fn hop_latency(
    conn: &lapin::Connection,
    prefix: &str,
    rate: u64,
    quiet: bool,
) -> Result<[f64; 3], BenchError> {
    let queue = format!("{prefix}.hop");
    let (ch, publisher, mut consumer) = probe_queue(conn, &queue, "lanes-bench/hop").await?;
    let n = (rate * 2).max(1) as usize;
    let progress = bar(n as u64, "one broker hop", quiet);
    let t0 = Instant::now();
    let consume = async {
        let mut took = Vec::with_capacity(n);
        while took.len() < n {
            let d = consumer
                .next()
                .await
                .ok_or_else(|| BenchError::Stalled("hop consumer ended".into()))??;
            let sent: [u8; 8] = d.data[..8].try_into().expect("8 bytes");
            let sent = Duration::from_nanos(u64::from_le_bytes(sent));
            took.push((t0.elapsed() - sent).as_secs_f64() * 1000.0);
            d.acker.ack(BasicAckOptions::default()).await?;
            progress.set_position(took.len() as u64);
        }
        Ok::<_, BenchError>(took)
    };
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let publish = async {
        let mut pending = Vec::new();
        for i in 0..n {
            tokio::time::sleep_until((t0 + interval * i as u32).into()).await;
            let body = (t0.elapsed().as_nanos() as u64).to_le_bytes();
            pending.push(publisher.send("", &queue, &body, json_properties()).await?);
            if pending.len() >= 100 {
                broker::confirm_all(std::mem::take(&mut pending)).await?;
            }
        }
        broker::confirm_all(pending).await?;
        Ok::<_, BenchError>(())
    };
    let (took, sent) = futures::join!(consume, publish);
    sent?;
    let mut took = took?;
    progress.finish_and_clear();
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    Ok(percentiles(&mut took))
}

/// Publishes submit messages with confirms in windows of 1,000, like the ceiling.
async fn submit_all(
    publisher: &Publisher,
    topo: &Topology,
    jobs: impl Iterator<Item = (Uuid, Vec<u8>)>,
) -> Result<(), BenchError> {
    let exchange = topo.exchange();
    let messages = jobs.map(|(id, body)| Outgoing {
        exchange: &exchange,
        routing_key: "submit",
        body,
        props: json_properties().with_message_id(id.to_string().into()),
    });
    send_in_windows(publisher, messages).await
}

/// Hands lapin a window of 1,000 messages at once and waits for their confirms, then the next.
async fn send_in_windows<'a>(
    publisher: &Publisher,
    messages: impl Iterator<Item = Outgoing<'a>>,
) -> Result<(), BenchError> {
    let mut messages = messages.peekable();
    while messages.peek().is_some() {
        let window: Vec<Outgoing> = messages.by_ref().take(1000).collect();
        broker::confirm_all(publisher.send_all(&window).await?).await?;
    }
    Ok(())
}

fn noop(resource: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"task": "noop", "resources": [format!("bench:{resource}")]}))
        .expect("json")
}

async fn completed(pool: &PgPool) -> Result<i64, BenchError> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs WHERE state = 'completed'")
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// How often the bench counts completed jobs. The count scans the table, so counting more
/// often would take CPU from the system under test.
const POLL: Duration = Duration::from_millis(100);

/// Waits until `target` jobs are completed; fails if nothing moves for 60 s.
async fn wait_completed(
    pool: &PgPool,
    target: i64,
    progress: &ProgressBar,
) -> Result<(), BenchError> {
    let (mut last, mut since) = (-1, Instant::now());
    loop {
        let n = completed(pool).await?;
        progress.set_position(n as u64);
        if n >= target {
            return Ok(());
        }
        if n != last {
            (last, since) = (n, Instant::now());
        } else if since.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Stalled(format!(
                "stuck at {n} of {target} completed jobs"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn throughput(
    publisher: &Publisher,
    topo: &Topology,
    pool: &PgPool,
    args: &BenchArgs,
    quiet: bool,
) -> Result<f64, BenchError> {
    let progress = bar(args.tasks as u64, "lanes end to end", quiet);
    let started = Utc::now();
    let jobs = (0..args.tasks).map(|i| (Uuid::new_v4(), noop(i % args.resources.max(1))));
    let publish = submit_all(publisher, topo, jobs);
    let wait = wait_completed(pool, args.tasks as i64, &progress);
    let (p, w) = futures::join!(publish, wait);
    p?;
    w?;
    // The end is when the last `completed` row was written, not when polling noticed it.
    let (last,): (DateTime<Utc>,) =
        sqlx::query_as("SELECT max(updated_at) FROM jobs WHERE state = 'completed'")
            .fetch_one(pool)
            .await?;
    let took = (last - started).num_microseconds().unwrap_or(1).max(1) as f64 / 1e6;
    progress.finish_and_clear();
    Ok(args.tasks as f64 / took)
}

struct Latency {
    /// Submit → the job's row exists (the Dispatcher took it): where the time goes.
    recorded: [f64; 3],
    start: [f64; 3],
    done: [f64; 3],
}

/// Offers `rate` tasks/s for `latency_secs`, one publish at a time on a fixed schedule.
async fn latency(
    publisher: &Publisher,
    topo: &Topology,
    pool: &PgPool,
    args: &BenchArgs,
    quiet: bool,
) -> Result<Latency, BenchError> {
    let n = (args.rate * args.latency_secs) as usize;
    let before = completed(pool).await?;
    let progress = bar(n as u64, "latency", quiet);
    let mut sent: Vec<(Uuid, DateTime<Utc>)> = Vec::with_capacity(n);
    let mut pending = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let t0 = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(t0 + interval * i as u32).await;
        let id = Uuid::new_v4();
        let props = json_properties().with_message_id(id.to_string().into());
        sent.push((id, Utc::now()));
        pending.push(
            publisher
                .send(
                    &topo.exchange(),
                    "submit",
                    &noop(i % args.resources.max(1)),
                    props,
                )
                .await?,
        );
        if pending.len() >= 100 {
            broker::confirm_all(std::mem::take(&mut pending)).await?;
        }
        progress.set_position(i as u64);
    }
    broker::confirm_all(pending).await?;
    progress.finish_and_clear();
    wait_completed(pool, before + n as i64, &ProgressBar::hidden()).await?;
    let ids: Vec<Uuid> = sent.iter().map(|(id, _)| *id).collect();
    type Times = (Uuid, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);
    let rows: Vec<Times> = sqlx::query_as(
        "SELECT id, created_at, started_at, finished_at FROM jobs WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let at: std::collections::HashMap<Uuid, DateTime<Utc>> = sent.into_iter().collect();
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let mut recorded: Vec<f64> = rows.iter().map(|(id, c, ..)| ms(*c - at[id])).collect();
    let mut start: Vec<f64> = rows.iter().map(|(id, _, s, _)| ms(*s - at[id])).collect();
    let mut done: Vec<f64> = rows.iter().map(|(id, .., f)| ms(*f - at[id])).collect();
    Ok(Latency {
        recorded: percentiles(&mut recorded),
        start: percentiles(&mut start),
        done: percentiles(&mut done),
    })
}

/// p50, p99 and max.
fn percentiles(v: &mut [f64]) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let round = |x: f64| (x * 100.0).round() / 100.0;
    [round(at(0.5)), round(at(0.99)), round(v[v.len() - 1])]
}

/// The server and worker processes under test.
struct Fleet {
    server: Child,
    workers: Vec<Child>,
    http: String,
    log: std::path::PathBuf,
}

impl Fleet {
    fn start(args: &BenchArgs, prefix: &str, db: &str) -> Result<Fleet, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::Spawn("lanes".into(), e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BenchError::Spawn("lanes server".into(), e))?
            .port();
        let http = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("{prefix}.log"));
        let file = std::fs::File::create(&log).map_err(|e| BenchError::Spawn("log".into(), e))?;
        let spawn = |role: &str| {
            Command::new(&exe)
                .arg(role)
                .env("LANES_AMQP_URL", &args.amqp_url)
                .env("LANES_PREFIX", prefix)
                .env("DATABASE_URL", format!("{}/{db}", args.postgres))
                .env("LANES_HTTP_ADDR", &http)
                // Quiet unless asked: `RUST_LOG=lanes=debug lanes bench` logs the fleet.
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    file.try_clone()
                        .map_err(|e| BenchError::Spawn("log".into(), e))?,
                )
                .spawn()
                .map_err(|e| BenchError::Spawn(format!("lanes {role}"), e))
        };
        let server = spawn("server")?;
        let workers = (0..args.workers)
            .map(|_| spawn("worker"))
            .collect::<Result<_, _>>()?;
        Ok(Fleet {
            server,
            workers,
            http,
            log,
        })
    }

    /// Waits until the server is active and every worker has its lanes.
    async fn wait_ready(&mut self) -> Result<(), BenchError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let workers: Option<serde_json::Value> = match client
                .get(format!("http://{}/workers", self.http))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let ready = workers
                .as_ref()
                .and_then(|w| w.as_array())
                .is_some_and(|ws| {
                    ws.len() == self.workers.len()
                        && ws
                            .iter()
                            .all(|w| w["lanes"].as_array().is_some_and(|l| !l.is_empty()))
                });
            if ready {
                // Standbys subscribe a moment after owners.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
            for child in std::iter::once(&mut self.server).chain(self.workers.iter_mut()) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(BenchError::Stalled(format!(
                        "a lanes process exited during start-up ({status}); its log: {}",
                        self.log.display()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Stalled(
                    "the server and workers did not come up within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident set sizes in MB: the server, and the largest worker.
    fn peak_rss(&self) -> (f64, f64) {
        let hwm = |pid: u32| -> f64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmHWM:"))
                        .map(str::to_owned)
                })
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<f64>().ok())
                })
                .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
        };
        let worker = self.workers.iter().map(|w| hwm(w.id())).fold(0.0, f64::max);
        (hwm(self.server.id()), worker)
    }

    fn stop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.server))
        {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.server))
        {
            // Bounded: a process that does not stop within a minute is killed, and said so.
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!(
                    "lanes bench: pid {} ignored SIGTERM for 60 s; killing it",
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn cleanup(conn: &lapin::Connection, prefix: &str, postgres: &str, db: &str) {
    if let Ok(ch) = conn.create_channel().await {
        let topo = Topology::new(prefix);
        let mut queues = vec![
            topo.submit(),
            topo.events(),
            topo.dead(),
            topo.default_queue(),
        ];
        queues.extend((0..256).map(|n| topo.lane(n)));
        for q in queues {
            if ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    if let Ok(ch) = conn.create_channel().await {
        for x in [prefix.to_owned(), format!("{prefix}.control")] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
    }
    if let Ok(pool) = PgPool::connect(&format!("{postgres}/postgres")).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .execute(&pool)
            .await;
    }
}
