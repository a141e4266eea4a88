//! Structured logs (`RUST_LOG` filters, default `info`; `LANES_LOG_FORMAT=json` for JSON
//! lines) and Prometheus metrics: one recorder per process, every metric described (its HELP
//! text), durations as `_seconds` histograms with explicit buckets, and `lanes_build_info`.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::{fmt, layer::Context, prelude::*, EnvFilter, Layer};

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(QuietChannelCloses);
    let layer = fmt::layer().with_writer(std::io::stderr);
    if std::env::var("LANES_LOG_FORMAT").as_deref() == Ok("json") {
        registry.with(layer.json()).init();
    } else {
        registry.with(layer).init();
    }
}

/// Drops lapin's `Channel closed` errors. A channel the broker closes is an error of the
/// operation that caused it, which lanes handles where it happens (and logs when it matters);
/// and some closes are how a question is answered: a passive declare of a queue that does not
/// exist yet (a worker waiting for the server's topology), or of another connection's
/// exclusive queue (is that worker's connection gone?). Logged by lapin as ERROR, they made a
/// healthy start of a hundred workers print a hundred errors.
struct QuietChannelCloses;

impl<S: Subscriber> Layer<S> for QuietChannelCloses {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if event.metadata().target() != "lapin::channel" {
            return true;
        }
        let mut closed = false;
        event.record(&mut |field: &Field, value: &dyn std::fmt::Debug| {
            closed |= field.name() == "message" && format!("{value:?}") == "Channel closed";
        });
        !closed
    }
}

/// Bucket bounds of every `_seconds` histogram: 5 ms to an hour.
const SECONDS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Bucket bounds of the batch-size histograms.
const BATCH: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

/// The process's Prometheus recorder, installed on first use (a process has one recorder).
pub fn metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &BATCH)
                })
                .and_then(|b| b.install_recorder());
            match installed {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off");
                    None
                }
            }
        })
        .as_ref()
}

