//! `TestApp`: spawns a `lanes server` and `lanes worker` processes on a fresh prefix and
//! database, and offers the client side (AMQP publish, HTTP, SQL) the tests need. Dropping it
//! kills the processes, deletes the test's queues and exchanges, and drops its database.

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
        let mut app = TestApp {
            base: format!("http://127.0.0.1:{port}"),
            prefix,
            name,
            db_name,
            pool: PgPool::connect_lazy(&format!("{PG_URL}/postgres")).unwrap(),
            amqp,
            http: reqwest::Client::new(),
            opts: opts.clone(),
            port,
            server: None,
            workers: Vec::new(),
            extra: Vec::new(),
        };
        app.start_server();
        app.wait_healthy().await;
        app.pool = PgPool::connect(&format!("{PG_URL}/{}", app.db_name))
            .await
            .unwrap();
        for _ in 0..opts.workers {
            app.start_worker();
        }
        app.wait_workers(opts.workers).await;
        app
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
            .env("DATABASE_URL", format!("{PG_URL}/{}", self.db_name))
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
        let path = log_dir().join(format!("{}-{log}.log", self.name));
        // Appended: a restarted process keeps the log of the one before it.
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        cmd
    }

    pub fn start_server(&mut self) {
        self.server = Some(self.command("server", "server").spawn().unwrap());
    }

    /// A second server (a standby while the first is active) on its own HTTP port.
    pub fn start_standby(&mut self) -> (Child, String) {
        let port = free_port();
        let mut cmd = self.command("server", "standby");
        cmd.env("LANES_HTTP_ADDR", format!("127.0.0.1:{port}"));
        (cmd.spawn().unwrap(), format!("http://127.0.0.1:{port}"))
    }

    /// The server process's pid.
    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().expect("a server runs").id()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the server process.
    pub fn signal_server(&self, signal: &str) {
        let pid = self.server_pid().to_string();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The server's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let resp = self.http.get(format!("{}/metrics", self.base)).send().await;
        resp.unwrap().text().await.unwrap()
    }

    /// One counter or gauge from `/metrics` (0 when the server has not reported it yet).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
    }

    /// Holds an `ACCESS EXCLUSIVE` lock on `jobs` for `hold`: every job-state write waits.
    pub async fn lock_jobs_table(&self, hold: Duration) {
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        tokio::time::sleep(hold).await;
        tx.rollback().await.unwrap();
    }

    /// Starts a new worker in place of each one that has exited (a task killed it).
    pub fn replace_dead_workers(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            if self.workers[i].try_wait().unwrap().is_some() {
                let _ = self.workers.remove(i).wait();
                self.start_worker();
            } else {
                i += 1;
            }
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to worker `i`.
    pub fn signal_worker(&self, i: usize, signal: &str) {
        let pid = self.workers[i].id().to_string();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill().unwrap();
            s.wait().unwrap();
        }
    }

    /// SIGKILLs worker `i`.
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].kill().unwrap();
        self.workers[i].wait().unwrap();
    }

    /// SIGTERMs worker `i` and waits (bounded) for it to exit; returns its exit code.
    pub async fn term_worker(&mut self, i: usize) -> Option<i32> {
        let pid = self.workers[i].id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..600 {
            if let Some(status) = self.workers[i].try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("worker {i} did not exit within 60 s of SIGTERM");
    }

    /// SIGTERMs the server and every worker at the same moment and waits (bounded) for all of
    /// them to exit; returns their exit codes, the server's first.
    pub async fn term_all(&mut self) -> Vec<Option<i32>> {
        let mut children: Vec<Child> = self.server.take().into_iter().collect();
        children.append(&mut self.workers);
        let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
        Command::new("kill")
            .arg("-TERM")
            .args(&pids)
            .status()
            .unwrap();
        let mut codes = Vec::new();
        for mut child in children {
            let mut code = None;
            for _ in 0..600 {
                if let Some(status) = child.try_wait().unwrap() {
                    code = Some(status.code());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let Some(code) = code else {
                let _ = child.kill();
                panic!("pid {} did not exit within 60 s of SIGTERM", child.id());
            };
            codes.push(code);
        }
        codes
    }

    /// Starts the example worker with tasks of its own (`examples/custom_worker.rs`, built by
    /// `cargo test --all-targets` or `cargo build --examples`).
    pub fn start_custom_worker(&mut self) {
        let lanes = PathBuf::from(env!("CARGO_BIN_EXE_lanes"));
        let example = lanes.with_file_name("examples").join("custom_worker");
        assert!(
            example.exists(),
            "{} is built by `cargo build --examples`",
            example.display()
        );
        let n = self.workers.len();
        // The environment `lanes worker` would get (the command itself is not run).
        let cmd = self.command("worker", &format!("custom{n}"));
        let mut custom = Command::new(example);
        custom.envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let log = log_dir().join(format!("{}-custom{n}.log", self.name));
        let file = File::options().create(true).append(true).open(log).unwrap();
        custom
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        self.workers.push(custom.spawn().unwrap());
    }

    pub fn start_worker(&mut self) {
        let n = self.workers.len();
        let child = self
            .command("worker", &format!("worker{n}"))
            .spawn()
            .unwrap();
        self.workers.push(child);
    }

    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["active"] == Value::Bool(true) {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not become active; see logs of {}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` workers are registered and each consumes its assigned lanes.
    pub async fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Value::Array(ws)) = self.get_json("/workers").await {
                let settled = ws.iter().all(|w| {
                    let mut a: Vec<&Value> = w["assigned"].as_array().unwrap().iter().collect();
                    a.extend(w["standby"].as_array().unwrap().iter());
                    let mut l: Vec<&Value> = w["lanes"].as_array().unwrap().iter().collect();
                    a.sort_by_key(|v| v.to_string());
                    l.sort_by_key(|v| v.to_string());
                    a == l
                });
                if ws.len() == n && settled {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "workers did not register");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, reqwest::Error> {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .json()
            .await
    }

    /// POSTs a raw body to `/jobs`.
    pub async fn post_jobs(
        &self,
        body: impl Into<reqwest::Body>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/jobs", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Publishes a submit message as an outside client would (persistent, confirmed).
    pub async fn publish(&self, body: &[u8], message_id: Option<&str>) {
        self.publish_many(&[(body.to_vec(), message_id.map(str::to_owned))])
            .await;
    }

    pub async fn publish_many(&self, messages: &[(Vec<u8>, Option<String>)]) {
        let ch = self.amqp.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for (body, id) in messages {
            let mut props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            if let Some(id) = id {
                props = props.with_message_id(id.as_str().into());
            }
            ch.basic_publish(
                self.prefix.as_str().into(),
                "submit".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .unwrap();
        }
        let returned = ch.wait_for_confirms().await.unwrap();
        assert!(
            returned.is_empty(),
            "submit messages were returned unroutable"
        );
        ch.close(200, "done".into()).await.unwrap();
    }

    pub async fn rows(&self) -> Vec<Row> {
        sqlx::query_as(
            "SELECT id, args, resources, state, attempts, result, error, queue, worker,
                    started_at, finished_at FROM jobs ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Waits (bounded) until `n` jobs exist and all are in a final state.
    pub async fn wait_final(&self, n: usize, timeout: Duration) -> Vec<Row> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.rows().await;
            let done = rows
                .iter()
                .filter(|r| matches!(r.state.as_str(), "completed" | "failed" | "canceled"))
                .count();
            if rows.len() >= n && done == rows.len() {
                return rows;
            }
            if Instant::now() > deadline {
                let stuck: Vec<_> = rows
                    .iter()
                    .filter(|r| !matches!(r.state.as_str(), "completed" | "failed"))
                    .take(5)
                    .collect();
                panic!(
                    "timed out: {} jobs, {done} final, expected {n}; e.g. {stuck:?}",
                    rows.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads every message in `<prefix>.dead`: (body, reason header).
    pub async fn dead_letters(&self, n: usize) -> Vec<(Vec<u8>, String)> {
        let ch = self.amqp.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                format!("{}.dead", self.prefix).into(),
                "lanes-test-dead".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                .await
                .expect("dead letters arrive")
                .unwrap()
                .unwrap();
            let reason = d
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-lanes-reason").cloned())
                .map(|v| match v {
                    AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            out.push((d.data, reason));
        }
        out
    }

    pub fn lanes_binary() -> &'static str {
        env!("CARGO_BIN_EXE_lanes")
    }

    fn cleanup(&mut self) {
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
                for x in [prefix.clone(), format!("{prefix}.control")] {
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

/// A submit body.
/// A server's `/healthz`, or None when it does not answer within 2 s (down, or stopped).
pub async fn health_of(url: &str) -> Option<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let health = client.get(format!("{url}/healthz")).send().await.ok()?;
    health.json::<Value>().await.ok()
}

/// Whether the server at `url` runs the control plane (None when it does not answer).
pub async fn is_active(url: &str) -> Option<bool> {
    health_of(url).await?["active"].as_bool()
}

pub fn submit(task: &str, args: Value, resources: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"task": task, "args": args, "resources": resources}))
        .unwrap()
}

/// Pairs of jobs on one resource where the later-submitted one started before the earlier one
/// finished.
pub fn order_violations(rows: &[Row]) -> usize {
    let mut by_resource: std::collections::HashMap<&str, Vec<&Row>> = Default::default();
    for r in rows {
        for res in &r.resources {
            by_resource.entry(res.as_str()).or_default().push(r);
        }
    }
    by_resource
        .values()
        .flat_map(|list| list.windows(2))
        .filter(|pair| match (pair[0].finished_at, pair[1].started_at) {
            (Some(f), Some(s)) => f > s,
            _ => false,
        })
        .count()
}

/// Every job completed, and for every resource, jobs ran one at a time in submit order.
pub fn assert_completed_in_order(rows: &[Row]) {
    let stuck: Vec<_> = rows.iter().filter(|r| r.state != "completed").collect();
    assert!(stuck.is_empty(), "jobs not completed: {stuck:?}");
    let mut by_resource: std::collections::HashMap<&str, Vec<&Row>> = Default::default();
    for r in rows {
        for res in &r.resources {
            by_resource.entry(res.as_str()).or_default().push(r);
        }
    }
    for (res, list) in by_resource {
        for pair in list.windows(2) {
            assert!(
                pair[0].finished_at.unwrap() <= pair[1].started_at.unwrap(),
                "{res}: {} started before {} (submitted earlier) finished",
                pair[1].id,
                pair[0].id
            );
        }
    }
}

/// Runs async clean-up from a `Drop` (which may run inside a runtime, or while panicking) on a
/// thread and runtime of its own, and waits for it.
pub fn block_on_in_drop(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup)
    })
    .join()
    .unwrap();
}

/// `n` sleep tasks of `ms` over `resources` resources, interleaved.
pub fn sleep_workload(n: usize, resources: usize, ms: u64) -> Vec<(Vec<u8>, Option<String>)> {
    (0..n)
        .map(|i| {
            let r = format!("res:{}", i % resources);
            (
                submit("sleep", serde_json::json!({ "ms": ms }), &[r.as_str()]),
                Some(Uuid::new_v4().to_string()),
            )
        })
        .collect()
}

/// The RabbitMQ management HTTP API (guest/guest, like `AMQP_URL`).
pub const MGMT_URL: &str = "http://127.0.0.1:15672";

/// A request to the management API, e.g. `mgmt(&http, Method::GET, "/queues/%2f/x")`.
pub fn mgmt(
    http: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    http.request(method, format!("{MGMT_URL}/api{path}"))
        .basic_auth("guest", Some("guest"))
        .timeout(Duration::from_secs(20))
}

/// GETs a management API path and returns its JSON (panics on an HTTP error).
pub async fn mgmt_get(http: &reqwest::Client, path: &str) -> Value {
    let resp = mgmt(http, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap_or_else(|e| panic!("management API {path}: {e} (scripts/services.sh)"));
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "GET /api{path}: {status} {body}");
    serde_json::from_str(&body).unwrap()
}
