//! `lanes bench --delayed N`: how late delayed jobs join their order. N no-op tasks on the
//! run's resources are submitted at once, due at moments spread evenly over `--delayed-secs`
//! from a start far enough ahead for the submits to be in by then; once all have run, the
//! lateness of each is `started_at − run_at` from the table (the firing, the lane hop and the
//! start), reported as p50, p99 and max. A job recorded after its due time (the submits were
//! slower than the lead allowed for) would measure its submit, not lanes: it is left out of
//! the figures and counted.

use super::{submit, BenchArgs, BenchError, Workload};
use chrono::{Duration, Utc};
use lanes::broker::{Publisher, Topology};
use serde_json::Value;
use sqlx::PgPool;

/// Lateness in ms: p50, p99, max; the offered rate at which they fell due (per second); and
/// how many were recorded after their due time (left out of the figures).
pub struct Lateness {
    pub ms: [f64; 3],
    pub due_per_sec: f64,
    pub recorded_late: i64,
}

/// How far ahead the first job falls due: two seconds, and a second per 5,000 jobs to submit
/// (several times the submit rate measured on a 2-core machine).
fn lead(n: usize) -> Duration {
    Duration::seconds(2) + Duration::milliseconds(n as i64 / 5)
}

pub async fn lateness(
    publisher: &Publisher,
    topo: &Topology,
    pool: &PgPool,
    args: &BenchArgs,
) -> Result<Lateness, BenchError> {
    let n = args.delayed;
    let over = Duration::seconds(args.delayed_secs as i64);
    let first = Utc::now() + lead(n);
    let bar = submit::bar(n as u64, "scheduling", args.json);
    let jobs = (0..n).map(|i| {
        let at = first + over * i as i32 / n.max(1) as i32;
        let mut body: Value = serde_json::from_slice(&Workload::Single.task(i, args.resources))
            .expect("the workload's body is JSON");
        body["run_at"] = Value::String(at.to_rfc3339());
        bar.inc(1);
        (
            args.new_id(),
            serde_json::to_vec(&body).expect("JSON serializes"),
        )
    });
    submit::submit_all(publisher, topo, jobs).await?;
    bar.finish_and_clear();
    let wait = submit::bar(n as u64, "waiting for due jobs", args.json);
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(args.delayed_secs + 120);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE run_at IS NOT NULL AND state = 'completed'",
        )
        .fetch_one(pool)
        .await?;
        wait.set_position(done as u64);
        if done as usize >= n {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(BenchError::Stalled(format!(
                "{done} of {n} delayed jobs ran within their window and two minutes"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    wait.finish_and_clear();
    let ms: (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l)
         FROM (SELECT (extract(epoch FROM started_at - run_at) * 1000)::float8 AS l
               FROM jobs WHERE run_at IS NOT NULL AND created_at <= run_at) AS x",
    )
    .fetch_one(pool)
    .await?;
    let recorded_late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE run_at IS NOT NULL AND created_at > run_at",
    )
    .fetch_one(pool)
    .await?;
    let round = |x: Option<f64>| (x.unwrap_or(f64::NAN) * 100.0).round() / 100.0;
    Ok(Lateness {
        ms: [round(ms.0), round(ms.1), round(ms.2)],
        due_per_sec: n as f64 / args.delayed_secs.max(1) as f64,
        recorded_late,
    })
}
