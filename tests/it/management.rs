//! The RabbitMQ management API as an operator's window: while a workload runs, every lane has
//! exactly one active consumer, named after a worker whose connection is named after it too,
//! and it is the worker lanes says owns the lane. And the UI's "Publish message" form (the
//! same endpoint as `POST /api/exchanges/.../publish`) submits tasks.

use crate::helpers::{mgmt, mgmt_get, sleep_workload, Opts, TestApp};
use reqwest::Method;
use serde_json::{json, Value};
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};
use uuid::Uuid;

/// One lane as the broker and lanes see it.
#[derive(Debug)]
struct Lane {
    name: String,
    /// Messages in the queue (ready + unacked) as the management API reports them.
    messages: u64,
    /// Tags of the consumers the broker reports as active, and of all of them.
    active: Vec<String>,
    consumers: Vec<String>,
    /// The user-provided names of the active consumers' connections.
    active_connections: Vec<String>,
    /// What `GET /workers` says: the owner and the standby.
    owner: Option<String>,
    standby: Option<String>,
}

/// The id in a worker's consumer tag `lanes-worker-<id>/<queue>`.
fn tag_worker<'a>(tag: &'a str, queue: &str) -> Option<&'a str> {
    tag.strip_prefix("lanes-worker-")?
        .strip_suffix(queue)?
        .strip_suffix('/')
}

/// The user-provided name of every connection, keyed by the broker's name for it.
async fn connection_names(http: &reqwest::Client) -> HashMap<String, String> {
    mgmt_get(http, "/connections")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let provided = c["user_provided_name"]
                .as_str()
                .or(c["client_properties"]["connection_name"].as_str())
                .unwrap_or_default();
            (c["name"].as_str().unwrap().to_owned(), provided.to_owned())
        })
        .collect()
}

/// Reads the broker's and lanes' views of every lane at (nearly) one moment.
async fn snapshot(app: &TestApp, http: &reqwest::Client) -> Vec<Lane> {
    let workers = app.get_json("/workers").await.unwrap();
    let mut owner = HashMap::new();
    let mut standby = HashMap::new();
    for w in workers.as_array().unwrap() {
        let id = w["id"].as_str().unwrap().to_owned();
        for l in w["assigned"].as_array().unwrap() {
            owner.insert(l.as_str().unwrap().to_owned(), id.clone());
        }
        for l in w["standby"].as_array().unwrap() {
            standby.insert(l.as_str().unwrap().to_owned(), id.clone());
        }
    }
    let consumers = mgmt_get(http, "/consumers/%2f").await;
    let connections = connection_names(http).await;
    let mut lanes = Vec::new();
    for n in 0..app.opts.max_queues {
        let name = format!("{}.q.{n}", app.prefix);
        let info = mgmt_get(http, &format!("/queues/%2f/{name}")).await;
        let on_lane: Vec<&Value> = consumers
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["queue"]["name"] == name.as_str())
            .collect();
        let active: Vec<&Value> = on_lane
            .iter()
            .copied()
            .filter(|c| c["active"] == true)
            .collect();
        // Quorum queues report the active one per consumer; some versions also name it on
        // the queue. Where they do, the two must agree.
        if let Some(tag) = info["single_active_consumer_tag"].as_str() {
            assert!(
                active.iter().any(|c| c["consumer_tag"] == tag),
                "{name}: queue says {tag} is active, consumers say {active:?}"
            );
        }
        lanes.push(Lane {
            messages: info["messages"].as_u64().unwrap_or(0),
            active: active.iter().map(|c| tag_of(c)).collect(),
            consumers: on_lane.iter().map(|c| tag_of(c)).collect(),
            active_connections: active
                .iter()
                .map(|c| {
                    let broker_name = c["channel_details"]["connection_name"].as_str().unwrap();
                    connections.get(broker_name).cloned().unwrap_or_default()
                })
                .collect(),
            owner: owner.get(&name).cloned(),
            standby: standby.get(&name).cloned(),
            name,
        });
    }
    lanes
}

fn tag_of(consumer: &Value) -> String {
    consumer["consumer_tag"].as_str().unwrap().to_owned()
}

