//! Property tests: random interleavings of submits, completions, cancellations, the passing of
//! time and pool shrinking, checked against a model of lanes that run their head task.

use super::*;
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

const MIN: u32 = 1;
const MAX: u32 = 4;
const COOL_DOWN: Duration = Duration::from_millis(10);
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<(usize, bool)>),
    Finish(usize),
    Cancel(usize),
    /// Time passes (milliseconds).
    Advance(u8),
    /// The periodic sweep: close every lane the router calls closable.
    Sweep,
    /// Try to close an arbitrary lane.
    Close(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..NAMES.len(), any::<bool>()), 0..4).prop_map(Op::Submit),
        3 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (0u8..8).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        1 => (0..MAX + 1).prop_map(Op::Close),
    ]
}

#[derive(Debug)]
struct Job {
    seq: usize,
    claims: Vec<Claim>,
    start: Option<usize>,
    end: Option<usize>,
}

fn conflict(a: &[Claim], b: &[Claim]) -> bool {
    a.iter().any(|x| {
        b.iter()
            .any(|y| x.name == y.name && !(x.shared && y.shared))
    })
}

struct Model {
    router: Router<Uuid>,
    depth: Option<u32>,
    rebalance: Option<u32>,
    /// Tasks placed in a lane on a resource since the lane took it: (resource, lane) → count.
    tenure: HashMap<(String, usize), u32>,
    lanes: Vec<VecDeque<Uuid>>,
    jobs: HashMap<Uuid, Job>,
    clock: usize,
    start: Instant,
    /// Model time, in milliseconds since `start`.
    ms: u64,
    /// The last model time each lane held an unfinished task.
    last_busy: Vec<Option<u64>>,
}

impl Model {
    fn new(depth: Option<u32>, rebalance: Option<u32>) -> Self {
        Model {
            router: Router::new(MIN, MAX)
                .with_depth(depth)
                .with_rebalance_after(rebalance),
            depth,
            rebalance,
            tenure: HashMap::new(),
            lanes: vec![VecDeque::new(); MAX as usize],
            jobs: HashMap::new(),
            clock: 0,
            start: Instant::now(),
            ms: 0,
            last_busy: vec![None; MAX as usize],
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.ms)
    }

    fn sweep(&mut self) -> Vec<u32> {
        let now = self.now();
        let closable = self.router.closable(now, COOL_DOWN);
        for &l in &closable {
            assert!(l >= MIN, "lanes below min never close");
            assert!(
                self.lanes[l as usize].is_empty(),
                "closable lane holds tasks"
            );
            assert!(
                self.last_busy[l as usize]
                    .is_none_or(|t| self.ms - t >= COOL_DOWN.as_millis() as u64),
                "lane closable before its cool-down"
            );
            assert!(self.router.close(l), "a closable lane closes");
            assert!(!self.router.is_open(l));
        }
        closable
    }

    /// A lane's hold on a resource ends when no unfinished task in it claims the resource.
    fn end_tenures(&mut self) {
        let (lanes, jobs) = (&self.lanes, &self.jobs);
        self.tenure.retain(|(name, l), _| {
            lanes[*l]
                .iter()
                .any(|id| jobs[id].claims.iter().any(|c| &c.name == name))
        });
    }

    fn place(&mut self, routed: Vec<(Uuid, Target)>) {
        self.end_tenures();
        for (id, target) in routed {
            let Target::Lane(l) = target else {
                panic!("a waiter cannot go to the default queue")
            };
            assert!(self.router.is_open(l), "a task went to a closed lane");
            for c in &self.jobs[&id].claims {
                *self.tenure.entry((c.name.clone(), l as usize)).or_default() += 1;
            }
            self.lanes[l as usize].push_back(id);
        }
    }

