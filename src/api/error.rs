//! The one error type of the HTTP API: every failing handler returns an [`ApiError`], which
//! chooses the status code and renders the body `{"error": "..."}`. Keeping the mapping in one
//! place means every route answers a given failure with the same status and shape.

use crate::{broker::BrokerError, protocol::Invalid, store::StoreError};
use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde_json::json;

/// Why a request failed. The `Display` text is the `error` field clients see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A submit body that validation refused: 413 when it is too large, else 400.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Any other malformed request (a path or query value): 400.
    #[error("{0}")]
    BadRequest(String),
    /// A write without the configured bearer token: 401.
    #[error("missing or wrong bearer token (Authorization: Bearer $LANES_API_TOKEN)")]
    Unauthorized,
    /// No such job, worker or route: 404.
    #[error("{0}")]
    NotFound(String),
    /// The job's state does not allow it (cancel an ended job, retry a running one): 409.
    #[error("{0}")]
    Conflict(String),
    /// The token is known but lacks the scope: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The control plane failed while doing it (it restarts): 503.
    #[error("the control plane failed: {0}")]
    ControlPlane(String),
    /// This server does not run the control plane (another one holds the leader lock): 503.
    #[error("this server is a standby; ask the active one")]
    Standby,
    /// A dependency cannot answer right now (control plane restarting, metrics off, ...): 503.
    #[error("{0}")]
    Unavailable(String),
    /// PostgreSQL failed: 503.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// RabbitMQ failed while publishing a submit: 503.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The API's publish did not go through (`publishing`): 503.
    #[error(transparent)]
    Publish(#[from] super::publishing::PublishError),
    /// A control-plane actor did not answer (it is stopping): 503.
    #[error(transparent)]
    Mailbox(#[from] actix::MailboxError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid(Invalid::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Standby
            | ApiError::Unavailable(_)
            | ApiError::ControlPlane(_)
            | ApiError::Store(_)
            | ApiError::Broker(_)
            | ApiError::Publish(_)
            | ApiError::Mailbox(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.to_string() }))
    }
}
