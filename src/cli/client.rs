//! Client commands (`submit`, `jobs`, `job`, `workers`, `queues`): thin wrappers over the HTTP
//! API, with progress output for `submit --wait`. They print for a person at a terminal, so
//! they belong to the binary; programs talk to the HTTP API directly.

use clap::Args;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the lanes API at {url} (is `lanes server` running?)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {message}")]
    Api { status: u16, message: String },
    #[error("bad --args: {0}")]
    BadArgs(serde_json::Error),
    #[error("job {id} ended {state}: {error}")]
    JobFailed {
        id: String,
        state: String,
        error: String,
    },
}

/// Where the API is.
#[derive(Args, Debug, Clone)]
pub struct ApiConfig {
    /// Base URL of a lanes server's HTTP API.
    #[arg(long, env = "LANES_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// Bearer token for write requests.
    #[arg(long, env = "LANES_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// Task name (e.g. `sleep`, `echo`).
    pub task: String,
    /// Task arguments as JSON.
    #[arg(long, default_value = "null")]
    pub args: String,
    /// A resource the task touches (repeatable; `shared:` prefix for shared access).
    #[arg(long = "resource", short = 'r')]
    pub resources: Vec<String>,
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// Wait for the job to end, showing its progress; exit non-zero if it failed.
    #[arg(long)]
    pub wait: bool,
}

pub struct Client {
    cfg: ApiConfig,
    http: reqwest::Client,
}