/// Starts 3 workers on 6 lanes with a backlog on every lane, and waits until the management
/// API reports messages on some of them (its queue figures lag by up to 5 s).
async fn busy_app(http: &reqwest::Client) -> TestApp {
    // Every lane of the pool open from the start: these tests look at all of them.
    let app = TestApp::with(Opts {
        workers: 3,
        max_queues: 6,
        concurrency: 4,
        env: vec![("LANES_MIN_QUEUES".into(), "6".into())],
        ..Opts::default()
    })
    .await;
    // 20 tasks of 500 ms per lane: each lane stays busy for about 10 s.
    app.publish_many(&sleep_workload(120, 6, 500)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut busy = 0;
        for n in 0..app.opts.max_queues {
            let info = mgmt_get(http, &format!("/queues/%2f/{}.q.{n}", app.prefix)).await;
            busy += usize::from(info["messages"].as_u64().unwrap_or(0) > 0);
        }
        if busy >= 3 {
            return app;
        }
        assert!(
            Instant::now() < deadline,
            "the management API shows no lane with messages"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lane_has_one_active_consumer_named_after_its_worker() {
    let http = reqwest::Client::new();
    let app = busy_app(&http).await;
    let lanes = snapshot(&app, &http).await;
    let workers: HashSet<String> = app
        .get_json("/workers")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(workers.len(), 3);
    let host = gethostname();
    for lane in &lanes {
        assert_eq!(
            lane.active.len(),
            1,
            "{}: exactly one active consumer: {lane:?}",
            lane.name
        );
        let tag = &lane.active[0];
        let worker = tag_worker(tag, &lane.name)
            .unwrap_or_else(|| panic!("{}: tag {tag} names no worker", lane.name));
        assert!(workers.contains(worker), "{tag}: {worker} is not live");
        assert_eq!(
            lane.active_connections[0],
            format!("lanes-worker-{worker}@{host}"),
            "{}: the active consumer's connection is named after its worker",
            lane.name
        );
        // Owner and standby both consume the lane (hot standby); nobody else does.
        let (owner, standby) = (lane.owner.as_deref(), lane.standby.as_deref());
        assert!(owner.is_some(), "{}: lanes names an owner", lane.name);
        assert!(
            Some(worker) == owner || Some(worker) == standby,
            "{}: the active consumer is the lane's owner or standby: {lane:?}",
            lane.name
        );
        let mut expected: Vec<String> = [owner, standby]
            .into_iter()
            .flatten()
            .map(|w| format!("lanes-worker-{w}/{}", lane.name))
            .collect();
        let mut got = lane.consumers.clone();
        expected.sort();
        got.sort();
        assert_eq!(
            got, expected,
            "{}: consumers are owner and standby",
            lane.name
        );
    }
    assert!(
        lanes.iter().any(|l| l.messages > 0),
        "the workload was running: {lanes:?}"
    );

    // The control plane's consumers and connection are named too.
    let consumers = mgmt_get(&http, "/consumers/%2f").await;
    let connections = connection_names(&http).await;
    for (queue, tag) in [
        ("submit", "lanes-server/dispatcher"),
        ("events", "lanes-server/callback"),
    ] {
        let queue = format!("{}.{queue}", app.prefix);
        let c = consumers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["queue"]["name"] == queue.as_str())
            .unwrap_or_else(|| panic!("{queue} has a consumer"));
        assert_eq!(c["consumer_tag"], tag);
        let conn = c["channel_details"]["connection_name"].as_str().unwrap();
        // The control plane of epoch 1 (the first server to take the lease of this prefix).
        assert_eq!(
            connections[conn],
            format!("lanes-server-{}-e1@{host}", app.prefix)
        );
    }
    let default = format!("{}.q.default", app.prefix);
    let mut on_default: Vec<String> = consumers
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["queue"]["name"] == default.as_str())
        .map(tag_of)
        .collect();
    on_default.sort();
    let mut expected: Vec<String> = workers
        .iter()
        .map(|w| format!("lanes-worker-{w}/default"))
        .collect();
    expected.sort();
    assert_eq!(
        on_default, expected,
        "every worker consumes the default queue"
    );
}

/// A lane's owner registers its consumer before the standby does (standbys wait, and an owner
/// demoted to standby subscribes again), so single active consumer makes the owner the active
/// one: `GET /workers` and the broker agree about who runs each lane.
#[tokio::test(flavor = "multi_thread")]
async fn the_active_consumer_of_a_busy_lane_is_its_owner() {
    let http = reqwest::Client::new();
    let app = busy_app(&http).await;
    let lanes = snapshot(&app, &http).await;
    let mut wrong = Vec::new();
    for lane in lanes.iter().filter(|l| l.messages > 0) {
        let active = tag_worker(&lane.active[0], &lane.name).map(str::to_owned);
        if active != lane.owner {
            wrong.push(format!(
                "{}: active {active:?}, owner {:?}, standby {:?}",
                lane.name, lane.owner, lane.standby
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the broker's active consumer is not the owner lanes reports: {wrong:#?}"
    );
}

/// `gethostname()` as the processes see it (they run on this machine).
fn gethostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// What the UI's "Publish message" form on the exchange page sends.
async fn publish_via_management(
    http: &reqwest::Client,
    exchange: &str,
    payload: &Value,
    properties: Value,
) {
    let resp = mgmt(
        http,
        Method::POST,
        &format!("/exchanges/%2f/{exchange}/publish"),
    )
    .json(&json!({
        "properties": properties,
        "routing_key": "submit",
        "payload": payload.to_string(),
        "payload_encoding": "string",
    }))
    .send()
    .await
    .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["routed"], true,
        "the submit message was routed: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_from_the_management_ui_submits_a_task() {
    let http = reqwest::Client::new();
    let app = TestApp::spawn().await;
    // As the README describes it: content type, persistent, and a message_id for the job id.
    let id = Uuid::new_v4();
    publish_via_management(
        &http,
        &app.prefix,
        &json!({"task": "echo", "args": {"from": "ui"}, "resources": ["repo:ui"]}),
        json!({"content_type": "application/json", "delivery_mode": 2, "message_id": id.to_string()}),
    )
    .await;
    // The form's defaults (no properties at all) work too; the server assigns the id.
    publish_via_management(
        &http,
        &app.prefix,
        &json!({"task": "sleep", "args": {"ms": 10}}),
        json!({}),
    )
    .await;
    let rows = app.wait_final(2, Duration::from_secs(30)).await;
    assert!(rows.iter().all(|r| r.state == "completed"), "{rows:?}");
    let job = app.get_json(&format!("/jobs/{id}")).await.unwrap();
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["result"], json!({"from": "ui"}));
    assert_eq!(job["resources"], json!(["repo:ui"]));
}