    fn apply(&mut self, op: &Op) {
        self.clock += 1;
        match op {
            Op::Submit(picks) => {
                let resources: Vec<String> = picks
                    .iter()
                    .map(|(i, shared)| {
                        if *shared {
                            format!("shared:{}", NAMES[*i])
                        } else {
                            NAMES[*i].to_owned()
                        }
                    })
                    .collect();
                let id = Uuid::new_v4();
                let before = self.router.loads();
                let decision = self.router.submit(id, &resources, id);
                if let Decision::Routed(_, Target::Lane(l)) = decision {
                    if !before.iter().any(|(lane, _)| *lane == l) {
                        assert!(
                            before.iter().all(|(_, load)| *load > 0),
                            "a lane opened although an open one was idle"
                        );
                        assert!(before.len() < MAX as usize);
                        assert_eq!(
                            self.router.take_opened(),
                            vec![l],
                            "the opening is reported"
                        );
                    }
                }
                if resources.is_empty() {
                    assert_eq!(decision, Decision::Routed(id, Target::Default));
                    return;
                }
                self.jobs.insert(
                    id,
                    Job {
                        seq: self.clock,
                        claims: claims_of(&resources),
                        start: None,
                        end: None,
                    },
                );
                if let Decision::Routed(_, t) = decision {
                    self.place(vec![(id, t)]);
                }
            }
            Op::Finish(pick) => {
                let busy: Vec<usize> = (0..self.lanes.len())
                    .filter(|l| !self.lanes[*l].is_empty())
                    .collect();
                if busy.is_empty() {
                    return;
                }
                let lane = busy[pick % busy.len()];
                let id = self.lanes[lane].pop_front().unwrap();
                self.jobs.get_mut(&id).unwrap().end = Some(self.clock);
                let routed = self.router.finish(&id);
                self.place(routed);
            }
            Op::Cancel(pick) => {
                let waiting: Vec<Uuid> = self.router.waiting().collect();
                if waiting.is_empty() {
                    return;
                }
                let id = waiting[pick % waiting.len()];
                self.jobs.get_mut(&id).unwrap().end = Some(self.clock);
                let routed = self.router.finish(&id);
                self.place(routed);
            }
            Op::Advance(ms) => self.ms += u64::from(*ms),
            Op::Sweep => {
                self.sweep();
            }
            Op::Close(l) => {
                let was_open = self.router.is_open(*l);
                let closed = self.router.close(*l);
                if closed {
                    assert!(was_open && *l >= MIN, "closed a lane that cannot close");
                    assert!(
                        self.lanes[*l as usize].is_empty(),
                        "closed a lane with tasks"
                    );
                } else {
                    assert!(
                        !was_open || *l < MIN || !self.lanes[*l as usize].is_empty(),
                        "refused to close an idle surplus lane"
                    );
                }
            }
        }
        self.router.take_opened();
        self.end_tenures();
        for (l, q) in self.lanes.iter().enumerate() {
            if !q.is_empty() {
                self.last_busy[l] = Some(self.ms);
            }
        }
        self.clock += 1;
        for lane in &self.lanes {
            if let Some(head) = lane.front() {
                let job = self.jobs.get_mut(head).unwrap();
                job.start.get_or_insert(self.clock);
            }
        }
        self.check();
    }

    fn unfinished_in_lanes(&self) -> impl Iterator<Item = (usize, &Job)> {
        self.lanes
            .iter()
            .enumerate()
            .flat_map(move |(l, q)| q.iter().map(move |id| (l, &self.jobs[id])))
    }

