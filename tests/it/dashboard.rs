//! The dashboard in a real headless Chromium, with a workload running: every page renders;
//! a waiting multi-resource job shows what holds it back; a queued job's page turns to
//! `completed` without a reload; Cancel needs the token and then cancels a running job; Drain
//! takes a worker out; a refused submit shows among the dead letters with its reason. Screenshots are kept as `target/tmp/dashboard-*.png`.

use crate::{
    browser::Browser,
    helpers::{eventually, submit, Opts, TestApp},
};
use lanes::protocol::job_id_from_message_id as id_of;
use serde_json::json;
use std::{path::PathBuf, time::Duration};

const TOKEN: &str = "dash-token";

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{name}.png"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_and_steers_a_running_workload() {
    let mut app = TestApp::with(Opts {
        workers: 2,
        max_queues: 4,
        env: vec![("LANES_API_TOKEN".into(), TOKEN.into())],
        ..Opts::default()
    })
    .await;
    app.wait_workers(2).await;
    let sleep = |ms: u64, r: &[&str]| submit("sleep", json!({ "ms": ms }), r);
    app.publish_many(&[
        // Long enough to outlast a browser's start on a busy machine.
        (sleep(20_000, &["repo:1"]), Some("hold-1".into())),
        (sleep(20_000, &["remote:2"]), Some("hold-2".into())),
        (sleep(60_000, &["repo:3"]), Some("long".into())),
        // Waits for both holders.
        (sleep(100, &["repo:1", "remote:2"]), Some("both".into())),
        // Queued behind hold-1 in its lane.
        (sleep(100, &["repo:1"]), Some("behind".into())),
        // Names as long as lanes allows must not break the layout.
        (
            sleep(100, &[&"a-very-long-resource-name-".repeat(9)]),
            Some("long-name".into()),
        ),
        // Set aside, with its reason.
        (b"{\"task\": 42}".to_vec(), Some("bad".into())),
    ])
    .await;
    let browser = Browser::start().await;
    let page = |path: &str| format!("{}{path}", app.base);

    // The waiting multi-resource job says what it waits for, in words.
    browser
        .goto(&page(&format!("/ui/jobs/{}", id_of("both"))))
        .await;
    let text = browser
        .wait_text("the waiting job names both jobs it waits for", |t| {
            t.contains("Why it is not running")
                && t.contains(&id_of("hold-1").to_string()[..8])
                && t.contains(&id_of("hold-2").to_string()[..8])
        })
        .await;
    assert!(text.contains("number 1 in the waiting line"), "{text}");
    assert!(
        text.contains("on repo:1") && text.contains("on remote:2"),
        "{text}"
    );
    browser.screenshot(&shot("blocked")).await;

    // While they run: the lanes show their running tasks and reservations, and the
    // resource page who holds repo:1 and who waits for it.
    browser.goto(&page("/ui/lanes")).await;
    browser
        .wait_text("the lanes page shows the reservations", |t| {
            t.contains(&format!("{}.q.", app.prefix))
                && t.contains("repo:1")
                && t.contains("remote:2")
        })
        .await;
    browser.screenshot(&shot("lanes")).await;
    browser.goto(&page("/ui/resources?name=repo%3A1")).await;
    browser
        .wait_text("the resource page names its holder and its waiter", |t| {
            t.contains("(exclusive)") && t.contains(&id_of("both").to_string()[..8])
        })
        .await;
    browser.screenshot(&shot("resource-held")).await;

    // A queued job's page follows it to `completed` with no reload (a marker set on the
    // loaded page survives).
    browser
        .goto(&page(&format!("/ui/jobs/{}", id_of("behind"))))
        .await;
    let first = browser
        .script("return document.getElementById('state').innerText")
        .await;
    assert_ne!(
        first, "completed",
        "the page opened too late to see the job wait"
    );
    browser
        .script("window.lanesMarker = 42; return null;")
        .await;
    eventually(
        Duration::from_secs(60),
        "the page to show completed",
        || async {
            let state = browser
                .script("return document.getElementById('state').innerText")
                .await;
            (state == "completed").then_some(())
        },
    )
    .await;
    assert_eq!(
        browser.script("return window.lanesMarker").await,
        42,
        "the page reloaded"
    );
    browser.screenshot(&shot("job-completed")).await;

    // Cancel: refused without the token, done with it.
    let long = id_of("long");
    browser.goto(&page(&format!("/ui/jobs/{long}"))).await;
    browser.click("#cancel").await;
    browser
        .wait_text("cancel without the token is refused", |t| {
            t.contains("bearer token")
        })
        .await;
    browser
        .goto(&page(&format!("/ui/login?next=/ui/jobs/{long}")))
        .await;
    browser.type_into("input[name=token]", TOKEN).await;
    browser.click(".login button").await;
    browser.element("#cancel").await;
    browser.click("#cancel").await;
    browser
        .wait_text("the running job is canceled", |t| t.contains("canceled"))
        .await;
    let job = app.get_json(&format!("/jobs/{long}")).await.unwrap();
    assert_eq!(job["state"], "canceled", "{job}");

    // The cookie alone is no token for a write (a form elsewhere could send it); with the
    // page's header it is.
    let cookie = format!("lanes_token={TOKEN}");
    let post = |with_header: bool| {
        let mut req = app
            .http
            .post(format!("{}/jobs", app.base))
            .header("cookie", &cookie)
            .header("content-type", "text/plain")
            .body(r#"{"task": "echo"}"#);
        if with_header {
            req = req.header("x-lanes-dashboard", "1");
        }
        req.send()
    };
    assert_eq!(post(false).await.unwrap().status(), 401);
    assert_eq!(post(true).await.unwrap().status(), 202);

    // The other pages render with the workload.
    browser.goto(&page("/")).await;
    browser
        .wait_text("the overview", |t| {
            t.contains("live workers") && t.contains("completed")
        })
        .await;
    browser.screenshot(&shot("overview")).await;
    browser.goto(&page("/ui/jobs")).await;
    browser
        .wait_text("the job list", |t| {
            t.contains("sleep") && t.contains("canceled")
        })
        .await;
    browser.screenshot(&shot("jobs")).await;
    for path in ["/ui/jobs", &format!("/ui/jobs/{}", id_of("long-name"))] {
        browser.goto(&page(path)).await;
        browser.element("main").await;
        let overflow = browser
            .script("return document.documentElement.scrollWidth - window.innerWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap_or(0) <= 0,
            "{path} scrolls sideways by {overflow} px"
        );
    }
    browser.goto(&page("/ui/resources?name=repo%3A1")).await;
    browser
        .wait_text("the resource page", |t| t.contains("Its recent runs"))
        .await;
    let bars = browser
        .script("return document.querySelectorAll('#timeline .run').length")
        .await;
    assert!(bars.as_u64().unwrap_or(0) >= 2, "timeline bars: {bars}");
    browser.screenshot(&shot("resource")).await;

    browser.goto(&page("/ui/dead")).await;
    browser
        .wait_text("the dead letters page gives the reason", |t| {
            t.contains("field `task` is required") && t.contains(&id_of("bad").to_string()[..8])
        })
        .await;
    browser.screenshot(&shot("dead")).await;

    // Drain from the workers page: one worker leaves, exiting 0.
    browser.goto(&page("/ui/workers")).await;
    browser
        .wait_text("the workers page", |t| t.contains("2 live"))
        .await;
    browser.screenshot(&shot("workers")).await;
    browser.click("button.drain").await;
    let code = eventually(
        Duration::from_secs(30),
        "a worker to leave after Drain",
        || std::future::ready(app.workers.iter_mut().find_map(|w| w.try_wait().unwrap())),
    )
    .await;
    assert_eq!(code.code(), Some(0));
    browser
        .wait_text("one worker is left", |t| t.contains("1 live"))
        .await;
}
