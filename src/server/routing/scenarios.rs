//! Scenarios whose answer is known: shared and exclusive holders, multi-resource waits, restore
//! after a restart, and the pool growing and shrinking.

use super::*;
use std::time::Duration;

#[test]
fn readers_share_and_writers_wait_in_order() {
    let mut r: Router<Uuid> = Router::new(2, 2);
    let (r1, r2, w, r3) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let shared = vec!["shared:x".to_owned()];
    let excl = vec!["x".to_owned()];
    assert_eq!(
        r.submit(r1, &shared, r1),
        Decision::Routed(r1, Target::Lane(0))
    );
    assert_eq!(
        r.submit(r2, &shared, r2),
        Decision::Routed(r2, Target::Lane(1))
    );
    assert_eq!(r.submit(w, &excl, w), Decision::Waiting);
    assert_eq!(
        r.submit(r3, &shared, r3),
        Decision::Waiting,
        "a reader does not overtake a waiting writer"
    );
    assert_eq!(
        r.finish(&r1),
        vec![(w, Target::Lane(1))],
        "the writer joins the last reader's lane; the reader after it waits for it"
    );
    assert_eq!(r.finish(&r2), vec![]);
    assert_eq!(r.finish(&w), vec![(r3, Target::Lane(0))]);
    r.finish(&r3);
    assert_eq!(r.reserved(), 0);
}

#[test]
fn readers_behind_a_writer_wait_for_it_and_go_together_to_different_lanes() {
    let mut r: Router<Uuid> = Router::new(4, 4);
    let w = Uuid::new_v4();
    let readers: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let after = Uuid::new_v4();
    assert_eq!(
        r.submit(w, &["x".to_owned()], w),
        Decision::Routed(w, Target::Lane(0))
    );
    for reader in &readers {
        assert_eq!(
            r.submit(*reader, &["shared:x".to_owned()], *reader),
            Decision::Waiting,
            "a reader does not queue behind the writer in its lane"
        );
    }
    assert_eq!(r.submit(after, &["x".to_owned()], after), Decision::Waiting);
    let released = r.finish(&w);
    let lanes: std::collections::HashSet<Target> = released.iter().map(|(_, t)| *t).collect();
    assert_eq!(released.len(), 4, "every reader goes when the writer ends");
    assert_eq!(lanes.len(), 4, "each to a lane of its own: {released:?}");
    let lane_of_last = released
        .iter()
        .find(|(id, _)| *id == readers[3])
        .map(|(_, t)| *t)
        .unwrap();
    for reader in &readers[..2] {
        assert_eq!(r.finish(reader), vec![]);
    }
    assert_eq!(
        r.finish(&readers[2]),
        vec![(after, lane_of_last)],
        "the writer after them joins the lane of the one reader left"
    );
    assert_eq!(r.finish(&readers[3]), vec![]);
    r.finish(&after);
    assert_eq!(r.reserved(), 0);
}

#[test]
fn a_task_on_two_lanes_waits_and_blocks_later_ones() {
    let mut r: Router<Uuid> = Router::new(2, 2);
    let (a, b, ab, a2) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        r.submit(a, &s(&["a"]), a),
        Decision::Routed(a, Target::Lane(0))
    );
    assert_eq!(
        r.submit(b, &s(&["b"]), b),
        Decision::Routed(b, Target::Lane(1))
    );
    assert_eq!(r.submit(ab, &s(&["a", "b"]), ab), Decision::Waiting);
    assert_eq!(r.submit(a2, &s(&["a"]), a2), Decision::Waiting);
    assert_eq!(
        r.finish(&a),
        vec![(ab, Target::Lane(1)), (a2, Target::Lane(1))]
    );
}

#[test]
fn restore_reserves_in_the_given_lane() {
    let mut r: Router<Uuid> = Router::new(4, 4);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    r.restore(a, &["x".to_owned()], 3, true);
    assert_eq!(
        r.submit(b, &["x".to_owned()], b),
        Decision::Routed(b, Target::Lane(3))
    );
}

#[test]
fn the_pool_grows_when_all_lanes_are_busy_and_shrinks_after_a_cool_down() {
    let mut r: Router<Uuid> = Router::new(1, 3);
    let s = |x: &str| vec![x.to_owned()];
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    assert_eq!(
        r.submit(ids[0], &s("a"), ids[0]),
        Decision::Routed(ids[0], Target::Lane(0))
    );
    assert!(r.take_opened().is_empty());
    assert_eq!(
        r.submit(ids[1], &s("b"), ids[1]),
        Decision::Routed(ids[1], Target::Lane(1))
    );
    assert_eq!(
        r.submit(ids[2], &s("c"), ids[2]),
        Decision::Routed(ids[2], Target::Lane(2))
    );
    assert_eq!(r.take_opened(), vec![1, 2]);
    // At `max`, the least-loaded open lane.
    assert_eq!(
        r.submit(ids[3], &s("d"), ids[3]),
        Decision::Routed(ids[3], Target::Lane(0))
    );
    r.finish(&ids[1]);
    let t0 = Instant::now();
    let cd = Duration::from_secs(30);
    assert!(r.closable(t0, cd).is_empty(), "idle only from now");
    assert_eq!(r.closable(t0 + cd, cd), vec![1]);
    assert!(!r.close(0), "lanes below min stay");
    assert!(!r.close(2), "a lane with a task stays");
    assert!(r.close(1));
    assert_eq!(r.open_lanes(), vec![0, 2]);
    // All open lanes busy again: lane 1 reopens.
    assert_eq!(
        r.submit(ids[4], &s("e"), ids[4]),
        Decision::Routed(ids[4], Target::Lane(1))
    );
    assert_eq!(r.take_opened(), vec![1]);
}

