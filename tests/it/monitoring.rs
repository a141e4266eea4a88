//! Metrics that dashboards expect: every series the server exports has HELP text; durations
//! are `_seconds` histograms with buckets, by task; `lanes_build_info`; a worker serves its own
//! `/metrics` when asked; a standby exports no live figures. And the shipped alert rules and
//! Grafana dashboard parse and name only metrics lanes exports.

use crate::helpers::{eventually, free_port, submit, Opts, TestApp};
use serde_json::{json, Value};
use std::{collections::BTreeSet, time::Duration};
use yaml_rust2::YamlLoader;

/// The `lanes_…` metric names an expression uses (histogram series named by their base).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"lanes_[a-z_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let name = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// The metric names a `/metrics` text declares (`# TYPE name kind`).
fn declared(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

async fn scrape(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_rules_and_dashboard_fit_their_ecosystems() {
    let worker_port = free_port();
    // One worker: it runs every task, and it alone binds the metrics address.
    let mut app = TestApp::with(Opts {
        workers: 1,
        env: vec![(
            "LANES_WORKER_METRICS_ADDR".into(),
            format!("127.0.0.1:{worker_port}"),
        )],
        ..Opts::default()
    })
    .await;
    // A little of everything: completions, a failure, a dead letter.
    let mut work: Vec<_> = (0..6)
        .map(|i| (submit("echo", json!(i), &["r"]), None))
        .collect();
    work.push((submit("fail", json!({}), &[]), None));
    work.push((b"{not json".to_vec(), None));
    app.publish_many(&work).await;
    app.wait_final(7, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let server = app.metrics_text().await;
    let names = declared(&server);
    for name in &names {
        assert!(
            server.contains(&format!("# HELP {name} ")),
            "{name} has no HELP text"
        );
    }
    for histogram in [
        "lanes_job_queue_wait_seconds",
        "lanes_job_run_seconds",
        "lanes_job_end_to_end_seconds",
    ] {
        assert!(
            server.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} is a histogram"
        );
        assert!(
            server.contains(&format!("{histogram}_bucket{{task=\"echo\",le=\"0.005\"}}")),
            "{histogram} has explicit buckets by task:\n{server}"
        );
    }
    assert!(server.contains("lanes_build_info{version=\""), "{server}");
    assert!(server.lines().any(|l| l == "lanes_active 1"), "{server}");

    // The worker's own metrics, on the address it was given.
    let worker = scrape(&format!("http://127.0.0.1:{worker_port}")).await;
    assert!(
        worker.contains("lanes_worker_attempts_total{task=\"echo\",outcome=\"completed\"}"),
        "{worker}"
    );
    assert!(worker.contains("# TYPE lanes_worker_attempt_seconds histogram"));

    // A standby holds no live figures.
    let (mut standby, url) = app.start_standby();
    let text = eventually(Duration::from_secs(20), "the standby to answer", || async {
        let r = reqwest::get(format!("{url}/metrics")).await.ok()?;
        Some(r.text().await.unwrap())
    })
    .await;
    assert!(text.lines().any(|l| l == "lanes_active 0"), "{text}");
    assert!(text.lines().any(|l| l == "lanes_workers 0"), "{text}");
    let _ = standby.kill();
    let _ = standby.wait();

    // Everything the alert rules and the dashboard query is exported: by the server, or by
    // a worker (the `lanes_worker_` series).
    let exported: BTreeSet<String> = names.union(&declared(&worker)).cloned().collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = std::fs::read_to_string(format!("{root}/monitoring/alerts.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&rules).expect("alerts.yml parses");
    let mut alerts = 0;
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let alert = rule["alert"].as_str().expect("each rule names its alert");
            let expr = rule["expr"].as_str().expect("each rule has an expression");
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{alert}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{alert}: summary"
            );
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{alert} queries no lanes metric");
            for m in used {
                assert!(
                    exported.contains(&m),
                    "{alert} queries {m}, which lanes does not export"
                );
            }
            alerts += 1;
        }
    }
    assert!(
        alerts >= 4,
        "no live workers, waiting line, dead letters, restarts"
    );
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            for m in metric_names(target["expr"].as_str().unwrap()) {
                assert!(
                    exported.contains(&m),
                    "panel {} queries {m}",
                    panel["title"]
                );
            }
        }
    }
}
