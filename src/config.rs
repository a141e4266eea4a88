//! Configuration: environment variables (the contract in DESIGN.md) with command-line flags
//! overriding them. Every default works on one machine. Settings that carry a secret are never
//! shown by `--help`, and can come from a file (`<NAME>_FILE`, the compose and Kubernetes
//! convention for mounted secrets; see `secrets_from_files`).

use clap::Args;
use std::time::Duration;

/// The settings that may hold a secret: each can be given as `<NAME>_FILE`.
pub const SECRET_VARIABLES: [&str; 6] = [
    "LANES_AMQP_URL",
    "DATABASE_URL",
    "LANES_MANAGEMENT_URL",
    "LANES_API_TOKEN",
    "LANES_FENCE_WORKER_CREDENTIALS",
    "LANES_WEBHOOK_SECRET",
];

/// How long finished jobs are kept; None keeps them for ever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention(pub Option<Duration>);

/// `off`/`0` or a duration such as `7d`, `12h`, `90days` (humantime).
pub fn parse_retention(text: &str) -> Result<Retention, String> {
    match text.trim() {
        "off" | "0" => Ok(Retention(None)),
        t => humantime::parse_duration(t)
            .map(|d| Retention(Some(d)))
            .map_err(|e| format!("`{t}` is no duration such as 7d or 12h, nor `off`: {e}")),
    }
}

