//! `lanes bench --simulate`: the real `Router` on the bench's workload, with no broker and no
//! database, to see what a routing policy does to a backlog before measuring it. A backlog is
//! submitted to the Router at once; then the lanes drain in simulated time: every task runs
//! `1` unit (about a millisecond for a no-op task), at most `workers × 8` at once and one per
//! lane, and a finished task reaches the Router `feedback` units later (the worker's event,
//! the Callback's write, the Dispatcher), whose released tasks join their lanes one unit
//! after that. The report: drain time and rate of the mixed workload beside the single one,
//! the longest lane and how many tasks waited.

use super::{workload::Workload, BenchArgs};
use lanes::routing::{Decision, Router, Target};
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

/// Drains `tasks` tasks of `workload` over `resources` resources with `permits` tasks at once.
pub fn drain(
    workload: Workload,
    tasks: usize,
    resources: usize,
    permits: usize,
    feedback: u64,
) -> Drain {
    let mut router: Router<usize> = Router::new(MIN_LANES, MAX_LANES);
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
    let (mut free, mut time, mut next_lane) = (permits.max(1), 0, 0);
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
                events.push(Reverse((time + 1, Event::End { lane, task })));
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
                events.push(Reverse((time + feedback, Event::Finish { task })));
            }
            Event::Finish { task } => {
                for (task, target) in router.finish(&Uuid::from_u128(task as u128)) {
                    let lane = slot(target, default_lane);
                    events.push(Reverse((time + 1, Event::Arrive { lane, task })));
                }
            }
            Event::Arrive { lane, task } => lanes[lane].push_back(task),
        }
    }
    Drain {
        time,
        waited,
        longest_lane: ran.iter().copied().max().unwrap_or(0),
        ran: ran.iter().sum(),
    }
}

fn slot(target: Target, default_lane: usize) -> usize {
    match target {
        Target::Lane(n) => n as usize,
        Target::Default => default_lane,
    }
}

/// `lanes bench --simulate`: the single and the mixed backlog's drains, printed.
pub fn run(args: &BenchArgs) {
    let permits = args.workers * CONCURRENCY;
    let feedback = args.sim_feedback;
    let single = drain(
        Workload::Single,
        args.tasks,
        args.resources,
        permits,
        feedback,
    );
    let mixed = drain(
        Workload::Mixed(args.multi),
        args.tasks,
        args.resources,
        permits,
        feedback,
    );
    let ratio = single.time as f64 / mixed.time.max(1) as f64;
    if args.json {
        let figure = |d: &Drain| serde_json::json!({"time": d.time, "waited": d.waited, "longest_lane": d.longest_lane});
        let report = serde_json::json!({
            "tasks": args.tasks, "resources": args.resources, "multi": args.multi,
            "permits": permits, "feedback": feedback,
            "single": figure(&single), "mixed": figure(&mixed), "mixed_vs_single": ratio,
        });
        println!("{report}");
        return;
    }
    println!(
        "simulated backlog drain: {} tasks over {} resources, {permits} at once, \
         feedback {feedback} units (a task runs 1)",
        args.tasks, args.resources
    );
    for (name, d) in [("single", &single), ("mixed", &mixed)] {
        println!(
            "  {name:<7} time {:>7}  waited {:>6}  longest lane {:>6}",
            d.time, d.waited, d.longest_lane
        );
    }
    println!("  mixed ÷ single rate: {ratio:.3}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_resource_backlog_drains_at_the_lanes_pace() {
        // 32 lanes, 16 at once: 3,200 tasks in about 3,200 / 16 units.
        let d = drain(Workload::Single, 3_200, 100, 16, 10);
        assert_eq!((d.waited, d.ran), (0, 3_200));
        assert!(d.time >= 200 && d.time <= 260, "{d:?}");
    }

    #[test]
    fn every_task_runs_once_in_the_mixed_backlog() {
        let d = drain(Workload::Mixed(0.2), 2_000, 50, 16, 10);
        assert!(d.waited > 0, "{d:?}");
        assert_eq!(d.ran, 2_000, "{d:?}");
        let again = drain(Workload::Mixed(0.2), 2_000, 50, 16, 10);
        assert_eq!(d, again, "the simulation is deterministic");
    }
}
