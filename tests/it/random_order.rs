//! The randomized order test: fast, mixed traffic over many seeds against the real broker
//! and database, checked from the tasks' own execution log (`probe` tasks, see `execlog`).
//!
//! Each seed draws its traffic: 1,000 tasks of 0–12 ms over 30 resources, most on one
//! resource, some on two or three, some holding a resource shared, published in bursts of
//! random size with random pauses (so batches split at random places), against two workers
//! and a lane pool of random size. Some seeds kill a worker (SIGKILL) or drain one (SIGTERM)
//! in the middle and start another. One task in twenty is delayed (`delay_ms` up to 1,000): it
//! joins its resources' order when it falls due. Two resources are limited (and one task in
//! twelve holds a slot of one of them): `repo:0` has two
//! slots, `repo:1` two slots and a rate of 3 starts per 200 ms; most tasks on them hold a slot
//! (`slot:`, and run 20–60 ms, so that the capacity binds), the rest hold them exclusively or
//! shared. The oracle (`execlog::conflicts`) knows
//! which starts the contract orders; every one of them is checked (a delayed task's where the
//! outside can tell: see `ExecLog::published`), with exclusion and capacity (lock and slot
//! files), the rate (starts per window) and runs per job.
//!
//! `LANES_ORDER_SEEDS` (`first..end`, default `1..11`) and `LANES_ORDER_TASKS` choose the run.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{Opts, TestApp},
};
use lanes::{
    limit::{Limit, Rate},
    protocol::Access,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Duration;

const RESOURCES: usize = 30;
/// A task published this soon after a delayed task's due time is not ordered after it by the
/// oracle: how late the firing was is not known here. On this 2-core machine, with the rest of
/// the suite beside it, firings were up to about 320 ms late.
const DUE_MARGIN: Duration = Duration::from_secs(1);

/// What a seed does to the workers in the middle of its traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    Kill,
    Drain,
}

fn fault_of(seed: u64) -> Fault {
    match seed % 5 {
        3 => Fault::Kill,
        4 => Fault::Drain,
        _ => Fault::None,
    }
}