#[test]
fn the_pool_follows_its_size_and_a_smaller_one_lets_higher_lanes_drain() {
    let s = |x: &str| vec![x.to_owned()];
    let ids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let mut r: Router<Uuid> = Router::new(1, 8);
    r.set_size(2);
    assert_eq!(r.size(), 2);
    for (i, x) in ["a", "b"].into_iter().enumerate() {
        r.submit(ids[i], &s(x), ids[i]);
    }
    // Both lanes of the size busy: the least-loaded of them, not a third.
    assert_eq!(
        r.submit(ids[2], &s("c"), ids[2]),
        Decision::Routed(ids[2], Target::Lane(0))
    );
    assert_eq!(r.take_opened(), vec![1]);
    // The fleet grew: a new lane opens for the next free task.
    r.set_size(20);
    assert_eq!(r.size(), 8, "within max");
    assert_eq!(
        r.submit(ids[3], &s("d"), ids[3]),
        Decision::Routed(ids[3], Target::Lane(2))
    );
    // It shrank: lane 2 takes no new free task, but `d`'s next task follows `d` there.
    r.set_size(0);
    assert_eq!(r.size(), 1, "at least min and 1");
    assert_eq!(
        r.submit(ids[4], &s("e"), ids[4]),
        Decision::Routed(ids[4], Target::Lane(0))
    );
    assert_eq!(
        r.submit(ids[5], &s("d"), ids[5]),
        Decision::Routed(ids[5], Target::Lane(2))
    );
    r.finish(&ids[3]);
    r.finish(&ids[5]);
    r.finish(&ids[1]);
    let (t0, cd) = (Instant::now(), Duration::from_secs(30));
    assert!(r.closable(t0, cd).is_empty());
    assert_eq!(
        r.closable(t0 + cd, cd),
        vec![1, 2],
        "idle lanes above the size close"
    );
}

#[test]
fn restore_opens_the_lane_of_a_recovered_task() {
    let mut r: Router<Uuid> = Router::new(2, 8);
    r.restore(Uuid::new_v4(), &["x".to_owned()], 5, true);
    assert_eq!(r.open_lanes(), vec![0, 1, 5]);
    assert_eq!(r.take_opened(), vec![5]);
    assert!(!r.close(5));
}

#[test]
fn a_full_lane_holds_its_next_task_back_until_it_has_room() {
    let mut r: Router<u32> = Router::new(2, 2).with_depth(Some(2));
    let s = |x: &str| vec![x.to_owned()];
    let id = |n: u128| Uuid::from_u128(n);
    assert_eq!(
        r.submit(id(1), &s("a"), 1),
        Decision::Routed(1, Target::Lane(0))
    );
    assert_eq!(
        r.submit(id(2), &s("a"), 2),
        Decision::Routed(2, Target::Lane(0))
    );
    assert_eq!(
        r.submit(id(3), &s("a"), 3),
        Decision::Waiting,
        "lane 0 is full"
    );
    assert_eq!(
        r.submit(id(4), &s("b"), 4),
        Decision::Routed(4, Target::Lane(1))
    );
    assert_eq!(
        r.submit(id(5), &s("c"), 5),
        Decision::Routed(5, Target::Lane(1))
    );
    assert_eq!(
        r.submit(id(6), &s("d"), 6),
        Decision::Waiting,
        "every lane is full"
    );
    // Room in lane 0: the task stalled on it goes first (earlier in line), then the one that
    // can go anywhere waits for the next room.
    assert_eq!(r.finish(&id(1)), vec![(3, Target::Lane(0))]);
    assert_eq!(r.finish(&id(4)), vec![(6, Target::Lane(1))]);
    assert_eq!(r.waiting_len(), 0);
}

