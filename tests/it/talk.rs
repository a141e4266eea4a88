//! The client side of a `TestApp`: what a test reads and sends (HTTP, AMQP, SQL, the
//! management API), and the checks and workloads many tests share. A child module of
//! `helpers`, so that it sees the app's fields.

use super::*;

impl TestApp {
    /// What a process of this app has logged so far (`server`, `worker0`, `custom0`, ...).
    pub fn process_log(&self, process: &str) -> String {
        let path = log_dir().join(format!("{}-{process}.log", self.name));
        std::fs::read_to_string(path).unwrap_or_default()
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

    pub async fn get_json(&self, path: &str) -> Result<Value, reqwest::Error> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.opts.read_token {
            req = req.bearer_auth(t);
        }
        req.send().await?.json().await
    }

    /// Runs the `lanes` command line against this app's API (without a token), echoing what it
    /// printed into the test's output.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let out = tokio::task::block_in_place(|| {
            std::process::Command::new(TestApp::lanes_binary())
                .args(args)
                .env("LANES_API_URL", &self.base)
                .env_remove("LANES_API_TOKEN")
                .output()
                .unwrap()
        });
        eprintln!(
            "lanes {}: {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Sets a resource's limit through the API (in force when it answers: the API is the
    /// active server's).
    pub async fn set_limit(&self, resource: &str, limit: &lanes::limit::Limit) {
        let resp = self
            .http
            .put(format!("{}/limits/{resource}", self.base))
            .json(limit)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
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
        let mut confirms = Vec::with_capacity(messages.len());
        for (body, id) in messages {
            let mut props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            if let Some(id) = id {
                props = props.with_message_id(id.as_str().into());
            }
            let confirm = ch
                .basic_publish(
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
            confirms.push(confirm);
        }
        // Each one: a nack or a returned message is a lost submit, not a success
        // (`wait_for_confirms` reports only returned messages).
        for confirm in confirms {
            let confirmation = confirm.await.unwrap();
            assert_eq!(
                confirmation,
                lapin::Confirmation::Ack(None),
                "a submit message was not accepted"
            );
        }
        ch.close(200, "done".into()).await.unwrap();
    }

    pub async fn rows(&self) -> Vec<Row> {
        sqlx::query_as(
            "SELECT id, args, resources, state, attempts, result, error, queue, worker,
                    started_at, finished_at, created_at, run_at FROM jobs ORDER BY seq",
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

    /// Waits (bounded) for exactly `n` jobs and asserts every one completed (none lost,
    /// duplicated, failed or stranded).
    #[allow(dead_code)] // tests/cluster.rs, tests/partition.rs
    pub async fn wait_completed(&self, n: usize, timeout: Duration) -> Vec<Row> {
        let rows = self.wait_final(n, timeout).await;
        let bad: Vec<_> = rows.iter().filter(|r| r.state != "completed").collect();
        assert!(bad.is_empty(), "jobs not completed: {bad:?}");
        assert_eq!(rows.len(), n, "jobs lost or duplicated");
        rows
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
}

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

/// A submit body.
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

impl TestApp {
    /// Waits until the standby at `standby_url` is the active server and talks to it from then
    /// on.
    pub async fn take_over(&mut self, standby_url: String) {
        eventually(
            Duration::from_secs(30),
            "the standby to take over",
            || async { (is_active(&standby_url).await == Some(true)).then_some(()) },
        )
        .await;
        self.base = standby_url;
    }

    /// Waits until every schedule made its jobs up to `to` and every job due by then ended.
    pub async fn wait_due_ended(&self, to: DateTime<Utc>, timeout: Duration) {
        eventually(
            timeout,
            "the jobs due by then to be made and end",
            || async {
                let open: i64 = sqlx::query_scalar(
                    "SELECT (SELECT count(*) FROM jobs WHERE run_at <= $1
                           AND state NOT IN ('completed', 'failed', 'canceled'))
                      + (SELECT count(*) FROM schedules
                          WHERE NOT paused AND (last_tick IS NULL OR last_tick < $1))",
                )
                .bind(to)
                .fetch_one(&self.pool)
                .await
                .ok()?;
                (open == 0).then_some(())
            },
        )
        .await;
    }
}

/// Asks `check` every 50 ms until it answers `Some`, for at most `timeout`; then fails the
/// test saying what it waited for.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "waited {timeout:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