/// The limited resources and their limits.
fn limits() -> [(&'static str, Limit); 2] {
    [
        (
            "repo:0",
            Limit {
                slots: 2,
                rate: None,
            },
        ),
        (
            "repo:1",
            Limit {
                slots: 2,
                rate: Some(Rate {
                    starts: 3,
                    per_ms: 200,
                }),
            },
        ),
    ]
}

/// One task's resources: mostly one, sometimes two or three, sometimes shared; on a limited
/// resource, mostly a slot.
fn resources(rng: &mut StdRng) -> Vec<String> {
    let name = |rng: &mut StdRng| format!("repo:{}", rng.random_range(0..RESOURCES));
    let roll = rng.random_range(0..100);
    let mut names = match roll {
        // Bursts of slot holders on the limited resources, so that their limits bind.
        0..=7 => vec![limits()[roll % 2].0.to_owned()],
        8..=79 => vec![name(rng)],
        80..=89 => vec![name(rng), name(rng)],
        90..=93 => vec![name(rng), name(rng), name(rng)],
        _ => vec![format!("shared:{}", name(rng))],
    };
    if (90..=93).contains(&roll) && rng.random_bool(0.5) {
        names[2] = format!("shared:{}", names[2]);
    }
    // One holder per resource: the contract merges duplicates, the oracle need not.
    let mut seen = std::collections::HashSet::new();
    names.retain(|r| seen.insert(r.strip_prefix("shared:").unwrap_or(r).to_owned()));
    for r in &mut names {
        if limits().iter().any(|(n, _)| n == r) && (roll < 8 || rng.random_bool(0.7)) {
            *r = format!("slot:{r}");
        }
    }
    names
}

fn seeds() -> std::ops::Range<u64> {
    std::env::var("LANES_ORDER_SEEDS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(1..11)
}

fn tasks() -> usize {
    std::env::var("LANES_ORDER_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000)
}

/// Runs one seed; the execution log's order violations.
async fn run_seed(seed: u64, n: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let fault = fault_of(seed);
    let max_queues = [3, 6, 16, 32][rng.random_range(0..4)];
    let prefetch = [1, 4, 32][rng.random_range(0..3)];
    let mut env = worker_env();
    env.push(("LANES_LANE_PREFETCH".into(), prefetch.to_string()));
    let mut app = TestApp::with(Opts {
        workers: 2,
        max_queues,
        env,
        ..Opts::default()
    })
    .await;
    let mut log = ExecLog::new(&format!("order-{seed}"));
    for (name, limit) in limits() {
        app.set_limit(name, &limit).await;
        log.limit(name, limit);
    }
    let delays: Vec<Option<u64>> = (0..n)
        .map(|_| rng.random_bool(0.05).then(|| rng.random_range(1..=1000)))
        .collect();
    let traffic: Vec<_> = delays
        .iter()
        .map(|delay| {
            let names = resources(&mut rng);
            // Slot holders run longer, so that the capacity binds.
            let ms = match names.iter().any(|r| r.starts_with("slot:")) {
                true => rng.random_range(20..=60),
                false => rng.random_range(0..=12),
            };
            let (body, token) = log.probe(&names, ms);
            let Some(ms) = delay else {
                return (body, token);
            };
            let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
            doc["delay_ms"] = serde_json::json!(ms);
            (serde_json::to_vec(&doc).unwrap(), token)
        })
        .collect();
    let mut published_at = vec![0i64; n];
    eprintln!("seed {seed}: {max_queues} lanes, prefetch {prefetch}, fault {fault:?}");
    let (mut sent, fault_at) = (0, n / 3);
    let mut faulted = false;
    while sent < n {
        let burst = rng.random_range(1..=120).min(n - sent);
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
        published_at[sent..sent + burst].fill(now);
        app.publish_many(&traffic[sent..sent + burst]).await;
        sent += burst;
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        }
        if !faulted && sent >= fault_at {
            faulted = true;
            match fault {
                Fault::None => {}
                Fault::Kill => {
                    app.kill_worker(0);
                    app.replace_dead_workers();
                }
                Fault::Drain => {
                    app.start_worker();
                    app.term_worker(0).await;
                    app.replace_dead_workers();
                }
            }
        }
    }
    let rows = app.wait_completed(n, Duration::from_secs(180)).await;
    let times = traffic
        .iter()
        .zip(published_at.iter().zip(&delays))
        .map(|((_, token), (at, delay))| (token.clone().unwrap(), (*at, delay.is_some())))
        .collect();
    log.published(times, DUE_MARGIN);
    let report = log.report(&rows);
    eprintln!(
        "seed {seed}: {} order violations, {} overlaps, {} rate violations, {} extra runs {:?}",
        report.order_violations,
        report.overlaps,
        report.rate_violations,
        report.extra_runs,
        report.out_of_order
    );
    log.assert_exclusive(&rows);
    if fault == Fault::None {
        assert_eq!(
            report.extra_runs, 0,
            "seed {seed}: a job ran twice: {report:?}"
        );
    }
    report.order_violations
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_mixed_traffic_keeps_submit_order_on_every_seed() {
    let n = tasks();
    let mut violations = Vec::new();
    for seed in seeds() {
        violations.push((seed, run_seed(seed, n).await));
    }
    eprintln!("order violations per seed: {violations:?}");
    assert!(
        violations.iter().all(|(_, v)| *v == 0),
        "tasks started before earlier tasks on their resources: {violations:?}"
    );
}

/// The pairs the oracle orders, as owned strings.
fn ordered_pairs(holders: &[(String, Access)]) -> Vec<(String, String)> {
    crate::execlog::conflicts(holders)
        .into_iter()
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect()
}

#[test]
fn the_oracle_orders_writers_after_everything_and_readers_after_writers() {
    let h = |t: &str, shared: bool| {
        let access = match shared {
            true => Access::Shared,
            false => Access::Exclusive,
        };
        (t.to_owned(), access)
    };
    let holders = [
        h("w1", false),
        h("r1", true),
        h("r2", true),
        h("w2", false),
        h("w3", false),
        h("r3", true),
    ];
    let pairs = ordered_pairs(&holders);
    let p = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        pairs,
        vec![
            p("w1", "r1"),
            p("w1", "r2"),
            p("r1", "w2"),
            p("r2", "w2"),
            p("w2", "w3"),
            p("w3", "r3"),
        ]
    );
}

#[test]
fn the_oracle_orders_slot_holders_among_themselves_and_against_the_others() {
    let h = |t: &str, access| (t.to_owned(), access);
    let holders = [
        h("s1", Access::Slot),
        h("s2", Access::Slot),
        h("r1", Access::Shared),
        h("s3", Access::Slot),
        h("s4", Access::Slot),
        h("w1", Access::Exclusive),
    ];
    let pairs = ordered_pairs(&holders);
    let p = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        pairs,
        vec![
            p("s1", "s2"),
            p("s1", "r1"),
            p("s2", "r1"),
            p("r1", "s3"),
            p("r1", "s4"),
            p("s3", "s4"),
            p("s3", "w1"),
            p("s4", "w1"),
        ]
    );
}
