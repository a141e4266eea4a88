//! A RabbitMQ cluster of three nodes (`scripts/cluster.sh`), and the loss of the node the
//! server and half the workers are connected to. The server and two workers list the nodes
//! 1, 2, 3; two more workers list them 2, 3, 1; the test publishes through node 3. While tasks
//! that log their own runs and `flock` their resources (`it/execlog.rs`) flow, node 1 is
//! SIGKILLed; tasks are submitted during the outage; then the node comes back and more follow.
//! Asserted from the execution log: every job ran, 0 overlaps, 0 order violations, no run
//! after a job was recorded finished; and from the jobs table, every job completed (none
//! lost, none stranded). The lanes' queues are replicated to all three nodes. The time until
//! work flows again (from the kill to the start of a task submitted after it on a resource
//! of its own; and to its job being recorded) and the longest pause between task starts
//! while the node is down are printed and written to `target/tmp/cluster.json`.
//!
//! Its own target: it starts three more RabbitMQ nodes and kills one.

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "it/execlog.rs"]
mod execlog;

use execlog::{worker_env, ExecLog};
use helpers::{Opts, TestApp};
use serde_json::{json, Value};
use std::{
    process::Command,
    time::{Duration, Instant},
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

/// The cluster, torn down when dropped.
struct Cluster {
    amqp: Vec<String>,
    mgmt: Vec<String>,
}

fn script(args: &[&str]) -> String {
    let out = Command::new(SCRIPT).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cluster.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Cluster {
    fn up() -> Cluster {
        script(&["up"]);
        let urls = script(&["urls"]);
        let mut lines = urls
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect());
        Cluster {
            amqp: lines.next().unwrap(),
            mgmt: lines.next().unwrap(),
        }
    }

    /// The AMQP URLs starting with node `first` (1-based), then the others in turn.
    fn from(&self, first: usize) -> String {
        let n = self.amqp.len();
        (0..n)
            .map(|i| self.amqp[(first - 1 + i) % n].as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A management API that stays up (node 3's).
    async fn get(&self, path: &str) -> Value {
        let base = reqwest::Url::parse(&self.mgmt[2]).unwrap();
        let plain = format!(
            "http://{}:{}",
            base.host_str().unwrap(),
            base.port().unwrap()
        );
        reqwest::Client::new()
            .get(format!("{plain}{path}"))
            .basic_auth(base.username(), base.password())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The node each of the deployment's connections is on, by connection name.
    async fn nodes_of(&self, prefix: &str) -> Vec<(String, String)> {
        let Value::Array(conns) = self.get("/api/connections").await else {
            panic!("no connection list")
        };
        conns
            .iter()
            .filter_map(|c| {
                let name = c["client_properties"]["connection_name"].as_str()?;
                let ours = name.starts_with(&format!("lanes-server-{prefix}-"))
                    || name.starts_with("lanes-worker-");
                let node = c["node"].as_str()?;
                ours.then(|| (name.to_owned(), node.to_owned()))
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("down").status();
    }
}

/// Publishes as a careful client does: one message at a time, each until the broker confirms
/// it (`ack`); a `nack`, an error or no answer within 10 s sends it again on a fresh channel,
/// with the same message id (a duplicate is one job). Measured here: right after a node
/// dies, a quorum queue whose leader was there nacks publishes until it has a new leader.
/// Returns how many retries it took.
async fn publish_retrying(app: &TestApp, messages: &[(Vec<u8>, Option<String>)]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut retries = 0;
    let mut channel: Option<lapin::Channel> = None;
    for (body, id) in messages {
        loop {
            assert!(
                Instant::now() < deadline,
                "no publish confirmed within 120 s"
            );
            if channel.is_none() {
                let ch = app.amqp.create_channel().await.unwrap();
                ch.confirm_select(Default::default()).await.unwrap();
                channel = Some(ch);
            }
            let ch = channel.as_ref().unwrap();
            let props = lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.as_deref().unwrap().into());
            let options = lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let sent = async {
                ch.basic_publish(
                    app.prefix.as_str().into(),
                    "submit".into(),
                    options,
                    body,
                    props,
                )
                .await?
                .await
            };
            match tokio::time::timeout(Duration::from_secs(10), sent).await {
                Ok(Ok(lapin::Confirmation::Ack(None))) => break,
                _ => {
                    retries += 1;
                    channel = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    retries
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_node_of_the_server_and_half_the_workers() {
    let cluster = Cluster::up();
    let mut log = ExecLog::new("cluster");
    let mut env = worker_env();
    env.push(("LANES_MANAGEMENT_URL".into(), cluster.mgmt.join(",")));
    let mut app = TestApp::with(Opts {
        workers: 2,
        max_queues: 8,
        env,
        server_amqp_url: Some(cluster.from(1)),
        worker_amqp_url: Some(cluster.from(1)),
        client_amqp_url: Some(cluster.amqp[2].clone()),
        ..Opts::default()
    })
    .await;
    app.start_worker_on(&cluster.from(2));
    app.start_worker_on(&cluster.from(2));
    app.wait_workers(4).await;

    // The premise: the server and two workers on node 1, two workers on node 2 (the
    // management API lists connections some seconds late).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = cluster.nodes_of(&app.prefix).await;
        let on = |node: &str| nodes.iter().filter(|(_, n)| n.starts_with(node)).count();
        let server_on_1 = nodes
            .iter()
            .any(|(c, n)| c.starts_with("lanes-server-") && n.starts_with("lanes1@"));
        if server_on_1 && on("lanes1@") >= 3 && on("lanes2@") >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "not spread as asked: {nodes:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every lane is replicated to the three nodes (LANES_QUORUM_GROUP_SIZE, default 3).
    for queue in ["submit", "events", "q.0"] {
        let q = cluster
            .get(&format!("/api/queues/%2f/{}.{queue}", app.prefix))
            .await;
        assert_eq!(q["members"].as_array().map(Vec::len), Some(3), "{q}");
    }

    let mut sent = 0;
    let before = log.mixed(sent, 600, (40, 10), 20);
    sent += before.len();
    app.publish_many(&before).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while app
        .rows()
        .await
        .iter()
        .filter(|r| r.state == "completed")
        .count()
        < 150
    {
        assert!(
            Instant::now() < deadline,
            "the first tasks did not complete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let killed_at = chrono::Utc::now();
    script(&["stop", "1"]);
    // Work flows again when a task submitted after the kill, on a resource of its own (so no
    // backlog is ahead of it), has run: through the submit queue, the server, a lane and a
    // worker, each of which may have had to find another node.
    let probe = log.task(&["after-the-kill".to_owned()], 20);
    let during = log.mixed(sent, 300, (40, 10), 20);
    sent += during.len() + 1;
    let mut retries = publish_retrying(&app, std::slice::from_ref(&probe)).await;
    retries += publish_retrying(&app, &during).await;
    let token = probe.1.as_deref().unwrap();
    let probe_id = uuid::Uuid::parse_str(token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut recorded = None;
    let first_start = loop {
        if recorded.is_none() && app.rows().await.iter().any(|r| r.id == probe_id) {
            recorded = Some((chrono::Utc::now() - killed_at).num_milliseconds());
        }
        if let Some(at) = log.started_at(token) {
            break at;
        }
        assert!(Instant::now() < deadline, "no task ran after node 1 died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let flows_again_ms = (first_start - killed_at.timestamp_nanos_opt().unwrap()) / 1_000_000;
    let rows = app.wait_final(sent, Duration::from_secs(180)).await;
    let outage_done_ms = rows
        .iter()
        .filter_map(|r| r.finished_at)
        .max()
        .map(|f| (f - killed_at).num_milliseconds());
    let moved = cluster.nodes_of(&app.prefix).await;
    let kill_ns = killed_at.timestamp_nanos_opt().unwrap();
    let outage_end = kill_ns + outage_done_ms.unwrap_or(0) * 1_000_000;
    let longest_pause_ms = log.longest_pause_ms(kill_ns, outage_end);

    script(&["start", "1"]);
    let after = log.mixed(sent, 300, (40, 10), 20);
    sent += after.len();
    app.publish_many(&after).await;
    let rows = app.wait_completed(sent, Duration::from_secs(180)).await;
    let kept = log.assert_kept(&rows);
    assert!(
        moved.iter().all(|(_, n)| !n.starts_with("lanes1@")),
        "a connection stayed on the dead node: {moved:?}"
    );
    let report = json!({
        "tasks": sent,
        "flows_again_ms": flows_again_ms,
        "probe_recorded_ms": recorded,
        "longest_pause_while_node_down_ms": longest_pause_ms,
        "backlog_done_after_kill_ms": outage_done_ms,
        "control_plane_restarts": app.metric("lanes_control_plane_restarts_total").await,
        "extra_runs": kept.extra_runs,
        "redelivered": rows.iter().filter(|r| r.attempts > 1).count(),
        "client_publish_retries": retries,
        "connections_after_the_kill": moved,
    });
    eprintln!("cluster: {report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/cluster.json"),
        report.to_string(),
    );
}
