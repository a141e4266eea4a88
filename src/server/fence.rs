//! Fencing: a worker declared dead must not keep running its lanes. A hung worker (stopped
//! heartbeating, connection still open) stays the active consumer of its lanes for as long as
//! its connection lives, so the server asks RabbitMQ, through the management API, to close the
//! worker's connections. The broker then hands its unacked tasks to the standbys at once, and
//! the worker, if it ever wakes up, finds its connection gone and abandons what it was running.

use serde::Deserialize;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("invalid management URL: {0}")]
    BadUrl(String),
    #[error("management API: {0}")]
    Http(#[from] reqwest::Error),
}

/// Closes connections through the RabbitMQ management API.
#[derive(Clone, Debug)]
pub struct Fence {
    base: reqwest::Url,
    user: String,
    password: Option<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ConnectionInfo {
    name: String,
    #[serde(default)]
    user_provided_name: Option<String>,
}

impl Fence {
    /// `url` is the management API's base, e.g. `http://guest:guest@127.0.0.1:15672`.
    pub fn new(url: &str) -> Result<Fence, FenceError> {
        let mut base = reqwest::Url::parse(url).map_err(|e| FenceError::BadUrl(e.to_string()))?;
        let user = base.username().to_owned();
        let password = base.password().map(str::to_owned);
        base.set_username("")
            .map_err(|_| FenceError::BadUrl(url.to_owned()))?;
        base.set_password(None)
            .map_err(|_| FenceError::BadUrl(url.to_owned()))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Fence {
            base,
            user,
            password,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    /// Closes every connection the worker opened (named `lanes-worker-<id>@host`).
    pub async fn close_worker(&self, worker: &str) -> Result<usize, FenceError> {
        let prefix = format!("lanes-worker-{worker}@");
        let reason = format!("lanes: worker {worker} missed its heartbeats");
        let closed = self
            .close_where(|n| n.starts_with(&prefix), &reason)
            .await?;
        if closed > 0 {
            info!(%worker, connections = closed, "fenced a worker that stopped heartbeating");
        }
        Ok(closed)
    }

    /// Closes the connections of control planes of `prefix` older than `epoch` (named
    /// `lanes-server-<prefix>-e<epoch>@host`): a server that lost its lease while stopped
    /// or cut off must not consume or publish when it wakes.
    pub async fn close_servers_before(
        &self,
        prefix: &str,
        epoch: i64,
    ) -> Result<usize, FenceError> {
        let start = format!("lanes-server-{prefix}-e");
        let stale = |n: &str| {
            n.strip_prefix(&start)
                .and_then(|rest| rest.split('@').next())
                .and_then(|e| e.parse::<i64>().ok())
                .is_some_and(|e| e < epoch)
        };
        let reason = format!("lanes: control plane epoch {epoch} took the lease");
        let closed = self.close_where(stale, &reason).await?;
        if closed > 0 {
            info!(%prefix, epoch, connections = closed, "fenced the control planes before this one");
        }
        Ok(closed)
    }

    async fn close_where(
        &self,
        matches: impl Fn(&str) -> bool,
        reason: &str,
    ) -> Result<usize, FenceError> {
        let conns: Vec<ConnectionInfo> = self
            .http
            .get(self.url("/api/connections?columns=name,user_provided_name"))
            .basic_auth(&self.user, self.password.as_deref())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut closed = 0;
        for c in conns
            .into_iter()
            .filter(|c| c.user_provided_name.as_deref().is_some_and(&matches))
        {
            let path = format!("/api/connections/{}", urlencode(&c.name));
            let resp = self
                .http
                .delete(self.url(&path))
                .basic_auth(&self.user, self.password.as_deref())
                .header("X-Reason", reason)
                .send()
                .await?;
            if resp.status().is_success() || resp.status().as_u16() == 404 {
                closed += 1;
            } else {
                warn!(connection = %c.name, status = %resp.status(), "could not close a connection");
            }
        }
        Ok(closed)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_names_are_escaped_for_the_path() {
        assert_eq!(
            super::urlencode("127.0.0.1:5 -> 1:2"),
            "127.0.0.1%3A5%20-%3E%201%3A2"
        );
    }

    #[test]
    fn credentials_leave_the_url() {
        let f = super::Fence::new("http://u:p@127.0.0.1:15672").unwrap();
        assert_eq!(f.url("/api/x"), "http://127.0.0.1:15672/api/x");
        assert_eq!((f.user.as_str(), f.password.as_deref()), ("u", Some("p")));
    }
}
