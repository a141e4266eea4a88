//! The OpenAPI document: every route of the API's route table is in it, its request examples
//! are requests the server accepts, and the explorer at `/docs` works from the binary alone
//! (in a real browser, with no network).

use crate::{
    browser::Browser,
    helpers::{submit, TestApp},
};
use serde_json::{json, Value};
use std::{collections::BTreeSet, path::PathBuf, time::Duration};

/// (method, path) of every `.route(...)` in the API's route table, but the pages (the
/// dashboard, the explorer and the document itself).
fn route_table() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs")).unwrap();
    let re =
        regex::Regex::new(r#"\.route\("([^"]+)",\s*web::(get|post|patch|put|delete)\(\)"#).unwrap();
    // `{resource:.+}` (a segment pattern) is `{resource}` in the document.
    let pattern = regex::Regex::new(r"\{(\w+):[^}]*\}").unwrap();
    let routes: BTreeSet<_> = re
        .captures_iter(&source)
        .map(|c| {
            (
                c[2].to_owned(),
                pattern.replace_all(&c[1], "{$1}").into_owned(),
            )
        })
        .collect();
    assert!(
        routes.len() >= 10,
        "the route table was not found: {routes:?}"
    );
    routes
}

/// A schema's example, following a `$ref` into the components.
fn example_of(doc: &Value, media: &Value) -> Option<Value> {
    if let Some(e) = media.get("example") {
        return Some(e.clone());
    }
    let name = media["schema"]["$ref"].as_str()?.rsplit('/').next()?;
    doc["components"]["schemas"][name].get("example").cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_covers_every_route_and_its_examples_are_accepted() {
    let app = TestApp::spawn().await;
    let doc = app.get_json("/openapi.json").await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in route_table() {
        assert!(
            paths.get(&path).and_then(|p| p.get(&method)).is_some(),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every route behind the token documents the failures all of them share.
    let mut guarded = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security").is_none() {
                continue;
            }
            guarded += 1;
            for status in ["400", "401", "503"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
    assert!(guarded >= 9, "{guarded} routes behind the token");

    // A job that runs long enough to take an executor's report.
    app.publish(
        &submit("sleep", json!({"ms": 4000}), &["docs"]),
        Some("running"),
    )
    .await;
    let running = lanes::protocol::job_id_from_message_id("running");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app
        .get_json(&format!("/jobs/{running}"))
        .await
        .map(|j| j["state"].clone())
        .ok()
        != Some(json!("running"))
    {
        assert!(std::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut tried = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let Some(media) = op["requestBody"]["content"].get("application/json") else {
                continue;
            };
            let example = example_of(&doc, media)
                .unwrap_or_else(|| panic!("{method} {path} has a request body but no example"));
            // `{name}`: the schedule the example of `POST /schedules` made (paths come sorted).
            let path = path
                .replace("{id}", &running.to_string())
                .replace("{name}", "nightly-sync")
                .replace("{resource}", "api:github");
            let url = format!("{}{path}", app.base);
            let resp = app
                .http
                .request(method.to_uppercase().parse().unwrap(), url)
                .json(&example)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            assert!(
                status.is_success(),
                "{method} {path} with its example {example}: {status} {body}"
            );
            tried += 1;
        }
    }
    assert!(
        tried >= 2,
        "POST /jobs and PATCH /jobs/{{id}} have examples"
    );

    // The explorer, from the binary alone, in a browser.
    let browser = Browser::start().await;
    browser.goto(&format!("{}/docs", app.base)).await;
    browser
        .wait_text("the explorer lists the API", |t| {
            t.contains("lanes") && t.contains("/jobs/{id}/cancel") && t.contains("/workers")
        })
        .await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    browser.screenshot(&dir.join("openapi-explorer.png")).await;
}
