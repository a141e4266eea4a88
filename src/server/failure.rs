//! The control plane's one failure signal. A component that fails (a consumer ends, a write
//! or a publish fails) says so here and stops; the server then tears the whole control plane
//! down and rebuilds it from Postgres (crash-only). A failure during the teardown is expected
//! and logged quietly.

use std::fmt::Display;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

#[derive(Clone, Default)]
pub struct Failure(CancellationToken);

impl Failure {
    /// `component` failed with `error`: the control plane restarts.
    pub fn fail(&self, component: &str, error: impl Display) {
        if self.0.is_cancelled() {
            debug!(component, %error, "stopped with the control plane");
        } else {
            error!(component, %error, "failed; the control plane restarts");
        }
        self.0.cancel();
    }

    /// The control plane is being taken down on purpose: later failures are expected.
    pub fn stopping(&self) {
        self.0.cancel();
    }

    /// Whether the control plane is going down: its actors may still run for a moment, and
    /// must not export live figures then.
    pub fn is_down(&self) -> bool {
        self.0.is_cancelled()
    }

    pub async fn failed(&self) {
        self.0.cancelled().await
    }
}
