//! Client commands (`jobs submit|list|show|cancel|retry`, `workers list|drain`, `queues list`):
//! thin wrappers over the HTTP API. They print for a person at a terminal (`print`), or JSON with
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
    /// Bearer token: for writes, and for reads when the server protects them.
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

/// What a job runs: its task's arguments, resources and limits (a submit's, a schedule's).
#[derive(Args, Debug, Clone)]
pub struct TaskArgs {
    /// Task arguments as JSON.
    #[arg(long, default_value = "null")]
    pub args: String,
    /// A resource the task touches (repeatable; `shared:` prefix for shared access).
    #[arg(long = "resource", short = 'r')]
    pub resources: Vec<String>,
    /// Times it may start before it counts as failed (1 to 100; the server's default is 3).
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// Bound on each attempt, in milliseconds: a handler still running then is stopped and
    /// the attempt fails.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

impl TaskArgs {
    /// These fields of a submit or schedule body, beside `task`.
    fn add_to(&self, mut body: Value) -> Result<Value, CliError> {
        body["args"] = serde_json::from_str(&self.args).map_err(CliError::BadArgs)?;
        body["resources"] = json!(self.resources);
        if let Some(m) = self.max_attempts {
            body["max_attempts"] = json!(m);
        }
        if let Some(t) = self.timeout_ms {
            body["timeout_ms"] = json!(t);
        }
        Ok(body)
    }
}

#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// Task name (e.g. `sleep`, `echo`).
    pub task: String,
    #[command(flatten)]
    pub job: TaskArgs,
    /// Due at this time (RFC 3339, e.g. `2026-12-24T18:00:00Z`): until then it is scheduled,
    /// then it joins its resources' order as if submitted then.
    #[arg(long, conflicts_with = "delay")]
    pub at: Option<String>,
    /// Due after this long (`90s`, `10m`, `2h`), like --at.
    #[arg(long = "in", value_parser = humantime::parse_duration)]
    pub delay: Option<std::time::Duration>,
    /// The job's id (a UUID, preferably time-ordered): submitting the same id again never
    /// makes a second job. Without it the server picks one.
    #[arg(long)]
    pub id: Option<String>,
    /// Wait for the job to end, showing its progress (a bar on a terminal); exit 5 if it
    /// failed or was canceled.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this long (`30s`, `10m`) and exit 6; the job goes on.
    #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
    pub wait_timeout: Option<std::time::Duration>,
}

/// A schedule, for `lanes schedules add`.
#[derive(Args, Debug, Clone)]
pub struct ScheduleArgs {
    /// Its name: letters, digits, `-`, `_`, `.`, `:`.
    pub name: String,
    /// The task each tick submits.
    pub task: String,
    /// A cron expression: five fields (minute first), or six with seconds first.
    #[arg(long)]
    pub cron: String,
    /// The time zone its fields are read in (IANA name).
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    #[command(flatten)]
    pub job: TaskArgs,
    /// Ticks missed while no server ran: `skip` them, or run the latest `once`.
    #[arg(long, default_value = "skip")]
    pub missed: String,
    /// Created paused.
    #[arg(long)]
    pub paused: bool,
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
    /// How many jobs to list (at most 1,000).
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
        let mut body = a.job.add_to(json!({"task": a.task}))?;
        if let Some(id) = &a.id {
            body["id"] = json!(id);
        }
        if let Some(at) = &a.at {
            body["run_at"] = json!(at);
        }
        if let Some(delay) = a.delay {
            body["delay_ms"] = json!(delay.as_millis() as u64);
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
        let get = || self.call(reqwest::Method::GET, &path, None);
        let ended = wait::follow(&id, get, a.wait_timeout).await?;
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
        let id = out["id"].as_str().unwrap_or(id);
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
            false => println!(
                "worker {} is draining",
                out["worker"].as_str().unwrap_or(id)
            ),
        }
        Ok(())
    }

    pub async fn add_schedule(&self, a: &ScheduleArgs) -> Result<(), CliError> {
        let body = a.job.add_to(json!({
            "name": a.name, "cron": a.cron, "tz": a.tz, "task": a.task,
            "missed": a.missed, "paused": a.paused,
        }))?;
        let made = self
            .call(reqwest::Method::POST, "/schedules", Some(body))
            .await?;
        self.show(&made, print::schedule);
        Ok(())
    }

    pub async fn schedules(&self) -> Result<(), CliError> {
        let all = self.call(reqwest::Method::GET, "/schedules", None).await?;
        self.show(&all, print::schedules);
        Ok(())
    }

    pub async fn schedule(&self, name: &str) -> Result<(), CliError> {
        let one = self
            .call(reqwest::Method::GET, &schedule_path(name), None)
            .await?;
        self.show(&one, print::schedule);
        Ok(())
    }

    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<(), CliError> {
        let body = json!({ "paused": paused });
        let one = self
            .call(reqwest::Method::PATCH, &schedule_path(name), Some(body))
            .await?;
        self.show(&one, print::schedule);
        Ok(())
    }

    pub async fn remove_schedule(&self, name: &str) -> Result<(), CliError> {
        self.call(reqwest::Method::DELETE, &schedule_path(name), None)
            .await?;
        match self.json() {
            true => println!("{}", json!({"name": name, "deleted": true})),
            false => println!("schedule {name} deleted"),
        }
        Ok(())
    }

    pub async fn limits(&self) -> Result<(), CliError> {
        let all = self.call(reqwest::Method::GET, "/limits", None).await?;
        self.show(&all, print::limits);
        Ok(())
    }

    pub async fn limit(&self, resource: &str) -> Result<(), CliError> {
        let one = self
            .call(reqwest::Method::GET, &limit_path(resource), None)
            .await?;
        self.show(&one, |l| print::limits(&json!([l])));
        Ok(())
    }

    /// Changes what is given of a resource's limit, keeping the rest.
    pub async fn set_limit(&self, resource: &str, change: LimitChange) -> Result<(), CliError> {
        let path = limit_path(resource);
        let mut limit = match self.call(reqwest::Method::GET, &path, None).await {
            Ok(mut current) => {
                if let Some(view) = current.as_object_mut() {
                    view.remove("resource");
                }
                serde_json::from_value(current).unwrap_or_default()
            }
            Err(CliError::Api { status: 404, .. }) => lanes::limit::Limit::default(),
            Err(e) => return Err(e),
        };
        if let Some(slots) = change.slots {
            limit.slots = slots;
        }
        if change.rate.is_some() || change.no_rate {
            limit.rate = change.rate;
        }
        let body = serde_json::to_value(limit).expect("a limit serializes");
        let set = self.call(reqwest::Method::PUT, &path, Some(body)).await?;
        self.show(&set, |l| print::limits(&json!([l])));
        Ok(())
    }

    pub async fn remove_limit(&self, resource: &str) -> Result<(), CliError> {
        self.call(reqwest::Method::DELETE, &limit_path(resource), None)
            .await?;
        match self.json() {
            true => println!("{}", json!({"resource": resource, "removed": true})),
            false => println!("{resource}: limit removed (one slot, no rate)"),
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

fn limit_path(resource: &str) -> String {
    let name = percent_encoding::utf8_percent_encode(resource, percent_encoding::NON_ALPHANUMERIC);
    format!("/limits/{name}")
}

/// What `lanes limits set` changes.
pub struct LimitChange {
    pub slots: Option<u32>,
    pub rate: Option<lanes::limit::Rate>,
    pub no_rate: bool,
}

fn schedule_path(name: &str) -> String {
    let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("/schedules/{name}")
}
