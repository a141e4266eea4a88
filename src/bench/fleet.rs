//! The processes under test in `lanes bench`: a `lanes server` and `lanes worker`s started from
//! this very executable, each on the bench's own prefix and database, so that their start-up,
//! peak memory and shutdown are real and theirs. Also the clean-up of everything a run made on
//! the broker and in PostgreSQL, which must happen whether or not the measurements succeeded.

use super::{BenchArgs, BenchError};
use backon::{ConstantBuilder, Retryable};
use lanes::broker::Topology;
use lapin::options::QueueDeleteOptions;
use sqlx::PgPool;
use std::{
    cell::RefCell,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The server and worker processes under test.
pub(super) struct Fleet {
    server: Child,
    workers: Vec<Child>,
    /// How many workers the run asked for.
    size: usize,
    spawner: Spawner,
    /// The highest worker peak RSS of workers already stopped (MB).
    worker_peak: f64,
    pub(super) http: String,
    log: std::path::PathBuf,
}

/// Starts `lanes` processes of this executable on the bench's prefix and database.
struct Spawner {
    exe: std::path::PathBuf,
    amqp_url: String,
    prefix: String,
    database_url: String,
    http: String,
    log: std::fs::File,
    /// Settings of this fleet beside the bench's own (e.g. the lane pool's bounds).
    env: Vec<(String, String)>,
}

impl Spawner {
    /// `lanes ROLE ARGS…`.
    fn spawn(&self, role: &str, args: &[String]) -> Result<Child, BenchError> {
        Command::new(&self.exe)
            .arg(role)
            .args(args)
            .env("LANES_AMQP_URL", &self.amqp_url)
            .env("LANES_PREFIX", &self.prefix)
            .env("DATABASE_URL", &self.database_url)
            .env("LANES_HTTP_ADDR", &self.http)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Quiet unless asked: `RUST_LOG=lanes=debug lanes bench` logs the fleet.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                self.log
                    .try_clone()
                    .map_err(|e| BenchError::Spawn("log".into(), e))?,
            )
            .spawn()
            .map_err(|e| BenchError::Spawn(format!("lanes {role}"), e))
    }
}

impl Fleet {
    pub(super) fn start(args: &BenchArgs, prefix: &str, db: &str) -> Result<Fleet, BenchError> {
        Fleet::start_with(args, prefix, db, Vec::new())
    }

