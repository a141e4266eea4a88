//! Client commands (`submit`, `jobs`, `job`, `cancel`, `retry`, `workers`, `queues`): thin
//! wrappers over the HTTP API. They print for a person at a terminal (`print`), or JSON with
//! `-o json`; `submit --wait` follows the job (`wait`). Each failure has its exit code.

use super::{error::CliError, print, wait};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

/// Where the API is.
#[derive(Args, Debug, Clone)]
pub struct ApiConfig {
    /// Base URL of a lanes server's HTTP API.
    #[arg(long, env = "LANES_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// Bearer token for write requests.
    #[arg(long, env = "LANES_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// CA certificates (PEM) trusted beside the system's, for an `https://` API.
    #[arg(long, env = "LANES_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Output: text for a person, json for a program.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
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
    /// Wait for the job to end, showing its progress (a bar on a terminal); exit 5 if it
    /// failed or was canceled.
    #[arg(long)]
    pub wait: bool,
}

/// Filters of `lanes jobs`.
#[derive(Args, Debug, Clone)]
pub struct JobsArgs {
    /// Only jobs in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only jobs on this resource.
    #[arg(long)]
    pub resource: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

pub struct Client {
    cfg: ApiConfig,
    http: reqwest::Client,
}

impl Client {
    pub fn new(cfg: ApiConfig) -> Result<Self, CliError> {
        let trust = lanes::tls::Trust::load(cfg.ca_file.as_deref())?;
        let http = trust
            .http()
            .build()
            .map_err(|source| CliError::Unreachable {
                url: cfg.api_url.clone(),
                source,
            })?;
        Ok(Client { cfg, http })
    }

    fn json(&self) -> bool {
        self.cfg.output == Output::Json
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
        if !a.wait {
            match self.json() {
                true => println!("{job}"),
                false => println!("{id}"),
            }
            return Ok(());
        }
        if !self.json() {
            println!("{id}");
        }
        let path = format!("/jobs/{id}");
        let ended = wait::follow(&id, || self.call(reqwest::Method::GET, &path, None)).await?;
        match self.json() {
            true => println!("{ended}"),
            false if ended["state"] == "completed" => println!(
                "{}",
                serde_json::to_string_pretty(&ended["result"]).unwrap_or_default()
            ),
            false => {}
        }
        match ended["state"].as_str() {
            Some("completed") => Ok(()),
            state => Err(CliError::JobFailed {
                id,
                state: state.unwrap_or("?").to_owned(),
                error: ended["error"].as_str().unwrap_or("").to_owned(),
            }),
        }
    }

    pub async fn jobs(&self, f: &JobsArgs) -> Result<(), CliError> {
        let mut path = format!("/jobs?limit={}", f.limit);
        for (k, v) in [
            ("state", &f.state),
            ("task", &f.task),
            ("resource", &f.resource),
        ] {
            if let Some(v) = v {
                let v =
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
                path.push_str(&format!("&{k}={v}"));
            }
        }
        let jobs = self.call(reqwest::Method::GET, &path, None).await?;
        self.show(&jobs, print::jobs);
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<(), CliError> {
        let job = self
            .call(reqwest::Method::GET, &format!("/jobs/{id}"), None)
            .await?;
        self.show(&job, print::job);
        Ok(())
    }

    pub async fn workers(&self) -> Result<(), CliError> {
        let workers = self.call(reqwest::Method::GET, "/workers", None).await?;
        self.show(&workers, print::workers);
        Ok(())
    }

    pub async fn queues(&self) -> Result<(), CliError> {
        let q = self.call(reqwest::Method::GET, "/queues", None).await?;
        self.show(&q, print::queues);
        Ok(())
    }

    /// `POST /jobs/{id}/cancel` or `/retry`, printing what became of the job.
    pub async fn steer(&self, id: &str, action: &str) -> Result<(), CliError> {
        let out = self
            .call(reqwest::Method::POST, &format!("/jobs/{id}/{action}"), None)
            .await?;
        let state = out["state"].as_str().unwrap_or("?");
        match (self.json(), state) {
            (true, _) => println!("{out}"),
            (false, "canceling") => println!("job {id}: cancel requested; its worker stops it"),
            (false, _) => println!("job {id}: {state}"),
        }
        Ok(())
    }

    pub async fn drain(&self, id: &str) -> Result<(), CliError> {
        let out = self
            .call(reqwest::Method::POST, &format!("/workers/{id}/drain"), None)
            .await?;
        match self.json() {
            true => println!("{out}"),
            false => println!("worker {id} is draining"),
        }
        Ok(())
    }

    /// Prints the API's answer as JSON, or in words.
    fn show(&self, value: &Value, text: fn(&Value) -> Vec<String>) {
        match self.json() {
            true => println!("{value}"),
            false => text(value).iter().for_each(|l| println!("{l}")),
        }
    }
}
