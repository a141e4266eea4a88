//! `TestApp`: spawns a `lanes server` and `lanes worker` processes on a fresh prefix and
//! database, and offers the client side (AMQP publish, HTTP, SQL) the tests need. Dropping it
//! kills the processes, deletes the test's queues and exchanges, and drops its database.
//! What a test reads and sends is in `talk` (a child module, loaded by path so that every test
//! target that includes this file gets it too).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties, Connection, ConnectionProperties,
};
use serde_json::Value;
use sqlx::PgPool;
use std::{
    fs::File,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use uuid::Uuid;

#[path = "talk.rs"]
mod talk;
pub use talk::*;

#[path = "processes.rs"]
mod processes;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG_URL: &str = "postgres://root@127.0.0.1:5432";

/// How a test wants its deployment.
#[derive(Clone)]
pub struct Opts {
    pub workers: usize,
    pub max_queues: u32,
    pub concurrency: usize,
    pub env: Vec<(String, String)>,
    /// A fixed prefix (default: a fresh `t<random>`). A test that fixes it owns the vhost it
    /// runs in (see `broker_defs`), so the helper does not delete broker objects on drop.
    pub prefix: Option<String>,
    /// The AMQP URL of the server, the workers, and the test's own connection
    /// (`TestApp::amqp`, which publishes); each defaults to `AMQP_URL`.
    pub server_amqp_url: Option<String>,
    pub worker_amqp_url: Option<String>,
    pub client_amqp_url: Option<String>,
    /// The token the helpers' reads send (for a server that protects reads).
    pub read_token: Option<String>,
    /// Servers to start. With more than one, every server and worker starts at the same
    /// moment, as a fresh deployment does (no database, no topology yet); the others' URLs are
    /// in `TestApp::standbys`, and `base` is whichever became active.
    pub servers: usize,
    /// The API serves HTTPS (the test sets `LANES_TLS_CERT` and `LANES_TLS_KEY` for the server):
    /// `base` is `https://localhost:…` and the helpers' client trusts this CA file.
    pub api_ca: Option<PathBuf>,
    /// Reach PostgreSQL as `localhost` with these URL parameters (`sslmode=…`).
    pub database_params: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            workers: 2,
            max_queues: 6,
            concurrency: 8,
            env: Vec::new(),
            prefix: None,
            server_amqp_url: None,
            worker_amqp_url: None,
            client_amqp_url: None,
            read_token: None,
            servers: 1,
            api_ca: None,
            database_params: None,
        }
    }
}

pub struct TestApp {
    pub prefix: String,
    /// Unique per test: names the log files (equal to the prefix unless the test fixed one).
    pub name: String,
    pub db_name: String,
    pub base: String,
    pub pool: PgPool,
    pub amqp: Connection,
    pub http: reqwest::Client,
    pub opts: Opts,
    port: u16,
    server: Option<Child>,
    pub workers: Vec<Child>,
    /// Other processes a test started (standby servers); killed on drop.
    pub extra: Vec<Child>,
    /// The URLs of the servers started beside the first (`Opts::servers`).
    pub standbys: Vec<String>,
}

