//! `lanes bench --simulate`: the real `Router` on the bench's workload, with no broker and no
//! database, to see what a routing policy does to a backlog before measuring it. A backlog is
//! submitted to the Router at once; then the lanes drain in simulated time: a task runs 1 unit
//! on average (about a millisecond for a no-op task), at most `workers × 8` at once and one per
//! lane, and a finished task reaches the Router `feedback` units later (the worker's event,
//! the Callback's write, the Dispatcher), whose released tasks join their lanes one unit
//! after that. Each time is drawn from `(1 ± jitter) ×` its mean with a seeded generator, so
//! a run repeats exactly and several seeds show the spread that timing alone causes. The
//! report: drain time and rate of the mixed workload beside the single one, the longest lane
//! and how many tasks waited.

use super::{workload::Workload, BenchArgs};
use lanes::routing::{Decision, Router, Target};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
};
use uuid::Uuid;

/// Tasks a worker runs at once (the default `LANES_CONCURRENCY`).
const CONCURRENCY: usize = 8;
/// The server's default lane pool.
const MIN_LANES: u32 = 4;
const MAX_LANES: u32 = 32;
/// Simulated ticks in a unit (one mean run time).
const TICKS: f64 = 100.0;

/// How a drain is simulated.
#[derive(Debug, Clone, Copy)]
pub struct Sim {
    /// Tasks that run at once.
    pub permits: usize,
    /// Mean time from a task's end until the Router hears of it, in units.
    pub feedback: u64,
    /// Spread of every time around its mean, as a fraction of it.
    pub jitter: f64,
    pub seed: u64,
    /// The lanes' depth bound (None: unbounded).
    pub depth: Option<u32>,
    /// The Router's `rebalance_after` (None: never).
    pub rebalance: Option<u32>,
}

/// What one simulated drain showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    /// Simulated time until the last task ended.
    pub time: u64,
    /// Tasks that went to the waiting line when submitted.
    pub waited: usize,
    /// The most tasks any one lane ran.
    pub longest_lane: usize,
    /// Tasks that ran, over all lanes.
    pub ran: usize,
    /// The most tasks one lane held at once (queued and running).
    pub deepest: usize,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A task ended in its lane.
    End { lane: usize, task: usize },
    /// The Router hears of an ended task.
    Finish { task: usize },
    /// A released task reaches its lane.
    Arrive { lane: usize, task: usize },
}

/// Drains `tasks` tasks of `workload` over `resources` resources.
pub fn drain(workload: Workload, tasks: usize, resources: usize, sim: Sim) -> Drain {
    let mut rng = StdRng::seed_from_u64(sim.seed);
    let mut draw = |mean: f64| -> u64 {
        let j = sim.jitter.clamp(0.0, 1.0);
        let factor = if j > 0.0 {
            rng.random_range(1.0 - j..=1.0 + j)
        } else {
            1.0
        };
        (mean * TICKS * factor).round().max(1.0) as u64
    };
    let mut router: Router<usize> = Router::new(MIN_LANES, MAX_LANES)
        .with_depth(sim.depth)
        .with_rebalance_after(sim.rebalance);
    let mut lanes: Vec<VecDeque<usize>> = vec![VecDeque::new(); MAX_LANES as usize + 1];
    let default_lane = MAX_LANES as usize;
    let mut ran = vec![0usize; lanes.len()];
    let mut waited = 0;
    for i in 0..tasks {
        let id = Uuid::from_u128(i as u128);
        match router.submit(id, &workload.resources(i, resources), i) {
            Decision::Routed(task, target) => lanes[slot(target, default_lane)].push_back(task),
            Decision::Waiting => waited += 1,
        }
    }
    let mut busy = vec![false; lanes.len()];
    let mut deepest = lanes.iter().map(VecDeque::len).max().unwrap_or(0);
    let (mut free, mut time, mut next_lane) = (sim.permits.max(1), 0, 0);
    let mut events = BinaryHeap::new();
    loop {
        // Start what can start, visiting lanes round robin (each lane's owner takes its head).
        let mut looked = 0;
        while free > 0 && looked < lanes.len() {
            let lane = next_lane;
            next_lane = (next_lane + 1) % lanes.len();
            looked += 1;
            if busy[lane] {
                continue;
            }
            if let Some(task) = lanes[lane].pop_front() {
                busy[lane] = true;
                free -= 1;
                ran[lane] += 1;
                looked = 0;
                events.push(Reverse((time + draw(1.0), Event::End { lane, task })));
            }
        }
        let Some(Reverse((at, event))) = events.pop() else {
            break;
        };
        time = at;
        match event {
            Event::End { lane, task } => {
                busy[lane] = false;
                free += 1;
                events.push(Reverse((
                    time + draw(sim.feedback as f64),
                    Event::Finish { task },
                )));
            }
            Event::Finish { task } => {
                for (task, target) in router.finish(&Uuid::from_u128(task as u128)) {
                    let lane = slot(target, default_lane);
                    events.push(Reverse((time + draw(1.0), Event::Arrive { lane, task })));
                }
            }
            Event::Arrive { lane, task } => {
                lanes[lane].push_back(task);
                deepest = deepest.max(lanes[lane].len() + busy[lane] as usize);
            }
        }
    }
    Drain {
        time: (time as f64 / TICKS).round() as u64,
        waited,
        longest_lane: ran.iter().copied().max().unwrap_or(0),
        ran: ran.iter().sum(),
        deepest,
    }
}

