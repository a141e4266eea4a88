//! What `lanes bench` submits and how a run is timed: the single-resource workload, the mixed
//! one (a fraction of tasks lock 2–3 resources), end to end (submitted while workers run) or
//! as a backlog (recorded first, then drained), and a table pre-filled with finished rows.

use super::{fleet::Fleet, submit, BenchArgs, BenchError};
use chrono::{DateTime, Utc};
use lanes::broker::{Publisher, Topology};
use serde_json::json;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// Which tasks a run submits.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// Every task on one resource.
    Single,
    /// This fraction of tasks on 2–3 resources, the rest on one.
    Mixed(f64),
}

impl Workload {
    /// Task `i`'s submit body, over `resources` resources.
    pub fn task(self, i: usize, resources: usize) -> Vec<u8> {
        let names = self.resources(i, resources);
        serde_json::to_vec(&json!({"task": "noop", "resources": names})).expect("json")
    }

    /// The resources of task `i`, over `resources` resources.
    pub fn resources(self, i: usize, resources: usize) -> Vec<String> {
        let r = resources.max(3);
        match self {
            Workload::Mixed(f) if is_multi(i, f) => {
                let k = 2 + i % 2;
                let mut picked = vec![i % r];
                for step in [7, 13].into_iter().take(k - 1) {
                    let mut next = (i * step + 1) % r;
                    while picked.contains(&next) {
                        next = (next + 1) % r;
                    }
                    picked.push(next);
                }
                picked.iter().map(|n| format!("bench:{n}")).collect()
            }
            _ => vec![format!("bench:{}", i % r)],
        }
    }
}

/// Whether task `i` is one of the multi-resource fraction `f` (spread evenly).
fn is_multi(i: usize, f: f64) -> bool {
    let f = f.clamp(0.0, 1.0);
    ((i + 1) as f64 * f).floor() > (i as f64 * f).floor()
}

/// The newest `seq`: a run counts only the rows after it.
pub(super) async fn last_seq(pool: &PgPool) -> Result<i64, BenchError> {
    let (n,): (Option<i64>,) = sqlx::query_as("SELECT max(seq) FROM jobs")
        .fetch_one(pool)
        .await?;
    Ok(n.unwrap_or(0))
}

/// Rows of this run (after `base`) in `state`, or all of them; an index range scan.
async fn count_since(pool: &PgPool, base: i64, state: Option<&str>) -> Result<i64, BenchError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM jobs WHERE seq > $1 AND ($2::text IS NULL OR state = $2)",
    )
    .bind(base)
    .bind(state)
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// Waits until `target` rows of this run are in `state` (any state: recorded); fails if the
/// count stands still for 60 s.
pub(super) async fn wait_for(
    pool: &PgPool,
    base: i64,
    state: Option<&str>,
    target: i64,
    progress: &indicatif::ProgressBar,
) -> Result<(), BenchError> {
    let (mut last, mut since) = (-1, Instant::now());
    loop {
        let n = count_since(pool, base, state).await?;
        progress.set_position(n as u64);
        if n >= target {
            return Ok(());
        }
        if n != last {
            (last, since) = (n, Instant::now());
        } else if since.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Stalled(format!(
                "stuck at {n} of {target} jobs ({})",
                state.unwrap_or("recorded")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tasks per second of one run: end to end (from the first publish to the last `completed`
/// row) or, with `--backlog`, draining (recorded with no worker running, then from the first
/// start to the last end).
pub async fn rate(
    fleet: &mut Fleet,
    publisher: &Publisher,
    topo: &Topology,
    pool: &PgPool,
    args: &BenchArgs,
    workload: Workload,
    label: &str,
) -> Result<f64, BenchError> {
    let n = args.tasks;
    let base = last_seq(pool).await?;
    let progress = submit::bar(n as u64, label, args.json);
    let jobs = (0..n).map(|i| (args.new_id(), workload.task(i, args.resources)));
    let submitted = Utc::now();
    if args.backlog {
        fleet.stop_workers();
        submit::submit_all(publisher, topo, jobs).await?;
        wait_for(pool, base, None, n as i64, &progress).await?;
        fleet.spawn_workers()?;
        fleet.wait_ready().await?;
        wait_for(pool, base, Some("completed"), n as i64, &progress).await?;
    } else {
        let publish = submit::submit_all(publisher, topo, jobs);
        let wait = wait_for(pool, base, Some("completed"), n as i64, &progress);
        let (p, w) = futures::join!(publish, wait);
        p?;
        w?;
    }
    progress.finish_and_clear();
    // The end is when the last `completed` row was written, not when polling noticed it.
    let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT min(started_at), max(updated_at) FROM jobs WHERE seq > $1 AND state = 'completed'",
    )
    .bind(base)
    .fetch_one(pool)
    .await?;
    let from = match args.backlog {
        true => first.unwrap_or(submitted),
        false => submitted,
    };
    let took = (last.unwrap_or_else(Utc::now) - from)
        .num_microseconds()
        .unwrap_or(1)
        .max(1) as f64
        / 1e6;
    if args.backlog {
        drain_profile(pool, base, from, label).await?;
    }
    Ok(n as f64 / took)
}

/// Half, 90 % and all ended; sent during the drain: how many, half of them by, the last.
type Profile = (
    Option<f64>,
    Option<f64>,
    Option<f64>,
    i64,
    Option<f64>,
    Option<f64>,
);

/// Where a drain's time went, on stderr: when half, 90 % and all of the tasks had ended, and
/// how many were sent to their lanes only during the drain (they waited), and when they ended.
async fn drain_profile(
    pool: &PgPool,
    base: i64,
    from: DateTime<Utc>,
    label: &str,
) -> Result<(), BenchError> {
    let row: Profile = sqlx::query_as(
        "WITH j AS (SELECT extract(epoch FROM updated_at - $2)::float8 AS done,
                               queued_at > $2 AS late,
                               extract(epoch FROM queued_at - $2)::float8 AS sent
                        FROM jobs WHERE seq > $1 AND state = 'completed')
             SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY done),
                    percentile_cont(0.9) WITHIN GROUP (ORDER BY done),
                    max(done),
                    count(*) FILTER (WHERE late),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY sent) FILTER (WHERE late),
                    max(sent) FILTER (WHERE late)
             FROM j",
    )
    .bind(base)
    .bind(from)
    .fetch_one(pool)
    .await?;
    let s = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} s"));
    eprintln!(
        "{label} drain: half ended at {}, 90 % at {}, all at {}; {} tasks sent during the \
         drain (half of them by {}, the last at {})",
        s(row.0),
        s(row.1),
        s(row.2),
        row.3,
        s(row.4),
        s(row.5)
    );
    Ok(())
}