    fn check(&self) {
        // The pool stays within its bounds, lanes with tasks stay open, and none holds more than
        // its depth.
        let open = self.router.open_lanes();
        assert!(open.len() <= MAX as usize);
        assert!(
            (0..MIN).all(|l| self.router.is_open(l)),
            "a lane below min closed"
        );
        for (l, q) in self.lanes.iter().enumerate() {
            assert!(
                q.is_empty() || self.router.is_open(l as u32),
                "tasks in a closed lane"
            );
            assert_eq!(
                self.router.load[l] as usize,
                q.len(),
                "the router's load matches the lane"
            );
            assert!(
                self.depth.is_none_or(|d| q.len() <= d as usize),
                "a lane holds more than its depth"
            );
        }
        // Running tasks (lane heads) never conflict.
        let heads: Vec<&Job> = self
            .lanes
            .iter()
            .filter_map(|q| q.front())
            .map(|id| &self.jobs[id])
            .collect();
        for (i, a) in heads.iter().enumerate() {
            for b in &heads[i + 1..] {
                assert!(
                    !conflict(&a.claims, &b.claims),
                    "conflicting tasks run at once"
                );
            }
        }
        // An exclusive reservation is held by one lane only.
        for name in NAMES {
            let holders: Vec<(usize, bool)> = self
                .unfinished_in_lanes()
                .flat_map(|(l, j)| {
                    j.claims
                        .iter()
                        .filter(|c| c.name == name)
                        .map(move |c| (l, c.shared))
                })
                .collect();
            if holders.iter().any(|(_, shared)| !shared) {
                assert!(
                    holders.iter().all(|(l, _)| *l == holders[0].0),
                    "exclusive resource in two lanes"
                );
            }
        }
        // A waiting task waits only while it must.
        let mut ahead: Vec<&Claim> = Vec::new();
        for id in self.router.waiting() {
            let job = &self.jobs[&id];
            let behind = job
                .claims
                .iter()
                .any(|c| ahead.iter().any(|a| a.name == c.name));
            let lanes: HashSet<usize> = self
                .unfinished_in_lanes()
                .filter(|(_, j)| conflict(&j.claims, &job.claims))
                .map(|(l, _)| l)
                .collect();
            let full = |l: usize| {
                self.depth
                    .is_some_and(|d| self.lanes[l].len() >= d as usize)
            };
            let sealed = |l: usize| {
                job.claims.iter().any(|c| {
                    self.rebalance.is_some_and(|n| {
                        self.tenure
                            .get(&(c.name.clone(), l))
                            .is_some_and(|t| *t >= n)
                    })
                })
            };
            let no_room = match lanes.iter().next() {
                Some(&l) => lanes.len() == 1 && (full(l) || sealed(l)),
                None => (0..MAX as usize).all(|l| self.router.is_open(l as u32) && full(l)),
            };
            assert!(
                behind || lanes.len() > 1 || no_room,
                "task waits although it could be routed"
            );
            ahead.extend(job.claims.iter());
        }
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            if self.lanes.iter().all(|q| q.is_empty()) {
                break;
            }
            self.apply(&Op::Finish(0));
        }
        assert!(self.router.waiting().next().is_none(), "tasks left waiting");
        assert_eq!(self.router.reserved(), 0, "reservations left behind");
        assert_eq!(self.router.routed(), 0);
        assert!(self.router.loads().iter().all(|(_, l)| *l == 0));
        assert!(self.router.resources.is_empty());
        // Once idle for the cool-down, the pool shrinks back to `min`.
        self.sweep();
        self.ms += COOL_DOWN.as_millis() as u64;
        self.sweep();
        assert_eq!(self.router.open_lanes(), (0..MIN).collect::<Vec<_>>());
    }

    fn check_order(&self) {
        let jobs: Vec<&Job> = self.jobs.values().filter(|j| j.start.is_some()).collect();
        for a in &jobs {
            for b in &jobs {
                if a.seq < b.seq && conflict(&a.claims, &b.claims) {
                    assert!(
                        a.end.is_some_and(|end| end <= b.start.unwrap()),
                        "a later task on a resource started before an earlier one ended"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn routing_keeps_order_and_exclusion_and_releases_everything(
        depth in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        rebalance in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut m = Model::new(depth, rebalance);
        for op in &ops {
            m.apply(op);
        }
        m.drain();
        m.check_order();
    }
}