#[test]
fn a_resource_moves_off_a_long_lane_after_its_run_of_tasks() {
    let mut r: Router<u32> = Router::new(2, 2).with_rebalance_after(Some(3));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let id = |n: u128| Uuid::from_u128(n);
    let lane = |n| Decision::Routed(n, Target::Lane(n_lane(n)));
    fn n_lane(n: u32) -> u32 {
        u32::from(n != 1)
    }
    assert_eq!(r.submit(id(1), &s(&["a"]), 1), lane(1));
    assert_eq!(r.submit(id(2), &s(&["b"]), 2), lane(2));
    assert_eq!(r.submit(id(3), &s(&["a", "b"]), 3), Decision::Waiting);
    // `a` is free: the task joins `b` in lane 1, pulling `a` in.
    assert_eq!(r.finish(&id(1)), vec![(3, Target::Lane(1))]);
    assert_eq!(r.submit(id(4), &s(&["a"]), 4), lane(4));
    assert_eq!(r.submit(id(5), &s(&["a"]), 5), lane(5));
    // Three tasks of `a` went to lane 1 in a row: the next waits for them…
    assert_eq!(r.submit(id(6), &s(&["a"]), 6), Decision::Waiting);
    assert_eq!(r.submit(id(7), &s(&["b"]), 7), lane(7));
    for done in [2, 3, 4] {
        assert!(r.finish(&id(done)).is_empty());
    }
    // …and then goes to the least-loaded lane: lane 0, while lane 1 still runs `b`.
    assert_eq!(r.finish(&id(5)), vec![(6, Target::Lane(0))]);
    assert_eq!(r.waiting_len(), 0);
}

fn limited(r: &mut Router<u32>, slots: u32, rate: Option<Rate>) {
    let limits = HashMap::from([("api".to_owned(), Limit { slots, rate })]);
    assert!(r.set_limits(limits).is_empty());
}

#[test]
fn slot_holders_run_side_by_side_up_to_the_capacity_admitted_one_start_at_a_time() {
    let mut r: Router<u32> = Router::new(4, 4);
    limited(&mut r, 2, None);
    let slot = vec!["slot:api".to_owned()];
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    assert_eq!(
        r.submit(ids[0], &slot, 0),
        Decision::Routed(0, Target::Lane(0))
    );
    assert_eq!(
        r.submit(ids[1], &slot, 1),
        Decision::Waiting,
        "the first has not started"
    );
    assert_eq!(r.submit(ids[2], &slot, 2), Decision::Waiting);
    assert_eq!(
        r.blockers(&ids[1]),
        Some(Blocked::Waiting {
            position: 0,
            by: vec![],
            held: Some(("api".into(), Held::Starting(ids[0]))),
        })
    );
    assert_eq!(r.started(&[ids[0]], 1), vec![(1, Target::Lane(1))]);
    assert_eq!(r.started(&[ids[1]], 2), vec![], "both slots are held");
    let Some(Blocked::Waiting { held, .. }) = r.blockers(&ids[2]) else {
        panic!()
    };
    let mut by = vec![ids[0], ids[1]];
    by.sort();
    assert_eq!(held, Some(("api".into(), Held::Slots { slots: 2, by })));
    assert_eq!(r.finish(&ids[0]), vec![(2, Target::Lane(0))]);
    // A writer of `api` waits for every slot holder to end, and holds later ones back.
    assert_eq!(r.submit(ids[3], &["api".to_owned()], 3), Decision::Waiting);
    r.started(&[ids[2]], 3);
    assert_eq!(r.finish(&ids[1]), vec![]);
    assert_eq!(r.finish(&ids[2]), vec![(3, Target::Lane(0))]);
    // More slots while tasks wait: the waiters go, still one start at a time.
    r.finish(&ids[3]);
    limited(&mut r, 1, None);
    let more: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    assert!(matches!(
        r.submit(more[0], &slot, 10),
        Decision::Routed(10, _)
    ));
    r.started(&[more[0]], 4);
    assert_eq!(r.submit(more[1], &slot, 11), Decision::Waiting);
    assert_eq!(r.submit(more[2], &slot, 12), Decision::Waiting);
    let woken = r.set_limits(HashMap::from([(
        "api".to_owned(),
        Limit {
            slots: 3,
            rate: None,
        },
    )]));
    assert_eq!(woken.len(), 1, "{woken:?}");
    assert_eq!(woken[0].0, 11);
}

#[test]
fn a_rate_spaces_starts_by_its_window() {
    let mut r: Router<u32> = Router::new(4, 4);
    let rate = Rate {
        starts: 2,
        per_ms: 1000,
    };
    limited(&mut r, 4, Some(rate));
    r.tick(10_000);
    let slot = vec!["slot:api".to_owned()];
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    assert!(matches!(r.submit(ids[0], &slot, 0), Decision::Routed(..)));
    assert_eq!(r.submit(ids[1], &slot, 1), Decision::Waiting);
    assert_eq!(r.submit(ids[2], &slot, 2), Decision::Waiting);
    assert_eq!(r.started(&[ids[0]], 10_100).len(), 1);
    assert_eq!(
        r.started(&[ids[1]], 10_200),
        vec![],
        "two starts in the window"
    );
    assert_eq!(
        r.blockers(&ids[2]).map(|b| match b {
            Blocked::Waiting { held, .. } => held,
            other => panic!("{other:?}"),
        }),
        Some(Some(("api".into(), Held::Rate { until_ms: 11_100 })))
    );
    assert_eq!(r.tick(11_099), vec![]);
    assert_eq!(r.tick(11_100).len(), 1);
}