impl Client {
    pub fn new(cfg: ApiConfig) -> Self {
        Client {
            cfg,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{}", self.cfg.api_url.trim_end_matches('/'), path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.cfg.api_token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|source| CliError::Unreachable {
            url: self.cfg.api_url.clone(),
            source,
        })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(CliError::Api {
                status: status.as_u16(),
                message: value["error"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_owned(),
            })
        }
    }

    pub async fn submit(&self, a: &SubmitArgs) -> Result<(), CliError> {
        let args: Value = serde_json::from_str(&a.args).map_err(CliError::BadArgs)?;
        let mut body = json!({"task": a.task, "args": args, "resources": a.resources});
        if let Some(m) = a.max_attempts {
            body["max_attempts"] = json!(m);
        }
        let job = self
            .call(reqwest::Method::POST, "/jobs", Some(body))
            .await?;
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        println!("{id}");
        if a.wait {
            self.wait(&id).await?;
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<(), CliError> {
        let mut last = String::new();
        loop {
            match self
                .call(reqwest::Method::GET, &format!("/jobs/{id}"), None)
                .await
            {
                Ok(job) => {
                    let state = job["state"].as_str().unwrap_or("?").to_owned();
                    let progress = match &job["progress"] {
                        Value::Null => String::new(),
                        p => format!(
                            " {:.0}% {}",
                            p["percent"].as_f64().unwrap_or(0.0),
                            p["message"].as_str().unwrap_or("")
                        ),
                    };
                    let line = format!("{state}{progress}");
                    if line != last {
                        eprintln!("  {id}: {line}");
                        last = line;
                    }
                    match state.as_str() {
                        "completed" => {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(&job["result"]).unwrap_or_default()
                            );
                            return Ok(());
                        }
                        "failed" | "canceled" => {
                            return Err(CliError::JobFailed {
                                id: id.to_owned(),
                                state,
                                error: job["error"].as_str().unwrap_or("").to_owned(),
                            })
                        }
                        _ => {}
                    }
                }
                // Not recorded by the Dispatcher yet.
                Err(CliError::Api { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn jobs(&self, state: Option<String>, limit: i64) -> Result<(), CliError> {
        let mut path = format!("/jobs?limit={limit}");
        if let Some(s) = state {
            path.push_str(&format!("&state={s}"));
        }
        let jobs = self.call(reqwest::Method::GET, &path, None).await?;
        println!(
            "{:<36}  {:<9}  {:<10}  {:>3}  {:<14}  RESOURCES",
            "ID", "STATE", "TASK", "ATT", "QUEUE"
        );
        for j in jobs.as_array().into_iter().flatten() {
            let resources: Vec<&str> = j["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "{:<36}  {:<9}  {:<10}  {:>3}  {:<14}  {}",
                j["id"].as_str().unwrap_or(""),
                j["state"].as_str().unwrap_or(""),
                j["task"].as_str().unwrap_or(""),
                j["attempts"],
                j["queue"].as_str().unwrap_or("-"),
                resources.join(","),
            );
        }
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<(), CliError> {
        let job = self
            .call(reqwest::Method::GET, &format!("/jobs/{id}"), None)
            .await?;
        println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
        for line in why_waiting(&job) {
            println!("{line}");
        }
        Ok(())
    }

    pub async fn workers(&self) -> Result<(), CliError> {
        let workers = self.call(reqwest::Method::GET, "/workers", None).await?;
        println!(
            "{:<16}  {:<20}  {:>7}  {:>8}  {:>7}  LANES",
            "WORKER", "HOST", "PID", "RUNNING", "HB AGE"
        );
        for w in workers.as_array().into_iter().flatten() {
            let lanes: Vec<&str> = w["lanes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "{:<16}  {:<20}  {:>7}  {:>8}  {:>5}ms  {}{}",
                w["id"].as_str().unwrap_or(""),
                w["host"].as_str().unwrap_or("?"),
                w["pid"],
                w["running"].as_array().map_or(0, Vec::len),
                w["heartbeat_age_ms"],
                lanes.join(","),
                if w["draining"] == json!(true) {
                    " (draining)"
                } else {
                    ""
                },
            );
        }
        Ok(())
    }

    /// `POST /jobs/{id}/cancel` or `/retry`, printing what became of the job.
    pub async fn steer(&self, id: &str, action: &str) -> Result<(), CliError> {
        let out = self
            .call(reqwest::Method::POST, &format!("/jobs/{id}/{action}"), None)
            .await?;
        let state = out["state"].as_str().unwrap_or("?");
        match state {
            "canceling" => println!("job {id}: cancel requested; its worker stops it"),
            _ => println!("job {id}: {state}"),
        }
        Ok(())
    }

    pub async fn drain(&self, id: &str) -> Result<(), CliError> {
        self.call(reqwest::Method::POST, &format!("/workers/{id}/drain"), None)
            .await?;
        println!("worker {id} is draining");
        Ok(())
    }

    pub async fn queues(&self) -> Result<(), CliError> {
        let q = self.call(reqwest::Method::GET, "/queues", None).await?;
        println!(
            "waiting: {}  reserved resources: {}",
            q["waiting"], q["reserved_resources"]
        );
        println!("{:<24}  {:>10}  OWNER", "QUEUE", "UNFINISHED");
        for l in q["lanes"].as_array().into_iter().flatten() {
            println!(
                "{:<24}  {:>10}  {}",
                l["queue"].as_str().unwrap_or(""),
                l["unfinished"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                l["owner"].as_str().unwrap_or("-"),
            );
        }
        Ok(())
    }
}

/// A waiting or queued job's `blocked_by`, in words: "waits for 3f2a1c0d… (running on
/// w-9c1e…, lane lanes.q.4) on repo:42".
pub fn why_waiting(job: &Value) -> Vec<String> {
    let Some(by) = job["blocked_by"].as_array() else {
        return Vec::new();
    };
    if by.is_empty() {
        return vec!["next in line: nothing holds it back".to_owned()];
    }
    by.iter()
        .map(|b| {
            let short: String = b["id"].as_str().unwrap_or("?").chars().take(8).collect();
            let state = b["state"].as_str().unwrap_or("?");
            let mut whose = state.to_owned();
            if let Some(w) = b["worker"].as_str().filter(|_| state == "running") {
                whose = format!("{state} on {w}");
            }
            if let Some(lane) = b["lane"].as_str() {
                whose = format!("{whose}, lane {lane}");
            }
            match b["resource"].as_str() {
                Some(r) => format!("waits for {short}… ({whose}) on {r}"),
                None => format!("waits for {short}… ({whose}), ahead in its lane"),
            }
        })
        .collect()
}