/// Puts `rows` finished jobs in the table with one statement, one in 100,000 of them failed
/// (a filter on a rare state must not walk the table); then vacuums and checkpoints, as a
/// table that grew over months has been. Returns how long each half took.
/// Its ids are time-ordered (v7, one a millisecond up to now) or, with `random`, v4.
pub async fn fill(
    pool: &PgPool,
    rows: u64,
    random: bool,
    quiet: bool,
) -> Result<(Duration, Duration), BenchError> {
    if !quiet {
        eprintln!("filling the jobs table with {rows} finished rows…");
    }
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO jobs (id, task, args, resources, queue, state, attempts, max_attempts,
                           worker, result, created_at, queued_at, started_at, finished_at,
                           updated_at)
         SELECT CASE WHEN $2 THEN gen_random_uuid() ELSE
                    (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint - $1 + g), 12, '0')
                     || '7' || substr(md5(g::text), 1, 3) || '8'
                     || substr(md5(g::text), 4, 15))::uuid END,
                'noop', NULL, ARRAY['fill:' || (g % 1000)], 'fill',
                CASE WHEN g % 100000 = 0 THEN 'failed' ELSE 'completed' END, 1, 3, 'fill', NULL,
                now(), now(), now(), now(), now()
         FROM generate_series(1, $1::bigint) AS g",
    )
    .bind(rows as i64)
    .bind(random)
    .execute(pool)
    .await?;
    let filled = started.elapsed();
    if !quiet {
        eprintln!("vacuuming and checkpointing…");
    }
    sqlx::query("VACUUM (FREEZE, ANALYZE) jobs")
        .execute(pool)
        .await?;
    // Only a superuser (or pg_checkpoint) may; without it the settling is the vacuum alone.
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("CHECKPOINT skipped: {e}");
    }
    Ok((filled, started.elapsed() - filled))
}

/// The median of five timings of `GET path` on the server, in ms.
pub async fn page_ms(http: &str, path: &str) -> Result<f64, BenchError> {
    let client = reqwest::Client::new();
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let resp = client
            .get(format!("http://{http}{path}"))
            .send()
            .await
            .map_err(|e| BenchError::Stalled(format!("GET {path}: {e}")))?;
        let _ = resp.bytes().await;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok((took[2] * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixed_fraction_is_spread_evenly_and_names_distinct_resources() {
        let multi = (0..1000).filter(|&i| is_multi(i, 0.2)).count();
        assert_eq!(multi, 200);
        for i in 0..1000 {
            let body: serde_json::Value =
                serde_json::from_slice(&Workload::Mixed(0.2).task(i, 200)).unwrap();
            let names: Vec<&str> = body["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let unique: std::collections::BTreeSet<_> = names.iter().collect();
            assert_eq!(unique.len(), names.len(), "{names:?}");
            assert!(names.len() == 1 || (is_multi(i, 0.2) && (2..=3).contains(&names.len())));
        }
        assert_eq!(
            Workload::Single.task(5, 100),
            Workload::Mixed(0.0).task(5, 100)
        );
    }
}
