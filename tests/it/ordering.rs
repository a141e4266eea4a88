//! Per-resource order and exclusion, waiting on several lanes, shared resources.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{assert_completed_in_order, submit, Opts, Row, TestApp},
};
use serde_json::json;
use std::time::Duration;

fn overlaps(a: &Row, b: &Row) -> bool {
    a.started_at.unwrap() < b.finished_at.unwrap() && b.started_at.unwrap() < a.finished_at.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_on_a_resource_run_one_at_a_time_in_publish_order() {
    let app = TestApp::with(Opts {
        workers: 3,
        max_queues: 8,
        ..Opts::default()
    })
    .await;
    let (tasks, resources) = (300, 30);
    let messages: Vec<_> = (0..tasks)
        .map(|i| {
            let r = format!("res:{}", (i * 7) % resources);
            (
                submit("sleep", json!({"ms": 5 + (i % 4) * 5}), &[r.as_str()]),
                None,
            )
        })
        .collect();
    app.publish_many(&messages).await;
    let rows = app.wait_final(tasks, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    let distinct: std::collections::HashSet<_> = rows.iter().map(|r| &r.resources).collect();
    assert_eq!(distinct.len(), resources);
    let parallel = rows
        .windows(2)
        .filter(|w| w[0].resources != w[1].resources && overlaps(&w[0], &w[1]))
        .count();
    assert!(parallel > 0, "tasks on different resources ran in parallel");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_on_two_busy_lanes_waits_and_nothing_overtakes_it() {
    let app = TestApp::spawn().await;
    let sleep = |ms: u64, res: &[&str]| submit("sleep", json!({ "ms": ms }), res);
    app.publish(&sleep(600, &["a"]), Some("a")).await;
    app.publish(&sleep(600, &["b"]), Some("b")).await;
    app.publish(&sleep(50, &["a", "b"]), Some("ab")).await;
    app.publish(&sleep(50, &["a"]), Some("a2")).await;
    app.publish(&sleep(50, &["c"]), Some("c")).await;
    let id = lanes::protocol::job_id_from_message_id;
    // While `a` and `b` run, `ab` waits in the Dispatcher and `a2` waits behind it.
    let mut saw_waiting = false;
    for _ in 0..40 {
        let rows = app.rows().await;
        let st = |mid| {
            rows.iter()
                .find(|r| r.id == id(mid))
                .map(|r| r.state.clone())
        };
        if st("ab").as_deref() == Some("waiting") && st("a2").as_deref() == Some("waiting") {
            saw_waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_waiting,
        "the multi-lane task and the one behind it are `waiting`"
    );
    let rows = app.wait_final(5, Duration::from_secs(60)).await;
    let get = |mid| rows.iter().find(|r| r.id == id(mid)).unwrap();
    let (a, b, ab, a2, c) = (get("a"), get("b"), get("ab"), get("a2"), get("c"));
    assert!(rows.iter().all(|r| r.state == "completed"));
    assert!(ab.started_at >= a.finished_at && ab.started_at >= b.finished_at);
    assert!(a2.started_at >= ab.finished_at, "no overtaking");
    assert!(
        c.finished_at < a.finished_at,
        "an unrelated task did not wait"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_share_a_resource_and_writers_run_alone_in_order() {
    let app = TestApp::spawn().await;
    let sleep = |ms: u64, res: &[&str]| submit("sleep", json!({ "ms": ms }), res);
    app.publish(&sleep(500, &["shared:doc"]), Some("r1")).await;
    app.publish(&sleep(500, &["shared:doc"]), Some("r2")).await;
    app.publish(&sleep(100, &["doc"]), Some("w")).await;
    app.publish(&sleep(100, &["shared:doc"]), Some("r3")).await;
    let rows = app.wait_final(4, Duration::from_secs(60)).await;
    let id = lanes::protocol::job_id_from_message_id;
    let get = |mid| rows.iter().find(|r| r.id == id(mid)).unwrap();
    let (r1, r2, w, r3) = (get("r1"), get("r2"), get("w"), get("r3"));
    assert!(overlaps(r1, r2), "readers ran together");
    assert!(
        w.started_at >= r1.finished_at && w.started_at >= r2.finished_at,
        "the writer waited for the readers"
    );
    assert!(
        r3.started_at >= w.finished_at,
        "a later reader waited for the writer"
    );
}

/// A finish that wakes more tasks than go out in one chunk (256) sends the chunks in order:
/// a task on two busy lanes holds 600 behind it, and they all go at once when it can.
#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_tasks_woken_at_once_keep_their_order() {
    let mut log = ExecLog::new("wake-chunks");
    let app = TestApp::with(Opts {
        workers: 2,
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    let (a, b) = ("a".to_owned(), "b".to_owned());
    let mut work = vec![
        log.task(std::slice::from_ref(&a), 3000),
        log.task(std::slice::from_ref(&b), 3000),
    ];
    work.push(log.task(&[a.clone(), b.clone()], 0));
    for i in 0..600 {
        work.push(log.task(&[if i % 2 == 0 { a.clone() } else { b.clone() }], 0));
    }
    app.publish_many(&work).await;
    let rows = app.wait_final(work.len(), Duration::from_secs(180)).await;
    log.assert_kept(&rows);
}
