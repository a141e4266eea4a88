//! Chaos from outside: one bounded run that mixes every fault lanes promises to survive, while
//! tasks that log their own runs and `flock` their resources (`it/execlog.rs`) flow through:
//! SIGKILL and SIGSTOP of workers (with `exec` children running), SIGKILL and SIGSTOP of the
//! active server beside a standby, a RabbitMQ restart, a PostgreSQL restart and a table lock.
//! It ends with every job completed and, from the execution log, 0 overlaps, 0 order
//! violations and 0 runs of a job after it was recorded finished. The figures (runs, extra
//! runs, takeover time after SIGSTOP of the active server) are printed and written to
//! `target/tmp/chaos-outside.json`.
//!
//! It restarts the shared RabbitMQ and PostgreSQL, so it is a test target of its own (cargo
//! runs targets one at a time).

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

use execlog::{worker_env, ExecLog};
use helpers::{is_active, Opts, TestApp, AMQP_URL};
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

fn sh(cmd: &str) {
    let status = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(status.success(), "`{cmd}` failed");
}

fn signal(pid: u32, sig: &str) {
    sh(&format!("kill -{sig} {pid}"));
}

struct Chaos {
    app: TestApp,
    log: ExecLog,
    /// The second server, and its HTTP address.
    standby: (Child, String),
    sent: usize,
}

impl Chaos {
    async fn publish(&mut self, n: usize) -> Vec<String> {
        let work = self.log.mixed(self.sent, n, (60, 10), 40);
        self.sent += n;
        self.app.publish_many(&work).await;
        work.into_iter().filter_map(|(_, id)| id).collect()
    }

    /// (pid, url) of the server that is active now.
    async fn active(&mut self) -> (u32, bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if is_active(&self.app.base).await == Some(true) {
                return (self.app.server_pid(), true);
            }
            if is_active(&self.standby.1).await == Some(true) {
                return (self.standby.0.id(), false);
            }
            assert!(Instant::now() < deadline, "no server is active");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn reconnect_client(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
                Ok(c) => {
                    self.app.amqp = c;
                    return;
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Err(e) => panic!("RabbitMQ did not come back: {e}"),
            }
        }
    }

    /// Waits (bounded) until one of `tokens` has started; returns how long that took.
    async fn until_one_starts(&self, tokens: &[String], since: Instant) -> Duration {
        let deadline = since + Duration::from_secs(90);
        while !tokens.iter().any(|t| self.log.started(t)) {
            assert!(Instant::now() < deadline, "no task ran after the fault");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        since.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_at_once_loses_nothing_and_overlaps_nothing() {
    let app = TestApp::with(Opts {
        workers: 4,
        max_queues: 8,
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    let mut app = app;
    let standby = app.start_standby();
    let mut c = Chaos {
        app,
        log: ExecLog::new("chaos"),
        standby,
        sent: 0,
    };
    c.app.wait_workers(4).await;
    let mut faults = Vec::new();
    let step = Duration::from_millis(1500);

    // 1. A worker killed alone while its exec children run.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    c.app.kill_worker(0);
    c.app.start_worker();
    faults.push("worker SIGKILL");

    // 2. A worker stopped for longer than the heartbeat timeout, then continued.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    let pid = c.app.workers[1].id();
    signal(pid, "STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(pid, "CONT");
    faults.push("worker SIGSTOP 4 s");

    // 3. The active server killed: the standby takes over at once; a new standby starts.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    let (_, primary) = c.active().await;
    if primary {
        c.app.kill_server();
        c.app.start_server();
    } else {
        let _ = c.standby.0.kill();
        let _ = c.standby.0.wait();
        c.standby = c.app.start_standby();
    }
    faults.push("active server SIGKILL");

    // 4. The active server stopped: the standby takes over when its lease runs out.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    let (pid, _) = c.active().await;
    signal(pid, "STOP");
    let stopped = Instant::now();
    let probes = c.publish(60).await;
    let takeover = c.until_one_starts(&probes, stopped).await;
    signal(pid, "CONT");
    faults.push("active server SIGSTOP");

    // 5. RabbitMQ restarts: every connection drops.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    tokio::task::block_in_place(|| {
        sh("rabbitmqctl -q stop_app && rabbitmqctl -q start_app && rabbitmqctl -q await_startup")
    });
    c.reconnect_client().await;
    faults.push("RabbitMQ restart");

    // 6. PostgreSQL restarts.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    tokio::task::block_in_place(|| {
        sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main restart")
    });
    faults.push("PostgreSQL restart");

    // 7. A table lock longer than the heartbeat timeout.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    c.app.lock_jobs_table(Duration::from_secs(4)).await;
    faults.push("table lock 4 s");

    // 8. Another worker killed alone.
    c.publish(150).await;
    tokio::time::sleep(step).await;
    c.app.kill_worker(2);
    c.app.start_worker();
    faults.push("worker SIGKILL");

    let total = c.sent;
    let rows = c.app.wait_final(total, Duration::from_secs(300)).await;
    let stranded = rows.iter().filter(|r| r.state != "completed").count();
    let report = c.log.report(&rows);
    let figures = json!({
        "faults": faults, "jobs": total, "recorded": rows.len(), "stranded": stranded,
        "runs": report.started + report.extra_runs, "extra_runs": report.extra_runs,
        "overlaps": report.overlaps, "order_violations": report.order_violations,
        "runs_after_finish": report.runs_after_finish,
        "takeover_after_server_sigstop_ms": takeover.as_millis() as u64,
    });
    eprintln!("chaos: {figures}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/chaos-outside.json"),
        figures.to_string(),
    );
    assert_eq!(rows.len(), total, "jobs lost");
    assert_eq!(stranded, 0, "jobs not completed");
    c.log.assert_kept(&rows);
    let _ = c.standby.0.kill();
    let _ = c.standby.0.wait();
}