fn slot(target: Target, default_lane: usize) -> usize {
    match target {
        Target::Lane(n) => n as usize,
        Target::Default => default_lane,
    }
}

/// `lanes bench --simulate`: the single and the mixed backlog's drains over `--sim-runs`
/// seeds, each ratio from one seed, printed with their median and minimum.
pub fn run(args: &BenchArgs) {
    let runs: Vec<(Drain, Drain, f64)> = (0..args.sim_runs.max(1))
        .map(|seed| {
            let sim = Sim {
                permits: args.workers * CONCURRENCY,
                feedback: args.sim_feedback,
                jitter: args.sim_jitter,
                seed,
                depth: (args.sim_depth > 0).then_some(args.sim_depth),
                rebalance: (args.sim_rebalance > 0).then_some(args.sim_rebalance),
            };
            let single = drain(Workload::Single, args.tasks, args.resources, sim);
            let mixed = drain(Workload::Mixed(args.multi), args.tasks, args.resources, sim);
            let ratio = single.time as f64 / mixed.time.max(1) as f64;
            (single, mixed, ratio)
        })
        .collect();
    let mut ratios: Vec<f64> = runs.iter().map(|r| r.2).collect();
    ratios.sort_by(f64::total_cmp);
    let (median, min) = (ratios[ratios.len() / 2], ratios[0]);
    if args.json {
        let figure = |d: &Drain| serde_json::json!({"time": d.time, "waited": d.waited, "longest_lane": d.longest_lane});
        let report = serde_json::json!({
            "tasks": args.tasks, "resources": args.resources, "multi": args.multi,
            "permits": args.workers * CONCURRENCY, "feedback": args.sim_feedback,
            "jitter": args.sim_jitter, "depth": args.sim_depth, "rebalance_after": args.sim_rebalance,
            "runs": runs.iter().map(|(s, m, r)| serde_json::json!({
                "single": figure(s), "mixed": figure(m), "mixed_vs_single": r,
            })).collect::<Vec<_>>(),
            "mixed_vs_single_median": median, "mixed_vs_single_min": min,
        });
        println!("{report}");
        return;
    }
    println!(
        "simulated backlog drain: {} tasks over {} resources, {} at once, feedback {} units \
         (a task runs 1), jitter ±{:.0} %, lane depth {}, rebalance after {}",
        args.tasks,
        args.resources,
        args.workers * CONCURRENCY,
        args.sim_feedback,
        args.sim_jitter * 100.0,
        if args.sim_depth == 0 {
            "unbounded".to_string()
        } else {
            args.sim_depth.to_string()
        },
        if args.sim_rebalance == 0 {
            "never".to_string()
        } else {
            args.sim_rebalance.to_string()
        },
    );
    for (seed, (single, mixed, ratio)) in runs.iter().enumerate() {
        println!(
            "  seed {seed}: single time {:>6} (longest lane {:>5}); mixed time {:>6} \
             (waited {:>5}, longest lane {:>5}); mixed ÷ single {ratio:.3}",
            single.time, single.longest_lane, mixed.time, mixed.waited, mixed.longest_lane
        );
    }
    println!("  mixed ÷ single rate: median {median:.3}, lowest {min:.3}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(depth: Option<u32>, jitter: f64, seed: u64) -> Sim {
        Sim {
            permits: 16,
            feedback: 10,
            jitter,
            seed,
            depth,
            rebalance: None,
        }
    }

    #[test]
    fn a_single_resource_backlog_drains_at_the_lanes_pace() {
        // 32 lanes, 16 at once: 3,200 tasks in about 3,200 / 16 units.
        let d = drain(Workload::Single, 3_200, 100, sim(None, 0.0, 0));
        assert_eq!((d.waited, d.ran), (0, 3_200));
        assert!(d.time >= 200 && d.time <= 260, "{d:?}");
    }

    #[test]
    fn every_task_runs_once_in_the_mixed_backlog() {
        for depth in [None, Some(1), Some(16)] {
            let d = drain(Workload::Mixed(0.2), 2_000, 50, sim(depth, 0.5, 7));
            assert!(d.waited > 0, "{d:?}");
            assert_eq!(d.ran, 2_000, "{d:?}");
            let again = drain(Workload::Mixed(0.2), 2_000, 50, sim(depth, 0.5, 7));
            assert_eq!(d, again, "a seed repeats exactly");
        }
    }

    #[test]
    fn a_bounded_lane_never_holds_more_than_its_depth() {
        let d = drain(Workload::Mixed(0.2), 2_000, 50, sim(Some(4), 0.5, 3));
        assert_eq!(d.ran, 2_000);
        assert!(d.deepest <= 4, "{d:?}");
    }
}
