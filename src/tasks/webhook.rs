//! The `webhook` task: hands a job to an external executor (a program in any language, on any
//! machine) and holds the job's lane, and so its resources, until the executor reports the end
//! through the callback API (`PATCH /jobs/{id}`) or the attempt's `timeout_ms` passes.
//!
//! It POSTs `{"id", "task", "args", "attempt", "callback"}` to `args.url`, which must start with
//! a prefix in `LANES_WEBHOOK_ALLOW`; `callback` is `LANES_API_URL/jobs/{id}`. A 2xx answer
//! means the executor took it: the task records that (as progress) and follows the job at the
//! callback URL. Every report names the attempt it answers, and the API refuses one for an
//! attempt that is no longer the job's (409): a late report of an attempt that timed out, or
//! whose worker died, cannot end the attempt that replaced it. So when a job's lane moves to
//! another worker, its new attempt is posted again with the same `id`: an executor that is
//! still working on it keeps working and reports under the new attempt. A cancel is passed on
//! to the executor (`{"id", "attempt", "cancel": true}` to the same URL); its later reports
//! are refused. With `LANES_WEBHOOK_SECRET` every request is signed (`signature`).

use super::{signature, Ctx, Permanent, TaskResult};
use chrono::Utc;
use serde_json::{json, Value};
use std::{sync::Arc, time::Duration};
use tracing::warn;