/// A job row as the tests read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub args: Option<Value>,
    pub resources: Vec<String>,
    pub state: String,
    pub attempts: i32,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub queue: Option<String>,
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// A delayed job's due time.
    pub run_at: Option<DateTime<Utc>>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::with(Opts::default()).await
    }

    pub async fn with(opts: Opts) -> TestApp {
        let mut app = TestApp::unstarted(opts).await;
        let opts = app.opts.clone();
        app.start_server();
        if opts.servers > 1 {
            for _ in 1..opts.servers {
                let (child, url) = app.start_standby();
                app.extra.push(child);
                app.standbys.push(url);
            }
            for _ in 0..opts.workers {
                app.start_worker();
            }
            app.wait_one_active().await;
        } else {
            app.wait_healthy().await;
        }
        app.pool = PgPool::connect(&format!("{PG_URL}/{}", app.db_name))
            .await
            .unwrap();
        if opts.servers <= 1 {
            for _ in 0..opts.workers {
                app.start_worker();
            }
        }
        app.wait_workers(opts.workers).await;
        app
    }

    /// The app's names, port and clean-up, with no process started: for a test that starts
    /// lanes its own way (a script, say) under them.
    pub async fn unstarted(opts: Opts) -> TestApp {
        lanes::tls::install_provider();
        let id = Uuid::new_v4().simple().to_string();
        let name = format!("t{}", &id[..10]);
        let prefix = opts.prefix.clone().unwrap_or_else(|| name.clone());
        let db_name = format!("lanes_test_{}", &id[..10]);
        let port = free_port();
        let amqp = Connection::connect(
            opts.client_amqp_url.as_deref().unwrap_or(AMQP_URL),
            ConnectionProperties::default()
                .with_connection_name(format!("lanes-test-{name}").into()),
        )
        .await
        .expect("RabbitMQ must run on 127.0.0.1:5672 (scripts/services.sh)");
        TestApp {
            base: match &opts.api_ca {
                Some(_) => format!("https://localhost:{port}"),
                None => format!("http://127.0.0.1:{port}"),
            },
            prefix,
            name,
            db_name,
            pool: PgPool::connect_lazy(&format!("{PG_URL}/postgres")).unwrap(),
            amqp,
            http: match &opts.api_ca {
                Some(ca) => {
                    let pem = std::fs::read(ca).expect("the test's CA file");
                    let ca = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
                    reqwest::Client::builder()
                        .add_root_certificate(ca)
                        .build()
                        .unwrap()
                }
                None => reqwest::Client::new(),
            },
            opts: opts.clone(),
            port,
            server: None,
            workers: Vec::new(),
            extra: Vec::new(),
            standbys: Vec::new(),
        }
    }

    /// The processes' `DATABASE_URL`.
    pub fn database_url(&self) -> String {
        match &self.opts.database_params {
            Some(params) => format!("postgres://root@localhost:5432/{}?{params}", self.db_name),
            None => format!("{PG_URL}/{}", self.db_name),
        }
    }

    /// Waits (bounded) until one of the servers is active and makes it `base`.
    async fn wait_one_active(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let urls: Vec<String> = std::iter::once(self.base.clone())
            .chain(self.standbys.iter().cloned())
            .collect();
        loop {
            for url in &urls {
                if talk::is_active(url).await == Some(true) {
                    if *url != self.base {
                        self.standbys.retain(|u| u != url);
                        self.standbys
                            .push(std::mem::replace(&mut self.base, url.clone()));
                    }
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no server became active; see logs of {}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn command(&self, role: &str, log: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lanes"));
        let url = match role {
            "worker" => self.opts.worker_amqp_url.as_deref(),
            _ => self.opts.server_amqp_url.as_deref(),
        };
        cmd.arg(role)
            .env("LANES_AMQP_URL", url.unwrap_or(AMQP_URL))
            .env("LANES_PREFIX", &self.prefix)
            .env("DATABASE_URL", self.database_url())
            .env("LANES_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .env("LANES_MAX_QUEUES", self.opts.max_queues.to_string())
            .env("LANES_CONCURRENCY", self.opts.concurrency.to_string())
            .env("LANES_HEARTBEAT_INTERVAL_MS", "300")
            .env("LANES_HEARTBEAT_TIMEOUT_MS", "1500")
            .env("LANES_BROKER_SILENCE_MS", "1000")
            .env("RUST_LOG", "info,lanes=debug,lapin=off")
            .env_remove("LANES_API_TOKEN")
            .stdin(Stdio::null());
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        self.log_to(&mut cmd, log);
        cmd
    }

    /// Where the output of this app's process `log` goes.
    pub fn log_path(&self, log: &str) -> PathBuf {
        log_dir().join(format!("{}-{log}.log", self.name))
    }

    /// Sends a process's output to its log file. Appended: a restarted process keeps the log
    /// of the one before it.
    pub fn log_to(&self, cmd: &mut Command, log: &str) {
        let path = self.log_path(log);
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
    }

    /// On a failing test, prints what its processes logged last and every warning or error,
    /// so that a failure on CI says more than its assertion.
    fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(log_dir()) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{}-", self.name)))
            })
            .collect();
        logs.sort();
        for path in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let notable: Vec<&str> = lines
                .iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .copied()
                .collect();
            eprintln!(
                "---- {} (warnings and errors, last 40) ----",
                path.display()
            );
            for l in &notable[notable.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
            eprintln!("---- {} (last 30 lines) ----", path.display());
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
    }

    fn cleanup(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for child in self
            .server
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(self.extra.iter_mut())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (prefix, db, max) = (
            self.prefix.clone(),
            self.db_name.clone(),
            self.opts.max_queues,
        );
        // A fixed prefix lives in the test's own vhost, which the test deletes; deleting
        // `<prefix>.*` in the default vhost could hit someone else's deployment.
        let own_objects = self.opts.prefix.is_none();
        block_on_in_drop(async move {
            let conn = match own_objects {
                true => Connection::connect(AMQP_URL, ConnectionProperties::default())
                    .await
                    .ok(),
                false => None,
            };
            if let Some(conn) = conn {
                let ch = conn.create_channel().await.unwrap();
                let mut queues: Vec<String> = ["submit", "events", "dead", "q.default"]
                    .iter()
                    .map(|q| format!("{prefix}.{q}"))
                    .collect();
                queues.extend((0..max).map(|n| format!("{prefix}.q.{n}")));
                for q in queues {
                    let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
                }
                let exchanges = [
                    prefix.clone(),
                    format!("{prefix}.control"),
                    format!("{prefix}.worker-events"),
                ];
                for x in exchanges {
                    let _ = ch
                        .exchange_delete(x.as_str().into(), Default::default())
                        .await;
                }
                let _ = conn.close(200, "bye".into()).await;
            }
            if let Ok(pool) = PgPool::connect(&format!("{PG_URL}/postgres")).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .execute(&pool)
                    .await;
            }
        });
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cleanup();
    }
}