/// Why a secret could not be read from its file. Names the variable and the file, never the
/// content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("set either {0} or {0}_FILE, not both")]
    Both(&'static str),
    #[error("{name}_FILE: cannot read {path}: {source}")]
    Unreadable {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Sets each secret variable from the file its `<NAME>_FILE` names (one trailing newline
/// dropped). Call before parsing the command line, while the process has one thread.
pub fn secrets_from_files() -> Result<(), SecretFileError> {
    for name in SECRET_VARIABLES {
        let Some(path) = std::env::var_os(format!("{name}_FILE")) else {
            continue;
        };
        if std::env::var_os(name).is_some() {
            return Err(SecretFileError::Both(name));
        }
        let text =
            std::fs::read_to_string(&path).map_err(|source| SecretFileError::Unreadable {
                name,
                path: path.to_string_lossy().into_owned(),
                source,
            })?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        std::env::set_var(name, value);
    }
    Ok(())
}

/// Where the broker is and which names to use on it.
#[derive(Args, Debug, Clone)]
pub struct BrokerConfig {
    /// AMQP URL of RabbitMQ; the nodes of a cluster comma separated (each role connects to
    /// the first that answers, and to the next when its node goes away).
    #[arg(
        long,
        env = "LANES_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name, so deployments can share a broker.
    #[arg(long, env = "LANES_PREFIX", default_value = "lanes")]
    pub prefix: String,
    /// Cluster nodes each new queue is replicated to (RabbitMQ caps it at the cluster's size;
    /// 0 leaves it to the broker). An existing queue keeps the size it was declared with.
    #[arg(long, env = "LANES_QUORUM_GROUP_SIZE", default_value_t = 3)]
    pub quorum_group_size: u32,
    /// CA certificates (PEM) trusted beside the system's roots, for `amqps://` and every
    /// `https://` lanes calls (executors, the management API, the API).
    #[arg(long, env = "LANES_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl BrokerConfig {
    /// The certificates this process trusts (read now: a bad file fails at start).
    pub fn trust(&self) -> Result<crate::tls::Trust, crate::tls::TlsError> {
        crate::tls::Trust::load(self.ca_file.as_deref())
    }
}

/// The control plane: dispatcher, supervisor, callback and HTTP API.
#[derive(Args, Debug, Clone)]
pub struct ServerConfig {
    /// PostgreSQL URL; the database is created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://127.0.0.1/lanes",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Reads (`GET /jobs`, `/workers`, `/queues`) need the token too; args and results may
    /// be sensitive. `/healthz` and `/metrics` stay open.
    #[arg(long, env = "LANES_PROTECT_READS", default_value_t = false)]
    pub protect_reads: bool,
    /// Address of the HTTP API.
    #[arg(long, env = "LANES_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// The API serves HTTPS with this certificate chain (PEM; with `LANES_TLS_KEY`), and the
    /// dashboard's cookie is `Secure`.
    #[arg(long, env = "LANES_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of `LANES_TLS_CERT`.
    #[arg(long, env = "LANES_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// When set, write requests need `Authorization: Bearer <token>` (a token named `admin`
    /// with every scope).
    #[arg(long, env = "LANES_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Named tokens with scopes (`name scopes sha256:<hex>` per line; `lanes token new`
    /// makes one), read again on SIGHUP.
    #[arg(long, env = "LANES_TOKENS_FILE")]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Lanes that always exist.
    #[arg(long, env = "LANES_MIN_QUEUES", default_value_t = 4)]
    pub min_queues: u32,
    /// Upper bound of the lane pool. The pool's size follows the live workers' slots (their
    /// concurrency, summed) between `min_queues` and this; lanes above `min_queues` open when
    /// all open ones are busy, and close when idle for the cool-down.
    #[arg(long, env = "LANES_MAX_QUEUES", default_value_t = 256)]
    pub max_queues: u32,
    /// Unfinished tasks a lane may hold (0: unbounded). A task whose lane is full waits in the
    /// server's waiting line until it has room, so lanes stay short and a resource can move to
    /// whichever lane is free once its earlier tasks are done.
    #[arg(long, env = "LANES_LANE_DEPTH", default_value_t = 0)]
    pub lane_depth: u32,
    /// After this many tasks of one resource went to its lane in a row, the next waits until
    /// they are done and then goes to the least-loaded lane (0: never). Lets a resource move
    /// off a lane that multi-resource tasks made long.
    #[arg(long, env = "LANES_REBALANCE_AFTER", default_value_t = 0)]
    pub rebalance_after: u32,
    /// A surplus lane idle (no unfinished task) this long is deleted (milliseconds).
    #[arg(long, env = "LANES_QUEUE_COOL_DOWN_MS", default_value_t = 30_000)]
    pub queue_cool_down_ms: u64,
    /// How long the active server's lease lasts without renewal (milliseconds): a standby
    /// takes over this long after the active server stopped renewing it (hung, stopped, cut
    /// off from the database). It renews every fifth of this.
    #[arg(long, env = "LANES_LEASE_MS", default_value_t = 5000)]
    pub lease_ms: u64,
    /// A worker silent for this long is dead (milliseconds).
    #[arg(long, env = "LANES_HEARTBEAT_TIMEOUT_MS", default_value_t = 3000)]
    pub heartbeat_timeout_ms: u64,
    /// RabbitMQ management API, used to close the connections of workers that stop
    /// heartbeating (fencing). Empty turns fencing off.
    #[arg(
        long,
        env = "LANES_MANAGEMENT_URL",
        default_value = "http://guest:guest@127.0.0.1:15672",
        hide_env_values = true
    )]
    pub management_url: Option<String>,
    /// `user:password` of the workers' broker user, to fence workers as (RabbitMQ lets a user
    /// with the `management` tag close its own connections). Needed when the management URL
    /// carries no administrator; then older control planes are fenced as the server's own
    /// broker user.
    #[arg(
        long,
        env = "LANES_FENCE_WORKER_CREDENTIALS",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub fence_worker_credentials: Option<String>,
    /// Finished jobs older than this are deleted (`7d`, `12h`, `90days`; `off` keeps them all).
    #[arg(long, env = "LANES_RETENTION", default_value = "30d", value_parser = parse_retention)]
    pub retention: Retention,
    /// How often the active server prunes finished jobs (ms).
    #[arg(long, env = "LANES_RETENTION_EVERY_MS", default_value_t = 60_000)]
    pub retention_every_ms: u64,
    /// Largest accepted submit body, in bytes.
    #[arg(long, env = "LANES_MAX_PAYLOAD", default_value_t = 1 << 20)]
    pub max_payload: usize,
}

/// A worker process.
#[derive(Args, Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks run at once by this worker (over all its lanes and the default queue).
    #[arg(long, env = "LANES_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Serve this worker's Prometheus metrics at `http://ADDR/metrics` (e.g. `0.0.0.0:9090`);
    /// unset, the worker listens on nothing.
    #[arg(long, env = "LANES_WORKER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Threads for blocking handlers (`Registry::register_blocking`), apart from the async
    /// runtime that runs heartbeats and async tasks.
    #[arg(long, env = "LANES_BLOCKING_THREADS", default_value_t = 8)]
    pub blocking_threads: usize,
    /// How often the worker says it is alive (milliseconds).
    #[arg(long, env = "LANES_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// Messages a lane may hand the worker at once (the running one included). Tasks still run
    /// one at a time per lane; the rest wait in the worker, so the next one starts without a
    /// broker round trip. Handed back unstarted, they cost nothing: attempts are counted from
    /// the server's record, not from broker deliveries.
    #[arg(long, env = "LANES_LANE_PREFETCH", default_value_t = 32)]
    pub lane_prefetch: u16,
    /// How long the broker may confirm none of this worker's heartbeats before the worker
    /// counts itself cut off and stops its tasks (ms). Keep it below the server's
    /// `LANES_HEARTBEAT_TIMEOUT_MS`, after which the server gives the worker's lanes away.
    #[arg(long, env = "LANES_BROKER_SILENCE_MS", default_value_t = 2000)]
    pub broker_silence_ms: u64,
    /// On SIGTERM, how long running tasks may take to finish before they are handed back (ms).
    #[arg(long, env = "LANES_DRAIN_GRACE_MS", default_value_t = 30_000)]
    pub drain_grace_ms: u64,
    /// Programs the `exec` task may run (comma separated).
    #[arg(long, env = "LANES_EXEC_ALLOW", value_delimiter = ',')]
    pub exec_allow: Vec<String>,
    /// The directory the `probe` task writes its execution logs in; without it, `probe`
    /// refuses to run.
    #[arg(long, env = "LANES_PROBE_DIR")]
    pub probe_dir: Option<std::path::PathBuf>,
    /// The `webhook` task signs what it sends executors with this secret (HMAC-SHA256, header
    /// `Lanes-Signature`, see `tasks::signature`).
    #[arg(long, env = "LANES_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// URL prefixes the `webhook` task may post to (comma separated); none by default.
    #[arg(long, env = "LANES_WEBHOOK_ALLOW", value_delimiter = ',')]
    pub webhook_allow: Vec<String>,
    /// The lanes HTTP API as executors reach it: `webhook` tasks send its
    /// `/jobs/{id}` as their callback, and follow their jobs there.
    #[arg(long, env = "LANES_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// The API's bearer token, sent by `webhook` tasks when they read and report jobs.
    #[arg(
        long = "callback-token",
        env = "LANES_API_TOKEN",
        hide_env_values = true
    )]
    pub callback_token: Option<String>,
}

impl ServerConfig {
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(500))
    }
    pub fn queue_cool_down(&self) -> Duration {
        Duration::from_millis(self.queue_cool_down_ms)
    }
}

impl WorkerConfig {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
    pub fn broker_silence(&self) -> Duration {
        Duration::from_millis(self.broker_silence_ms.max(100))
    }
    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }
}

/// Hides the password of a URL for logs and error messages.
pub fn redact(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact).collect::<Vec<_>>().join(",");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(
            super::redact("postgres://127.0.0.1/lanes"),
            "postgres://127.0.0.1/lanes"
        );
        assert_eq!(
            super::redact("amqp://g:s1@h1/%2f,amqp://g:s2@h2/%2f"),
            "amqp://g:***@h1/%2f,amqp://g:***@h2/%2f"
        );
    }
}