/// The progress message that says the job goes to its executor.
const DELIVERED: &str = "handed to its executor";
/// How often a held webhook job's record is read.
const POLL: Duration = Duration::from_millis(250);
/// How long the task waits for its start to be on record before it posts.
const START_RECORDED: Duration = Duration::from_secs(10);
/// How long a request to an executor or the API may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Webhook {
    allow: Vec<String>,
    api_url: String,
    token: Option<String>,
    /// Signs what is sent to executors.
    secret: Option<Vec<u8>>,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(
        allow: Vec<String>,
        api_url: String,
        token: Option<String>,
        trust: &crate::tls::Trust,
    ) -> Webhook {
        Webhook {
            allow: allow.into_iter().filter(|p| !p.is_empty()).collect(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            token,
            secret: None,
            http: trust
                .http()
                .timeout(REQUEST_TIMEOUT)
                // An allowed executor must not send the request elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client builds"),
        }
    }

    /// Signs every request to executors with `secret` (empty: none).
    pub fn signing_with(mut self, secret: Option<String>) -> Webhook {
        self.secret = secret.filter(|s| !s.is_empty()).map(String::into_bytes);
        self
    }

    /// POSTs `body` to an executor, signed when there is a secret.
    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
        let bytes = serde_json::to_vec(body).expect("JSON serializes");
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            let now = Utc::now().timestamp();
            req = req.header(signature::HEADER, signature::sign(secret, now, &bytes));
        }
        req.body(bytes).send().await
    }

    pub async fn run(self: Arc<Self>, ctx: Ctx, args: Value) -> TaskResult {
        let url = args
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Permanent("`webhook` needs {\"url\": \"http://...\"}".into()))?
            .to_owned();
        if !self.allow.iter().any(|p| allowed(p, &url)) {
            return Err(Permanent(format!(
                "{url} is not allowed: it must start with a prefix listed in LANES_WEBHOOK_ALLOW"
            ))
            .into());
        }
        let callback = format!("{}/jobs/{}", self.api_url, ctx.job_id());
        // Posted only once this attempt's start is on record: the executor's reports are
        // taken for running jobs only.
        // This attempt's, not an earlier one's: reports name the attempt, and the API takes
        // only the one on record.
        let attempt = ctx.attempt();
        let on_record = |job: &Value| {
            job["state"] == "running" && job["attempts"].as_i64() == Some(i64::from(attempt))
        };
        let mut job = self.record(&callback).await?;
        let since = std::time::Instant::now();
        while !on_record(&job) {
            if let Some(end) = ended(&job) {
                return end;
            }
            if since.elapsed() > START_RECORDED {
                return Err("the start of this attempt was not recorded in time".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            job = self.record(&callback).await?;
        }
        // Posted even when an earlier attempt was delivered (its worker died): the executor
        // treats the same `id` as the same job and reports under this attempt from now on.
        // On record before the executor has it: a progress report of its own, sent the moment
        // it has the job, then always comes after this one and is not overwritten by it.
        let message = format!("{DELIVERED} at {}", Utc::now().to_rfc3339());
        let handing = json!({"progress": 0, "message": message, "attempt": attempt});
        self.api(self.http.patch(&callback))
            .json(&handing)
            .send()
            .await?
            .error_for_status()?;
        let body = json!({"id": ctx.job_id(), "task": "webhook", "args": args,
                          "attempt": attempt, "callback": callback});
        let answer = self.post(&url, &body).await?;
        if !answer.status().is_success() {
            return Err(format!("the executor at {url} answered {}", answer.status()).into());
        }
        loop {
            tokio::select! {
                _ = ctx.cancelled().cancelled() => {
                    let notice = json!({"id": ctx.job_id(), "attempt": attempt, "cancel": true,
                                        "callback": callback});
                    if let Err(e) = self.post(&url, &notice).await {
                        warn!(%url, error = %e, "could not tell the executor of the cancel");
                    }
                    return Err("canceled".into());
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            match self.record(&callback).await {
                Ok(job) => {
                    if let Some(end) = ended(&job) {
                        return end;
                    }
                }
                Err(e) => warn!(error = %e, "could not read the job's record; trying again"),
            }
        }
    }

    /// A request to the lanes API, with its token when there is one.
    fn api(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The job as the API shows it.
    async fn record(&self, callback: &str) -> Result<Value, reqwest::Error> {
        self.api(self.http.get(callback))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
}

/// The outcome the executor reported, once the job has ended. A failure it reported is not
/// retried here: the job's record is final already.
fn ended(job: &Value) -> Option<TaskResult> {
    let error = || job["error"].as_str().unwrap_or("failed").to_owned();
    match job["state"].as_str()? {
        "completed" => Some(Ok(job["result"].clone())),
        "failed" | "canceled" => Some(Err(Permanent(error()).into())),
        _ => None,
    }
}

/// Whether `url` is allowed by the prefix `allow`: same scheme, host and port, no user info,
/// and a path under the prefix's path (compared parsed, so `http://host:9000@evil/` is not
/// under `http://host:9000`).
fn allowed(allow: &str, url: &str) -> bool {
    let (Ok(a), Ok(u)) = (reqwest::Url::parse(allow), reqwest::Url::parse(url)) else {
        return false;
    };
    let base = a.path().trim_end_matches('/');
    let under = u.path() == base || u.path().starts_with(&format!("{base}/"));
    a.scheme() == u.scheme()
        && a.host_str() == u.host_str()
        && a.port_or_known_default() == u.port_or_known_default()
        && u.username().is_empty()
        && u.password().is_none()
        && under
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_record_ends_the_task() {
        assert!(ended(&json!({"state": "completed", "result": 1})).is_some());
        assert!(ended(&json!({"state": "failed", "error": "x"})).is_some());
        assert!(ended(&json!({"state": "running"})).is_none());
    }

    #[test]
    fn only_urls_under_an_allowed_prefix_are_allowed() {
        let allow = "http://exec:9000";
        assert!(allowed(allow, "http://exec:9000/"));
        assert!(allowed(allow, "http://exec:9000/jobs/resize"));
        assert!(allowed(
            "http://exec:9000/jobs/",
            "http://exec:9000/jobs/resize"
        ));
        assert!(!allowed("http://exec:9000/jobs", "http://exec:9000/jobsx"));
        assert!(!allowed(allow, "http://exec:9000@evil/"));
        assert!(!allowed(allow, "http://exec:90001/"));
        assert!(!allowed(allow, "https://exec:9000/"));
        assert!(!allowed(allow, "http://user:pw@exec:9000/"));
        assert!(!allowed(allow, "not a url"));
    }
}
