//! The active server: killed and restarted, killed beside a standby, and cut off from
//! PostgreSQL (its packets silently dropped, its connections left open): its lease runs out,
//! the standby takes over within seconds, and the cut-off server does not act when the path
//! heals. Proven from the tasks' execution log.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{assert_completed_in_order, health_of, is_active, Opts, TestApp, PG_URL},
    proxy::Proxy,
};
use serde_json::json;
use std::time::{Duration, Instant};

async fn wait_active(url: &str, active: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while is_active(url).await != Some(active) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_cut_off_from_the_database_is_replaced_by_its_standby() {
    let mut log = ExecLog::new("db-cut");
    let mut app = TestApp::with(Opts {
        workers: 2,
        env: worker_env(),
        ..Opts::default()
    })
    .await;
    // The active server reaches PostgreSQL through a proxy the test can freeze; the standby
    // reaches it directly.
    let pg = Proxy::start("127.0.0.1:5432").await;
    let proxied = PG_URL.replace("5432", &pg.port.to_string());
    app.kill_server();
    app.opts
        .env
        .push(("DATABASE_URL".into(), format!("{proxied}/{}", app.db_name)));
    app.start_server();
    wait_active(&app.base, true, "the proxied server did not become active").await;
    app.opts.env.pop();
    let (standby, standby_url) = app.start_standby();
    app.extra.push(standby);
    wait_active(&standby_url, false, "the standby did not come up").await;
    app.wait_workers(2).await;

    let work = log.workload(120, 12, 30);
    app.publish_many(&work[..60]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.report(&[]).started < 12 {
        assert!(Instant::now() < deadline, "the first tasks did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.freeze(true);
    let cut = Instant::now();
    app.publish_many(&work[60..]).await;
    wait_active(&standby_url, true, "the standby never took over").await;
    let takeover = cut.elapsed();
    let probe = work[119].1.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.started(&probe) {
        assert!(Instant::now() < deadline, "no task ran after the takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "takeover after the active server was cut off from PostgreSQL: {} ms (work again after {} ms)",
        takeover.as_millis(),
        cut.elapsed().as_millis()
    );
    // The path heals: the old server finds its lease gone and stands by.
    pg.freeze(false);
    let rows = app.wait_final(120, Duration::from_secs(120)).await;
    let bad: Vec<_> = rows.iter().filter(|r| r.state != "completed").collect();
    assert!(bad.is_empty(), "jobs not completed: {bad:?}");
    log.assert_kept(&rows);
    wait_active(&app.base, false, "the cut-off server acts as active again").await;
    assert_eq!(is_active(&standby_url).await, Some(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_restarts_and_finishes_everything() {
    let mut log = ExecLog::new("a_killed_server_restarts");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    let work = log.workload(300, 30, 10);
    app.publish_many(&work[..150]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.kill_server();
    app.publish_many(&work[150..]).await;
    app.start_server();
    app.wait_healthy().await;
    let rows = app.wait_final(300, Duration::from_secs(120)).await;
    assert_eq!(rows.len(), 300);
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_server_takes_over_when_the_active_one_dies() {
    let mut log = ExecLog::new("a_standby_server_takes_o");
    let mut app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        ..Opts::default()
    })
    .await;
    let (standby, standby_url) = app.start_standby();
    app.extra.push(standby);
    let deadline = Instant::now() + Duration::from_secs(30);
    while health_of(&standby_url).await.is_none() {
        assert!(Instant::now() < deadline, "standby did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        health_of(&standby_url).await.unwrap()["active"],
        json!(false)
    );
    // Healthy once it knows it stands by (the active server takes the submits); before that
    // it says `starting`, with a 503.
    while health_of(&standby_url).await.unwrap()["status"] == json!("starting") {
        assert!(Instant::now() < deadline, "standby still starting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        health_of(&standby_url).await.unwrap()["status"],
        json!("ok")
    );
    let work = log.workload(200, 20, 10);
    app.publish_many(&work[..100]).await;
    app.kill_server();
    app.publish_many(&work[100..]).await;
    let rows = app.wait_final(200, Duration::from_secs(120)).await;
    assert_completed_in_order(&rows);
    log.assert_kept(&rows);
    assert_eq!(
        health_of(&standby_url).await.unwrap()["active"],
        json!(true)
    );
}

/// A fresh deployment's first start: three servers and six workers at the same moment, on a
/// database and a broker prefix that do not exist yet. Every one comes up (creating the
/// database, migrating and declaring the topology race), nobody logs an error (lapin's own
/// logs on, as in production), and a submit runs.
#[tokio::test(flavor = "multi_thread")]
async fn servers_and_workers_started_at_once_on_a_fresh_deployment_all_come_up_quietly() {
    let mut app = TestApp::with(Opts {
        servers: 3,
        workers: 6,
        env: vec![("RUST_LOG".into(), "info,lapin=warn".into())],
        ..Opts::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for url in app.standbys.clone() {
        while health_of(&url).await.map(|h| h["status"].clone()) != Some(json!("ok")) {
            assert!(Instant::now() < deadline, "{url} is not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(is_active(&url).await, Some(false), "one active server");
    }
    for child in app.extra.iter_mut().chain(app.workers.iter_mut()) {
        assert!(child.try_wait().unwrap().is_none(), "a process exited");
    }
    app.publish(
        &crate::helpers::submit("echo", json!(1), &["r"]),
        Some("first"),
    )
    .await;
    app.wait_completed(1, Duration::from_secs(30)).await;
    let mut logs = vec!["server".to_owned(), "standby".to_owned()];
    logs.extend((0..6).map(|i| format!("worker{i}")));
    for process in logs {
        let text = app.process_log(&process);
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
        assert!(errors.is_empty(), "{process} logged errors: {errors:?}");
    }
}
