//! The lane pool: lanes open on demand up to `max_queues` and surplus lanes idle for the
//! cool-down are deleted from the broker, back down to `min_queues`; new work goes only to as
//! many lanes as the live workers have slots.

use crate::helpers::{assert_completed_in_order, eventually, mgmt, sleep_workload, Opts, TestApp};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

/// The lane numbers `GET /queues` shows (the default queue left out).
async fn open_lanes(app: &TestApp) -> BTreeSet<u32> {
    let q = app.get_json("/queues").await.unwrap();
    let prefix = format!("{}.q.", app.prefix);
    q["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["queue"].as_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// The lanes that hold queued or running jobs, as a restarted server finds them.
async fn holding_lanes(app: &TestApp) -> BTreeSet<u32> {
    let prefix = format!("{}.q.", app.prefix);
    app.rows()
        .await
        .iter()
        .filter(|r| matches!(r.state.as_str(), "queued" | "running"))
        .filter_map(|r| r.queue.as_deref()?.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// The lane numbers below `max` that exist on the broker.
async fn broker_lanes(app: &TestApp, max: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for n in 0..max {
        let path = format!("/queues/%2f/{}.q.{n}", app.prefix);
        let resp = mgmt(&app.http, reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => {
                out.insert(n);
            }
            404 => {}
            s => panic!("management API {path}: {s}"),
        }
    }
    out
}

async fn worker_ids(app: &TestApp) -> BTreeSet<String> {
    let Value::Array(ws) = app.get_json("/workers").await.unwrap() else {
        panic!("GET /workers is a list");
    };
    ws.iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until the pool is back to `0..min` on the server and on the broker.
async fn wait_shrunk(app: &TestApp, min: u32, max: u32) {
    let want: BTreeSet<u32> = (0..min).collect();
    eventually(
        Duration::from_secs(30),
        "the pool to shrink back to min on the server and on the broker",
        || async {
            let (open, on_broker) = (open_lanes(app).await, broker_lanes(app, max).await);
            (open == want && on_broker == want).then_some(())
        },
    )
    .await;
}

/// Runs a burst and returns the most lanes seen open (server and broker) while it ran.
async fn burst(app: &TestApp, n: usize, resources: usize, total: usize, max: u32) -> usize {
    app.publish_many(&sleep_workload(n, resources, 150)).await;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let open = open_lanes(app).await;
        if open.len() > most {
            assert!(open.len() <= max as usize, "more than max lanes: {open:?}");
            let on_broker = broker_lanes(app, max).await;
            assert!(
                open.is_subset(&on_broker),
                "open lanes {open:?} are declared (broker has {on_broker:?})"
            );
            most = open.len();
        }
        if most == max as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = app.wait_final(total, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    most
}

#[tokio::test(flavor = "multi_thread")]
async fn lanes_open_under_load_and_idle_surplus_lanes_are_deleted() {
    let (min, max) = (2, 6);
    let app = TestApp::with(Opts {
        workers: 2,
        max_queues: max,
        env: vec![
            ("LANES_MIN_QUEUES".into(), min.to_string()),
            ("LANES_QUEUE_COOL_DOWN_MS".into(), "1500".into()),
        ],
        ..Opts::default()
    })
    .await;
    let want: BTreeSet<u32> = (0..min).collect();
    assert_eq!(open_lanes(&app).await, want, "the pool starts at min");
    assert_eq!(
        broker_lanes(&app, max).await,
        want,
        "only min lanes declared"
    );
    let workers = worker_ids(&app).await;

    // A burst over many resources fills every lane the pool may open.
    let most = burst(&app, 60, 12, 60, max).await;
    assert_eq!(most, max as usize, "the pool grew to max under load");

    // Idle for the cool-down: the surplus lanes are deleted, workers let go of them.
    wait_shrunk(&app, min, max).await;
    app.wait_workers(2).await;
    assert_eq!(
        worker_ids(&app).await,
        workers,
        "workers kept their sessions when their lanes were deleted"
    );

    // The pool grows again for the next burst, and shrinks again after it.
    let most = burst(&app, 40, 10, 100, max).await;
    assert!(most > min as usize, "lanes reopened (saw {most})");
    wait_shrunk(&app, min, max).await;
    app.wait_workers(2).await;
    assert_eq!(worker_ids(&app).await, workers);
    for n in 0..2 {
        let log = std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("logs")
                .join(format!("{}-worker{n}.log", app.name)),
        )
        .unwrap();
        assert!(
            !log.contains("reconnecting"),
            "worker {n} did not lose its connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_reopens_the_lanes_that_hold_jobs() {
    let (min, max) = (2, 6);
    let mut app = TestApp::with(Opts {
        workers: 2,
        max_queues: max,
        env: vec![("LANES_MIN_QUEUES".into(), min.to_string())],
        ..Opts::default()
    })
    .await;
    // About 3 s of work on each of 6 lanes.
    app.publish_many(&sleep_workload(60, 12, 300)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    eventually(Duration::from_secs(10), "the pool to grow", || async {
        (open_lanes(&app).await.len() >= max as usize).then_some(())
    })
    .await;
    // Rows turn `queued` a few ms after their lane messages are confirmed.
    let left = deadline.saturating_duration_since(Instant::now());
    eventually(left, "lanes above min to hold jobs", || async {
        (holding_lanes(&app).await.len() > min as usize).then_some(())
    })
    .await;
    app.kill_server();
    // The lanes that hold unfinished jobs, as the new server will find them.
    let holding = holding_lanes(&app).await;
    assert!(
        holding.len() > min as usize,
        "lanes above min hold jobs: {holding:?}"
    );
    app.start_server();
    app.wait_healthy().await;
    let open = open_lanes(&app).await;
    assert!(
        holding.is_subset(&open) && (0..min).all(|n| open.contains(&n)),
        "after the restart {open:?} are open; jobs are in {holding:?}"
    );
    let rows = app.wait_final(60, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
}

/// What the pool relies on from the broker and lapin: consuming or passively declaring a
/// queue that is gone is a channel error (soft) that leaves the connection working, and
/// deleting a queue ends its consumers' streams (`None`, not an error).
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_lane_ends_its_consumer_and_a_missing_one_is_a_channel_error() {
    use futures::StreamExt;
    use lapin::{
        options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions},
        types::FieldTable,
    };
    let (conn, name) = probe("gone").await;
    let ch = conn.create_channel().await.unwrap();
    let missing = ch
        .basic_consume(
            name.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(missing.is_amqp_soft_error(), "{missing}");
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let missing = ch
        .queue_declare(name.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert!(missing.is_amqp_soft_error(), "{missing}");

    let ch = conn.create_channel().await.unwrap();
    declare_quorum(&ch, &name, false).await;
    let mut consumer = ch
        .basic_consume(
            name.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = conn.create_channel().await.unwrap();
    other
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the consumer ends when its queue is deleted");
    assert!(next.is_none(), "a cancelled consumer ends: {next:?}");
    assert!(conn.status().connected(), "the connection is unharmed");
    conn.close(200, "bye".into()).await.unwrap();
}

/// What prefetch > 1 on the lanes relies on: when a consumer's channel closes (or its worker
/// dies) holding unacked messages of a quorum queue with single active consumer, the next
/// consumer receives them again first, in their original order, before anything newer.
#[tokio::test(flavor = "multi_thread")]
async fn messages_a_closed_consumer_held_come_back_in_order() {
    use lapin::{
        options::{
            BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
            QueueDeleteOptions,
        },
        types::FieldTable,
        BasicProperties,
    };
    let (conn, name) = probe("order").await;
    let ch = conn.create_channel().await.unwrap();
    declare_quorum(&ch, &name, true).await;
    let n = 100u32;
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            name.as_str().into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    let consume = |tag: &'static str, prefetch: u16| {
        let (conn, name) = (&conn, name.clone());
        async move {
            let ch = conn.create_channel().await.unwrap();
            ch.basic_qos(prefetch, BasicQosOptions::default())
                .await
                .unwrap();
            let c = ch
                .basic_consume(
                    name.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            (ch, c)
        }
    };
    // A takes 32, acks the first 5 out of order (4, 2, 0, 1, 3), then its channel closes.
    let (a_ch, mut a) = consume("a", 32).await;
    let (_b_ch, mut b) = consume("b", 32).await;
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(next_u32(&mut a).await);
    }
    assert_eq!(
        held.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..32).collect::<Vec<_>>()
    );
    for k in [4, 2, 0, 1, 3] {
        held[k]
            .1
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    a_ch.close(200, "gone".into()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 5..n {
        let (i, d) = next_u32(&mut b).await;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        seen.push(i);
    }
    assert_eq!(seen, (5..n).collect::<Vec<_>>(), "B gets the rest in order");
    let _ = ch
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
}

/// The next delivery of `c` (bounded wait) and the u32 it carries.
/// A connection of its own and a queue name no other test uses, for tests of the broker
/// itself.
async fn probe(what: &str) -> (lapin::Connection, String) {
    let conn = lapin::Connection::connect(
        crate::helpers::AMQP_URL,
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    (conn, format!("t{}.q.{what}", &id[..10]))
}

async fn next_u32(c: &mut lapin::Consumer) -> (u32, lapin::message::Delivery) {
    use futures::StreamExt;
    let d = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a delivery")
        .unwrap()
        .unwrap();
    (u32::from_be_bytes(d.data[..4].try_into().unwrap()), d)
}

/// Declares a durable quorum queue, with single active consumer if `sac`.
async fn declare_quorum(ch: &lapin::Channel, name: &str, sac: bool) {
    use lapin::{
        options::QueueDeclareOptions,
        types::{AMQPValue, FieldTable},
    };
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if sac {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), durable, args).await.unwrap();
}

/// Waits until the server's lane pool has `size` lanes to give (`lanes_pool_size`).
async fn wait_pool_size(app: &TestApp, size: f64) {
    let what = format!("the pool to follow the fleet to {size} lanes");
    eventually(Duration::from_secs(20), &what, || async {
        (app.metric("lanes_pool_size").await == size).then_some(())
    })
    .await;
}

/// Runs a burst of `n` tasks of 300 ms over `n` resources and returns the lanes its jobs went
/// to, and the most of them that ran at once (from their recorded runs).
async fn burst_lanes(app: &TestApp, n: usize, total: usize) -> (BTreeSet<u32>, usize) {
    let work = sleep_workload(n, n, 300);
    let ids: BTreeSet<String> = work.iter().filter_map(|(_, id)| id.clone()).collect();
    app.publish_many(&work).await;
    let rows = app.wait_final(total, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    let prefix = format!("{}.q.", app.prefix);
    let ours: Vec<_> = rows
        .iter()
        .filter(|r| ids.contains(&r.id.to_string()))
        .collect();
    let lanes = ours
        .iter()
        .filter_map(|r| r.queue.as_deref()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    let mut edges: Vec<(DateTime<Utc>, i32)> = ours
        .iter()
        .flat_map(|r| [(r.started_at.unwrap(), 1), (r.finished_at.unwrap(), -1)])
        .collect();
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    (lanes, most as usize)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pool_follows_the_workers_slots() {
    let mut app = TestApp::with(Opts {
        workers: 1,
        concurrency: 3,
        max_queues: 12,
        env: vec![("LANES_MIN_QUEUES".into(), "1".into())],
        ..Opts::default()
    })
    .await;
    // One worker of 3 slots: a burst over 12 resources goes to 3 lanes.
    wait_pool_size(&app, 3.0).await;
    let (lanes, _) = burst_lanes(&app, 12, 12).await;
    assert!(
        lanes.iter().all(|l| *l < 3),
        "lanes beyond 3 slots: {lanes:?}"
    );

    // Three workers of 3: nine lanes, and more tasks at once.
    app.start_worker();
    app.start_worker();
    app.wait_workers(3).await;
    wait_pool_size(&app, 9.0).await;
    let (lanes, most) = burst_lanes(&app, 27, 39).await;
    assert!(
        lanes.len() > 3 && lanes.iter().all(|l| *l < 9),
        "the pool grew to the fleet's 9 slots: {lanes:?}"
    );
    assert!(
        most > 3,
        "more than one worker's slots ran at once ({most})"
    );

    // Two of them die: back to 3 lanes for new work, though the others are still open.
    app.kill_worker(1);
    app.kill_worker(2);
    app.wait_workers(1).await;
    wait_pool_size(&app, 3.0).await;
    let (lanes, _) = burst_lanes(&app, 12, 51).await;
    assert!(
        lanes.iter().all(|l| *l < 3),
        "lanes beyond 3 slots: {lanes:?}"
    );
}
