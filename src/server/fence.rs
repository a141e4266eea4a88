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
    #[error("no credentials to close {0} connections with")]
    NoCredentials(&'static str),
}

/// A user and password for the management API.
#[derive(Clone)]
struct Credentials {
    user: String,
    password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (password hidden)", self.user)
    }
}

impl Credentials {
    /// The user and password of a URL.
    fn of(url: &reqwest::Url) -> Option<Credentials> {
        (!url.username().is_empty()).then(|| Credentials {
            user: decode(url.username()),
            password: url.password().map(decode),
        })
    }
}

/// Closes connections through the RabbitMQ management API. RabbitMQ lets a user with the
/// `management` tag close its own connections, and only an `administrator` close anyone's:
/// so without an administrator in the management URL, workers are fenced as the workers'
/// broker user (`LANES_FENCE_WORKER_CREDENTIALS`) and older control planes as the server's
/// own (from its AMQP URL).
#[derive(Clone, Debug)]
pub struct Fence {
    /// The management API of each node, tried in turn (any node answers for the cluster).
    bases: Vec<reqwest::Url>,
    workers: Option<Credentials>,
    servers: Option<Credentials>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ConnectionInfo {
    name: String,
    #[serde(default)]
    user_provided_name: Option<String>,
}

impl Fence {
    /// `url` is the management API's base, e.g. `http://guest:guest@127.0.0.1:15672`, or
    /// several nodes' comma separated (credentials, if any, close every connection);
    /// `amqp_url` is the server's own broker URL (or list); `worker` is `user:password` of
    /// the workers' broker user.
    pub fn new(url: &str, amqp_url: &str, worker: Option<&str>) -> Result<Fence, FenceError> {
        let mut bases = Vec::new();
        let mut admin = None;
        for one in crate::broker::split_nodes(url) {
            let bad = || FenceError::BadUrl(crate::config::redact(one));
            let mut base = reqwest::Url::parse(one).map_err(|_| bad())?;
            admin = admin.or_else(|| Credentials::of(&base));
            base.set_username("").map_err(|_| bad())?;
            base.set_password(None).map_err(|_| bad())?;
            bases.push(base);
        }
        if bases.is_empty() {
            return Err(FenceError::BadUrl(String::new()));
        }
        let own = crate::broker::split_nodes(amqp_url)
            .first()
            .and_then(|u| reqwest::Url::parse(u).ok())
            .and_then(|u| Credentials::of(&u));
        let worker = worker.filter(|w| !w.is_empty()).map(|w| {
            let (user, password) = w.split_once(':').unwrap_or((w, ""));
            Credentials {
                user: user.to_owned(),
                password: Some(password.to_owned()),
            }
        });
        let http = Self::client(reqwest::Client::builder())?;
        Ok(Fence {
            bases,
            workers: admin.clone().or(worker),
            servers: admin.or(own),
            http,
        })
    }

    /// Whether worker connections can be closed.
    /// HTTPS to the management API trusts what `trust` adds to the system's roots.
    pub fn with_trust(mut self, trust: &crate::tls::Trust) -> Result<Self, FenceError> {
        self.http = Self::client(trust.http())?;
        Ok(self)
    }

    fn client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, FenceError> {
        Ok(builder.timeout(std::time::Duration::from_secs(5)).build()?)
    }

    pub fn fences_workers(&self) -> bool {
        self.workers.is_some()
    }

    fn url(base: &reqwest::Url, path: &str) -> String {
        format!("{}{}", base.as_str().trim_end_matches('/'), path)
    }

    /// Closes every connection the worker opened (named `lanes-worker-<id>@host`).
    pub async fn close_worker(&self, worker: &str) -> Result<usize, FenceError> {
        let prefix = format!("lanes-worker-{worker}@");
        let reason = format!("lanes: worker {worker} missed its heartbeats");
        let as_user = self
            .workers
            .as_ref()
            .ok_or(FenceError::NoCredentials("worker"))?;
        let closed = self
            .close_where(as_user, |n| n.starts_with(&prefix), &reason)
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
        let as_user = self
            .servers
            .as_ref()
            .ok_or(FenceError::NoCredentials("server"))?;
        let closed = self.close_where(as_user, stale, &reason).await?;
        if closed > 0 {
            info!(%prefix, epoch, connections = closed, "fenced the control planes before this one");
        }
        Ok(closed)
    }

    async fn close_where(
        &self,
        as_user: &Credentials,
        matches: impl Fn(&str) -> bool,
        reason: &str,
    ) -> Result<usize, FenceError> {
        let mut last = None;
        for base in &self.bases {
            match self.close_on(base, as_user, &matches, reason).await {
                Ok(closed) => return Ok(closed),
                Err(e) => {
                    if self.bases.len() > 1 {
                        warn!(node = %base, error = %e, "management API did not answer; trying the next node");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one management URL"))
    }

    async fn close_on(
        &self,
        base: &reqwest::Url,
        as_user: &Credentials,
        matches: &impl Fn(&str) -> bool,
        reason: &str,
    ) -> Result<usize, FenceError> {
        let conns: Vec<ConnectionInfo> = self
            .http
            .get(Fence::url(
                base,
                "/api/connections?columns=name,user_provided_name",
            ))
            .basic_auth(&as_user.user, as_user.password.as_deref())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut closed = 0;
        for c in conns
            .into_iter()
            .filter(|c| c.user_provided_name.as_deref().is_some_and(matches))
        {
            let path = format!("/api/connections/{}", urlencode(&c.name));
            let resp = self
                .http
                .delete(Fence::url(base, &path))
                .basic_auth(&as_user.user, as_user.password.as_deref())
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

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A connection name as one path segment.
fn urlencode(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
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
        let f = super::Fence::new("http://u:p@127.0.0.1:15672", "amqp://s:q@h", None).unwrap();
        assert_eq!(
            super::Fence::url(&f.bases[0], "/api/x"),
            "http://127.0.0.1:15672/api/x"
        );
        let two = super::Fence::new("http://u:p@h1:15672, http://h2:15672", "amqp://s:q@h", None)
            .unwrap();
        assert_eq!(two.bases.len(), 2);
        assert_eq!(two.workers.as_ref().unwrap().user, "u");
        let admin = f.workers.as_ref().unwrap();
        assert_eq!(
            (admin.user.as_str(), admin.password.as_deref()),
            ("u", Some("p"))
        );
        assert_eq!(f.servers.as_ref().unwrap().user, "u");
    }

    #[test]
    fn without_an_administrator_each_role_is_fenced_as_itself() {
        let f = super::Fence::new(
            "http://127.0.0.1:15672",
            "amqp://lanes-server:s%40cret@h:5672/lanes",
            Some("lanes-worker:w:pw"),
        )
        .unwrap();
        let (w, s) = (f.workers.as_ref().unwrap(), f.servers.as_ref().unwrap());
        assert_eq!(
            (w.user.as_str(), w.password.as_deref()),
            ("lanes-worker", Some("w:pw"))
        );
        assert_eq!(
            (s.user.as_str(), s.password.as_deref()),
            ("lanes-server", Some("s@cret"))
        );
        assert!(!format!("{f:?}").contains("cret"));
        let none = super::Fence::new("http://127.0.0.1:15672", "amqp://h", None).unwrap();
        assert!(!none.fences_workers());
    }
}