/// The HELP text of every metric lanes exports, and the build info.
fn describe() {
    let counters = [
        (
            "lanes_jobs_submitted_total",
            "Jobs recorded by the Dispatcher.",
        ),
        (
            "lanes_submits_duplicate_total",
            "Submit messages for jobs that already existed.",
        ),
        (
            "lanes_submits_rejected_total",
            "Submit messages refused (invalid, or refused by the database).",
        ),
        (
            "lanes_dead_letters_total",
            "Messages set aside in the dead queue, by where they were read (submit, events).",
        ),
        (
            "lanes_jobs_finished_total",
            "Jobs that ended, by final state.",
        ),
        (
            "lanes_reports_refused_total",
            "Worker reports the database refused (their jobs failed with the reason).",
        ),
        (
            "lanes_jobs_reconciled_total",
            "Lane messages found lost and sent again by reconciliation.",
        ),
        (
            "lanes_jobs_pruned_total",
            "Finished jobs deleted by retention.",
        ),
        (
            "lanes_workers_timed_out_total",
            "Workers declared dead for missed heartbeats.",
        ),
        (
            "lanes_control_plane_restarts_total",
            "Times the control plane was torn down and rebuilt.",
        ),
        (
            "lanes_worker_attempts_total",
            "Attempts a worker ran, by task and outcome (completed, failed, timed_out, canceled).",
        ),
        (
            "lanes_jobs_fired_total",
            "Delayed jobs that fell due and joined their resources' order.",
        ),
        (
            "lanes_broker_blocked_seconds_total",
            "Seconds the broker blocked the API's publishes (rounded up per block).",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
    }
    let gauges = [
        (
            "lanes_broker_blocked",
            "1 while the broker blocks the API's publishes (a memory or disk alarm).",
        ),
        (
            "lanes_active",
            "1 while this server runs the control plane, 0 on a standby.",
        ),
        (
            "lanes_jobs_waiting",
            "Jobs in the waiting line (0 on a standby).",
        ),
        (
            "lanes_jobs_slot_waiting",
            "Jobs waiting on a limited resource for a slot (or for the holder admitted before to start).",
        ),
        (
            "lanes_jobs_rate_limited",
            "Jobs waiting on a limited resource for its rate to allow a start.",
        ),
        (
            "lanes_resources_reserved",
            "Resources reserved by some lane (0 on a standby).",
        ),
        (
            "lanes_jobs_routed_unfinished",
            "Unfinished jobs routed to lanes (0 on a standby).",
        ),
        ("lanes_workers", "Live workers (0 on a standby)."),
        (
            "lanes_workers_longest_silence_seconds",
            "The longest any live worker has gone unheard, as of the last sweep: near the heartbeat interval when all is well (0 on a standby).",
        ),
        (
            "lanes_pool_size",
            "Lanes new work may go to: the live workers' slots, within the pool's bounds (0 on a standby).",
        ),
        ("lanes_lanes_open", "Lanes open (0 on a standby)."),
        (
            "lanes_jobs_scheduled",
            "Delayed jobs not due yet (0 on a standby).",
        ),
        ("lanes_worker_running", "Tasks the workers of this process are running."),
        (
            "lanes_build_info",
            "Always 1; the labels say which build this is.",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, help);
    }
    let seconds = [
        (
            "lanes_job_queue_wait_seconds",
            "From submit to the start of the attempt that ended the job, by task.",
        ),
        (
            "lanes_job_run_seconds",
            "From the first start to the end of a job, by task.",
        ),
        (
            "lanes_job_end_to_end_seconds",
            "From submit to the end of a job, by task.",
        ),
        (
            "lanes_worker_attempt_seconds",
            "How long one attempt ran on this worker, by task.",
        ),
        (
            "lanes_scheduled_lateness_seconds",
            "From a delayed job's due time to the moment it joined its resources' order.",
        ),
    ];
    for (name, help) in seconds {
        describe_histogram!(name, Unit::Seconds, help);
    }
    describe_histogram!(
        "lanes_dispatch_batch_size",
        Unit::Count,
        "Submit messages per Dispatcher batch."
    );
    describe_histogram!(
        "lanes_events_batch_size",
        Unit::Count,
        "Worker events per Callback batch."
    );
    metrics::gauge!(
        "lanes_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("LANES_COMMIT")
    )
    .set(1.0);
}

/// A server starts: its counters exist from the start (at 0, so that rules over their
/// increase see them), and it holds no live figures until it is active.
pub fn server_started() {
    for name in [
        "lanes_jobs_submitted_total",
        "lanes_submits_duplicate_total",
        "lanes_submits_rejected_total",
        "lanes_reports_refused_total",
        "lanes_jobs_reconciled_total",
        "lanes_jobs_pruned_total",
        "lanes_workers_timed_out_total",
        "lanes_control_plane_restarts_total",
        "lanes_jobs_fired_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    step_down();
}

/// Sets the gauges only the active server keeps to 0: a server that steps down (or never
/// ran the control plane) exports no stale figures.
pub fn step_down() {
    for name in [
        "lanes_jobs_waiting",
        "lanes_resources_reserved",
        "lanes_jobs_routed_unfinished",
        "lanes_workers",
        "lanes_jobs_scheduled",
        "lanes_jobs_slot_waiting",
        "lanes_jobs_rate_limited",
        "lanes_pool_size",
        "lanes_lanes_open",
        "lanes_workers_longest_silence_seconds",
    ] {
        metrics::gauge!(name).set(0.0);
    }
    metrics::gauge!("lanes_active").set(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn lapins_channel_closes_are_dropped_and_nothing_else() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let writer = move || Sink(sink.clone());
        let subscriber = tracing_subscriber::registry()
            .with(QuietChannelCloses)
            .with(fmt::layer().with_writer(writer).with_ansi(false));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "lapin::channel", channel = 3, "Channel closed");
            tracing::error!(target: "lapin::channel", "Got a bad acknowledgement from server");
            tracing::error!(target: "lanes", "Channel closed");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("bad acknowledgement") && text.contains("lanes"));
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