    /// A fleet whose processes also get `env`.
    pub(super) fn start_with(
        args: &BenchArgs,
        prefix: &str,
        db: &str,
        env: Vec<(String, String)>,
    ) -> Result<Fleet, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::Spawn("lanes".into(), e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BenchError::Spawn("lanes server".into(), e))?
            .port();
        let http = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("{prefix}.log"));
        let file = std::fs::File::create(&log).map_err(|e| BenchError::Spawn("log".into(), e))?;
        let spawner = Spawner {
            exe,
            amqp_url: args.amqp_url.clone(),
            prefix: prefix.to_owned(),
            database_url: format!("{}/{db}", args.postgres),
            http: http.clone(),
            log: file,
            env,
        };
        let server = spawner.spawn("server", &[])?;
        let mut fleet = Fleet {
            server,
            workers: Vec::new(),
            size: args.workers,
            spawner,
            worker_peak: 0.0,
            http,
            log,
        };
        fleet.spawn_workers()?;
        Ok(fleet)
    }

    /// Grows the fleet to `size` workers (start them with `spawn_workers`).
    pub(super) fn resize(&mut self, size: usize) {
        self.size = size;
    }

    /// Starts the run's workers (after `stop_workers`, for a backlog).
    pub(super) fn spawn_workers(&mut self) -> Result<(), BenchError> {
        for _ in self.workers.len()..self.size {
            self.workers.push(self.spawner.spawn("worker", &[])?);
        }
        Ok(())
    }

    /// Starts `processes` more worker processes of `each` workers (`lanes worker --workers`).
    pub(super) fn spawn_processes(
        &mut self,
        processes: usize,
        each: usize,
    ) -> Result<(), BenchError> {
        let args = ["--workers".to_owned(), each.to_string()];
        for _ in 0..processes {
            self.workers.push(self.spawner.spawn("worker", &args)?);
        }
        Ok(())
    }

    /// SIGKILLs the first `n` worker processes and reaps them.
    pub(super) fn kill_processes(&mut self, n: usize) {
        for mut child in self.workers.drain(..n.min(self.workers.len())) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id.
    pub(super) fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// The worker processes' ids.
    pub(super) fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(Child::id).collect()
    }

    /// Drains and ends every worker (SIGTERM), keeping the highest peak RSS seen.
    pub(super) fn stop_workers(&mut self) {
        self.worker_peak = self.worker_peak.max(self.peak_rss().1);
        let mut workers = std::mem::take(&mut self.workers);
        terminate(&mut workers);
    }

    /// Waits until the server is active and every worker has its lanes: probes every 100 ms,
    /// and fails as soon as a process exits, or after 60 s.
    pub(super) async fn wait_ready(&mut self) -> Result<(), BenchError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let url = format!("http://{}/workers", self.http);
        let expected = self.workers.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Each probe is a new future, so the processes are reached through a `RefCell`; a probe
        // borrows them only for its liveness check, never across an await.
        let fleet = RefCell::new(self);
        let (client, url, fleet) = (&client, url.as_str(), &fleet);
        let probe = move || async move {
            if workers_ready(client, url, expected).await {
                return Ok(());
            }
            let verdict = fleet.borrow_mut().not_ready(deadline);
            Err(verdict)
        };
        let ready = probe
            .retry(
                ConstantBuilder::new()
                    .with_delay(Duration::from_millis(100))
                    .without_max_times(),
            )
            .when(|p| matches!(p, Probe::NotReady))
            .await;
        match ready {
            Ok(()) => {
                // Standbys subscribe a moment after owners.
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(())
            }
            Err(Probe::Failed(e)) => Err(e),
            // Not reached: the probes are unbounded and end on success or `Failed`.
            Err(Probe::NotReady) => Err(did_not_come_up()),
        }
    }

    /// After a probe found the fleet not ready: `Failed` if a process has exited or `deadline`
    /// has passed, else `NotReady` (probe again).
    fn not_ready(&mut self, deadline: Instant) -> Probe {
        for child in std::iter::once(&mut self.server).chain(self.workers.iter_mut()) {
            if let Ok(Some(status)) = child.try_wait() {
                return Probe::Failed(BenchError::Stalled(format!(
                    "a lanes process exited during start-up ({status}); its log: {}",
                    self.log.display()
                )));
            }
        }
        if Instant::now() > deadline {
            return Probe::Failed(did_not_come_up());
        }
        Probe::NotReady
    }

    /// Peak resident set sizes in MB: the server, and the largest worker.
    pub(super) fn peak_rss(&self) -> (f64, f64) {
        let hwm = |pid: u32| -> f64 {
            super::proc::memory_mb(pid, "VmHWM:").map_or(0.0, |mb| (mb * 10.0).round() / 10.0)
        };
        let worker = self
            .workers
            .iter()
            .map(|w| hwm(w.id()))
            .fold(self.worker_peak, f64::max);
        (hwm(self.server.id()), worker)
    }

    pub(super) fn stop(&mut self) {
        let mut all = std::mem::take(&mut self.workers);
        terminate(&mut all);
        terminate(std::slice::from_mut(&mut self.server));
    }
}

/// SIGTERM to each process, then waits for each; one that does not stop within a minute is
/// killed, and said so.
fn terminate(children: &mut [Child]) {
    for child in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for child in children.iter_mut() {
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

/// Why a readiness probe did not succeed.
enum Probe {
    /// Not yet: probe again after the delay.
    NotReady,
    /// Never: a process exited, or time ran out.
    Failed(BenchError),
}

fn did_not_come_up() -> BenchError {
    BenchError::Stalled("the server and workers did not come up within 60 s".into())
}

/// One look at the server's worker list: is every worker there, and does each hold lanes? An
/// unreachable server or an unreadable answer is "not yet".
async fn workers_ready(client: &reqwest::Client, url: &str, expected: usize) -> bool {
    let workers: Option<serde_json::Value> = match client.get(url).send().await {
        Ok(r) => r.json().await.ok(),
        Err(_) => None,
    };
    workers
        .as_ref()
        .and_then(|w| w.as_array())
        .is_some_and(|ws| {
            ws.len() == expected
                && ws
                    .iter()
                    .all(|w| w["lanes"].as_array().is_some_and(|l| !l.is_empty()))
        })
}

/// A run's own prefix and database, so that it shares nothing with anything else.
pub(super) fn run_names() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (
        format!("bench{}", &id[..8]),
        format!("lanes_bench_{}", &id[..8]),
    )
}

/// Deletes the run's queues and exchanges and drops its database; best effort, errors ignored.
pub(super) async fn cleanup(conn: &lapin::Connection, prefix: &str, postgres: &str, db: &str) {
    if let Ok(ch) = conn.create_channel().await {
        let topo = Topology::new(prefix);
        let mut queues = vec![
            topo.submit(),
            topo.events(),
            topo.dead(),
            topo.default_queue(),
        ];
        queues.extend((0..super::scale::MOST_LANES).map(|n| topo.lane(n)));
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
        let topo = Topology::new(prefix);
        for x in [topo.exchange(), topo.control(), topo.worker_events()] {
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
