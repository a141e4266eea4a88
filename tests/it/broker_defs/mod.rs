//! `broker/definitions.json` in the real RabbitMQ: imported into a throwaway vhost (its users
//! renamed so that tests and real deployments never collide), a workload runs with the
//! least-privilege users it defines, and each user is refused what it must not do.

mod probes;
mod sandbox;

use probes::{assert_refused, connect, try_consume, try_declare, try_get, try_publish};
use sandbox::{
    encode, mgmt_as, placeholder_password, server_connection, worker_connections, Sandbox,
};

use crate::helpers::{assert_completed_in_order, mgmt_get, sleep_workload, submit, Opts, TestApp};
use futures::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Connection, ErrorKind,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// Declares an exclusive server-named queue as the publisher, submits a job with it as
/// `reply_to`, and waits for the reply.
async fn assert_reply_arrives(publisher: &Connection) {
    let ch = publisher.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("publisher declares a server-named reply queue");
    let mut replies = ch
        .basic_consume(
            q.name().clone(),
            "lanes-test-replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("publisher consumes its reply queue");
    let id = Uuid::new_v4().to_string();
    ch.basic_publish(
        "lanes".into(),
        "submit".into(),
        BasicPublishOptions::default(),
        &submit("echo", json!({"reply": true}), &[]),
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into())
            .with_reply_to(q.name().clone())
            .with_correlation_id("c-1".into()),
    )
    .await
    .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), replies.next())
        .await
        .expect("the reply arrives")
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_slice(&reply.data).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["state"], "completed");
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        "c-1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_definitions_run_lanes_with_least_privilege() {
    let http = reqwest::Client::new();
    let sandbox = Sandbox::import(&http).await;
    let vhost = sandbox.vhost.clone();

    // What the import created.
    let policies = mgmt_get(&http, &format!("/policies/{vhost}")).await;
    assert!(
        policies
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "lanes-lanes"),
        "policies: {policies}"
    );

    // Server, workers and the test's publishing connection each log in as their own user,
    // with the prefix `lanes` the definitions' permissions are written for.
    let app = TestApp::with(Opts {
        prefix: Some("lanes".into()),
        server_amqp_url: Some(sandbox.url("server")),
        worker_amqp_url: Some(sandbox.url("worker")),
        client_amqp_url: Some(sandbox.url("publisher")),
        workers: 2,
        max_queues: 4,
        // Fencing without an administrator: as the workers' own user.
        env: vec![
            (
                "LANES_MANAGEMENT_URL".into(),
                "http://127.0.0.1:15672".into(),
            ),
            (
                "LANES_FENCE_WORKER_CREDENTIALS".into(),
                format!(
                    "lanes-worker-{}:{}",
                    sandbox.suffix,
                    placeholder_password("worker")
                ),
            ),
        ],
        ..Opts::default()
    })
    .await;

    // A workload: lanes over three resources and the default queue, published as
    // lanes-publisher, plus one `POST /jobs` (published by the server's user).
    let mut messages = sleep_workload(24, 3, 20);
    for i in 0..6 {
        messages.push((
            submit("echo", json!({ "n": i }), &[]),
            Some(Uuid::new_v4().to_string()),
        ));
    }
    app.publish_many(&messages).await;
    let (status, job) = app
        .post_jobs(
            json!({"task": "echo", "args": {"via": "http"}, "resources": ["res:0"]}).to_string(),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    // An invalid message: the server dead-letters it (a write to the default exchange).
    app.publish(b"{not json", None).await;
    let rows = app.wait_final(31, Duration::from_secs(40)).await;
    assert_eq!(rows.len(), 31);
    assert_completed_in_order(&rows);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut dead = mgmt_get(&http, &format!("/queues/{vhost}/lanes.dead")).await;
    while dead["messages"].as_u64().unwrap_or(0) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter: {dead}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        dead = mgmt_get(&http, &format!("/queues/{vhost}/lanes.dead")).await;
    }

    // The inbound queues dead-letter after a delivery limit of their own.
    for q in ["lanes.submit", "lanes.events"] {
        let queue = mgmt_get(&http, &format!("/queues/{vhost}/{q}")).await;
        assert_eq!(queue["arguments"]["x-delivery-limit"], 100, "{q}: {queue}");
        assert_eq!(
            queue["arguments"]["x-dead-letter-routing-key"],
            "lanes.dead"
        );
    }

    // The definitions' policy applies to the lanes (the management API reports it with a
    // delay of up to its stats interval, 5 s).
    let mut lane = mgmt_get(&http, &format!("/queues/{vhost}/lanes.q.0")).await;
    while lane["policy"] != "lanes-lanes" {
        assert!(
            std::time::Instant::now() < deadline,
            "policy lanes-lanes does not apply to lanes.q.0: {lane}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        lane = mgmt_get(&http, &format!("/queues/{vhost}/lanes.q.0")).await;
    }

    // The publisher may publish to `lanes` only: nothing else.
    let publisher = connect(&sandbox.url("publisher"), "lanes-test-publisher").await;
    try_publish(&publisher, "lanes", "submit")
        .await
        .expect("publishing to the submit exchange is what a publisher is for");
    assert_refused(
        "publisher consumes lanes.submit",
        try_consume(&publisher, "lanes.submit").await,
    );
    assert_refused(
        "publisher reads lanes.q.0",
        try_get(&publisher, "lanes.q.0").await,
    );
    assert_refused(
        "publisher consumes lanes.q.0",
        try_consume(&publisher, "lanes.q.0").await,
    );
    // A publisher may declare a server-named queue for replies, and its replies arrive.
    assert_reply_arrives(&publisher).await;
    assert_refused(
        "publisher declares lanes.mine",
        try_declare(&publisher, "lanes.mine").await,
    );
    assert_refused(
        "publisher publishes to lanes.control",
        try_publish(&publisher, "lanes.control", "some-worker").await,
    );
    assert_refused(
        "publisher publishes straight to a lane (default exchange)",
        try_publish(&publisher, "", "lanes.q.0").await,
    );

    // A worker reads its lanes, never the line in front of the dispatcher or the events.
    let worker = connect(&sandbox.url("worker"), "lanes-test-worker").await;
    assert_refused(
        "worker consumes lanes.submit",
        try_consume(&worker, "lanes.submit").await,
    );
    assert_refused(
        "worker reads lanes.submit",
        try_get(&worker, "lanes.submit").await,
    );
    assert_refused(
        "worker reads lanes.events",
        try_get(&worker, "lanes.events").await,
    );
    assert_refused(
        "worker publishes to the submit exchange",
        try_publish(&worker, "lanes", "submit").await,
    );
    assert_refused(
        "worker declares lanes.mine",
        try_declare(&worker, "lanes.mine").await,
    );
    // Workers publish events to their exchange only: never into a lane, `submit`, or another
    // worker's control queue, through the default exchange or any other.
    assert_refused(
        "worker publishes straight to a lane (default exchange)",
        try_publish(&worker, "", "lanes.q.0").await,
    );
    assert_refused(
        "worker publishes straight to lanes.submit",
        try_publish(&worker, "", "lanes.submit").await,
    );
    let controls = mgmt_get(&http, &format!("/queues/{vhost}?columns=name")).await;
    let other = controls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["name"].as_str())
        .find(|n| n.starts_with("lanes.worker."))
        .expect("a worker's control queue, named after it")
        .to_owned();
    assert_refused(
        "worker publishes into another worker's control queue",
        try_publish(&worker, "", &other).await,
    );
    assert_refused(
        "worker publishes to lanes.control",
        try_publish(&worker, "lanes.control", "some-worker").await,
    );
    // Its own user may read `lanes.worker.*`, but another session's queue is exclusive.
    let locked = try_consume(&worker, &other).await;
    assert!(
        matches!(&locked, Err(e) if matches!(e.kind(), ErrorKind::ProtocolError(a) if a.get_id() == 405)),
        "worker reads another worker's control queue: {locked:?}"
    );
    let _ = publisher.close(200, "bye".into()).await;
    let _ = worker.close(200, "bye".into()).await;

    // The worker's user may close its own connections only, never the server's.
    let server_conn = server_connection(&http, &vhost).await;
    let status = mgmt_as(
        &http,
        Method::DELETE,
        &format!("/connections/{}", encode(&server_conn)),
        &sandbox,
        "worker",
    )
    .send()
    .await
    .unwrap()
    .status();
    assert!(
        status == 401 || status == 403 || status == 404,
        "worker closed the server's connection: {status}"
    );

    // A hung worker is fenced as its own user: its connection is closed.
    let mut app = app;
    app.signal_worker(1, "STOP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while worker_connections(&http, &vhost).await >= 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stopped worker was not fenced: {}",
            mgmt_get(
                &http,
                &format!("/vhosts/{vhost}/connections?columns=name,state")
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    app.signal_worker(1, "CONT");
    assert!(app.process_log("server").contains("fenced a worker"));

    // A worker under its restricted user still drains cleanly on SIGTERM.
    assert_eq!(app.term_worker(0).await, Some(0));
    drop(app);
    drop(sandbox);
}
