//! A worker's own Prometheus metrics: its attempts by task and outcome, how long each ran,
//! and how many tasks its process's workers run now; served at `/metrics` on `--metrics-addr`
//! when one is set (off by default: a worker listens on nothing unless asked).

use std::time::Duration;
use tracing::{info, warn};

/// Counts and times an attempt that ended (`outcome`: completed, failed, timed_out).
pub fn attempt_ended(task: &str, took: Duration, outcome: &'static str) {
    let task = task.to_owned();
    metrics::counter!("lanes_worker_attempts_total", "task" => task.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("lanes_worker_attempt_seconds", "task" => task).record(took.as_secs_f64());
}

/// One worker's share of `lanes_worker_running`, the tasks this process's workers hold now:
/// a process may run many workers, so each adds what changed in its own count, and takes its
/// share back when its session ends.
#[derive(Default)]
pub struct Running {
    reported: usize,
}

impl Running {
    /// The worker holds `n` tasks now.
    pub fn set(&mut self, n: usize) {
        metrics::gauge!("lanes_worker_running").increment(n as f64 - self.reported as f64);
        self.reported = n;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Serves `/metrics` on `addr` until the process ends, on a thread of its own (a worker may
/// run on any tokio runtime, not only actix's); a bad address is logged, not fatal.
pub fn serve(addr: &str) {
    let Some(handle) = crate::telemetry::metrics() else {
        return;
    };
    let addr = addr.to_owned();
    let spawned = std::thread::Builder::new()
        .name("lanes-worker-metrics".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let bound = actix_web::HttpServer::new(move || {
                    actix_web::App::new().route(
                        "/metrics",
                        actix_web::web::get().to(move || async move {
                            handle.run_upkeep();
                            actix_web::HttpResponse::Ok()
                                .content_type("text/plain; version=0.0.4")
                                .body(handle.render())
                        }),
                    )
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .bind(&addr);
                match bound {
                    Ok(server) => {
                        info!(%addr, "worker metrics at /metrics");
                        let _ = server.run().await;
                    }
                    Err(e) => warn!(%addr, error = %e, "cannot serve the worker's metrics"),
                }
            })
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the worker's metrics thread");
    }
}
