//! Why a client command failed, and the exit code each failure has.

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
    #[error(transparent)]
    Tls(#[from] lanes::tls::TlsError),
}

/// The exit codes of the client commands (also in `lanes --help`).
pub const EXIT_CODES: &str = "Exit codes: 0 done; 1 any other failure; 2 bad input (usage, \
    invalid arguments, or the API refused the request: 400, 404, 409, 413); 3 the server \
    cannot be reached or cannot serve now (503); 4 the API token is missing or wrong (401); \
    5 `submit --wait`: the job ended failed or canceled.";

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::BadArgs(_) | CliError::Tls(_) => 2,
            CliError::Api { status: 401, .. } => 4,
            CliError::Api { status: 503, .. } | CliError::Unreachable { .. } => 3,
            CliError::Api { status, .. } if (400..500).contains(status) => 2,
            CliError::Api { .. } => 1,
            CliError::JobFailed { .. } => 5,
        }
    }
}
