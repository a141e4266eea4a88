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
        vec![(w, Target::Lane(1)), (r3, Target::Lane(1))]
    );
    r.finish(&r2);
    r.finish(&w);
    r.finish(&r3);
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
    r.restore(a, &["x".to_owned()], 3);
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
fn restore_opens_the_lane_of_a_recovered_task() {
    let mut r: Router<Uuid> = Router::new(2, 8);
    r.restore(Uuid::new_v4(), &["x".to_owned()], 5);
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
