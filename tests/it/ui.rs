//! The RabbitMQ management UI in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/services.sh), driven over plain WebDriver HTTP: with
//! a workload running, the queues page lists the deployment's lanes, a lane's page names its
//! owner and standby, and the exchange's "Publish message" form submits a task. Screenshots
//! are kept as `target/tmp/management-ui-{queues,lane,publish}.png`.

use crate::{
    browser::{Browser, ENTER},
    helpers::{sleep_workload, Opts, TestApp, MGMT_URL},
};
use serde_json::json;
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

#[tokio::test(flavor = "multi_thread")]
async fn management_ui_lists_the_lanes_and_publishes_a_task() {
    let app = TestApp::with(Opts {
        workers: 2,
        max_queues: 4,
        ..Opts::default()
    })
    .await;
    // About 16 s of work on every lane, so the page shows them busy.
    app.publish_many(&sleep_workload(80, 4, 800)).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{MGMT_URL}/")).await;
    browser.type_into("input[name=username]", "guest").await;
    browser.type_into("input[name=password]", "guest").await;
    browser.click("input[type=submit]").await;
    browser
        .wait_text("logged in to the management UI", |t| {
            t.contains("User guest")
        })
        .await;

    browser.goto(&format!("{MGMT_URL}/#/queues")).await;
    // The broker is shared with other tests: show this deployment's queues only (the filter
    // applies on Enter).
    browser.element("#queues-name").await;
    browser
        .script("document.getElementById('queues-name').value = ''")
        .await;
    browser
        .type_into("#queues-name", &format!("{}{ENTER}", app.prefix))
        .await;
    let mut names: Vec<String> = (0..app.opts.max_queues)
        .map(|n| format!("{}.q.{n}", app.prefix))
        .collect();
    names.extend(
        ["q.default", "submit", "events", "dead"]
            .iter()
            .map(|q| format!("{}.{q}", app.prefix)),
    );
    // The table's rows as cell texts: name, type, features, state, ready, unacked, total, ...
    let lanes = &names[..app.opts.max_queues as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = browser
            .script(
                "return Array.from(document.querySelectorAll('table.list tbody tr'))
                   .map(r => Array.from(r.cells).map(c => c.innerText.trim()))",
            )
            .await;
        let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap_or_default();
        let listed = names.iter().all(|n| rows.iter().any(|r| r[0] == *n));
        // The workload shows on some lane once the broker's figures arrive (they lag by up
        // to 5 s, and start as NaN): a total of messages above 0.
        let busy = rows.iter().any(|r| {
            lanes.contains(&r[0]) && r.get(6).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0) > 0
        });
        if listed && busy {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the queues page lists every lane, some with messages: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Every queue of the deployment is a quorum queue, but the workers' own control queues
    // (exclusive, gone with their connection), named after their worker.
    // (The page may list other tests' queues too: only this deployment's are judged.)
    let control = format!("{}.worker.", app.prefix);
    let own = format!("{}.", app.prefix);
    assert!(
        rows.iter()
            .filter(|r| r[0].starts_with(&own))
            .all(|r| r[1] == "quorum" || (r[0].starts_with(&control) && r[2].contains("Excl"))),
        "all are quorum queues: {rows:?}"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    browser
        .screenshot(&dir.join("management-ui-queues.png"))
        .await;

    // A lane's own page names its consumers: the owner and the standby, by worker.
    browser
        .goto(&format!("{MGMT_URL}/#/queues/%2F/{}", lanes[0]))
        .await;
    browser
        .wait_text("the lane page", |t| t.contains("Consumers ("))
        .await;
    browser.unfold("Consumers (").await;
    browser
        .wait_text("the lane page lists its worker consumers", |t| {
            t.matches(&format!("/{}", lanes[0])).count() >= 2 && t.contains("lanes-worker-")
        })
        .await;
    browser
        .script(
            "Array.from(document.querySelectorAll('h2'))
               .find(h => h.innerText.startsWith('Consumers (')).scrollIntoView()",
        )
        .await;
    browser
        .screenshot(&dir.join("management-ui-lane.png"))
        .await;

    // The exchange page's "Publish message" form, filled in as the README says, submits a task.
    browser
        .goto(&format!("{MGMT_URL}/#/exchanges/%2F/{}", app.prefix))
        .await;
    browser
        .wait_text("the exchange page", |t| t.contains("Publish message"))
        .await;
    browser.unfold("Publish message").await;
    let id = uuid::Uuid::new_v4().to_string();
    browser
        .type_into(
            "form[action='#/exchanges/publish'] input[name=routing_key]",
            "submit",
        )
        .await;
    // Properties are key = value rows; typing into the last row adds the next one.
    browser.type_into("#props_1_mfkey", "content_type").await;
    browser
        .type_into("#props_1_mfvalue", "application/json")
        .await;
    browser.type_into("#props_2_mfkey", "message_id").await;
    browser.type_into("#props_2_mfvalue", &id).await;
    let payload = json!({"task": "echo", "args": {"from": "the UI"}, "resources": ["repo:ui"]});
    browser
        .type_into("textarea[name=payload]", &payload.to_string())
        .await;
    browser
        .click("input[type=submit][value='Publish message']")
        .await;
    browser
        .wait_text("the UI published the message", |t| {
            t.contains("Message published.")
        })
        .await;
    browser
        .screenshot(&dir.join("management-ui-publish.png"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = app
            .get_json(&format!("/jobs/{id}"))
            .await
            .unwrap_or_default();
        if job["state"] == "completed" {
            assert_eq!(job["result"], json!({"from": "the UI"}));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job published from the UI did not complete: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
