//! Why a client command failed, and the exit code each failure has (listed in `lanes --help`).

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
    #[error("job {id} is still {state} after {waited}; it goes on (`lanes jobs show {id}`)")]
    WaitTimedOut {
        id: String,
        state: String,
        waited: String,
    },
    #[error(transparent)]
    Tls(#[from] lanes::tls::TlsError),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::BadArgs(_) | CliError::Tls(_) => 2,
            CliError::Api {
                status: 401 | 403, ..
            } => 4,
            CliError::Api { status: 503, .. } | CliError::Unreachable { .. } => 3,
            CliError::Api { status, .. } if (400..500).contains(status) => 2,
            CliError::Api { .. } => 1,
            CliError::JobFailed { .. } => 5,
            CliError::WaitTimedOut { .. } => 6,
        }
    }
}
