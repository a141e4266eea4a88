//! The command line a person expects: noun-verb commands beside the older spellings, short ids
//! wherever an id is taken (also by the API), `submit --id --timeout-ms --wait-timeout`, and
//! `-o json` on every client command.

use crate::helpers::{eventually, TestApp};
use serde_json::Value;
use std::{process::Output, time::Duration};

struct Cli<'a> {
    app: &'a TestApp,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        self.app.cli(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}");
        serde_json::from_slice(&out.stdout).expect("-o json prints JSON")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn noun_verb_commands_short_ids_and_submit_limits() {
    let app = TestApp::spawn().await;
    let cli = Cli { app: &app };

    // --id, --timeout-ms and --wait: the job is the one named, bounded per attempt.
    let id = uuid::Uuid::now_v7().to_string();
    let done = cli.json(&[
        "jobs",
        "submit",
        "sleep",
        "--args",
        r#"{"ms": 50}"#,
        "-r",
        "repo:1",
        "--id",
        &id,
        "--timeout-ms",
        "20000",
        "--wait",
        "-o",
        "json",
    ]);
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["state"], "completed");
    assert_eq!(done["timeout_ms"], 20000, "{done}");
    let timed_out = cli.run(&[
        "jobs",
        "submit",
        "sleep",
        "--args",
        r#"{"ms": 200}"#,
        "--timeout-ms",
        "50",
        "--max-attempts",
        "1",
        "--wait",
    ]);
    assert_eq!(timed_out.status.code(), Some(5));
    assert!(stderr(&timed_out).contains("timed out after"));

    // --wait-timeout gives up waiting (exit 6); the job goes on and ends.
    let slow = cli.run(&[
        "jobs",
        "submit",
        "sleep",
        "--args",
        r#"{"ms": 1500}"#,
        "--wait",
        "--wait-timeout",
        "300ms",
    ]);
    assert_eq!(slow.status.code(), Some(6), "{}", stderr(&slow));
    assert!(stderr(&slow).contains("goes on"));
    let slow_id = String::from_utf8_lossy(&slow.stdout).trim().to_owned();
    let no_wait = cli.run(&["jobs", "submit", "echo", "--wait-timeout", "1s"]);
    assert_eq!(
        no_wait.status.code(),
        Some(2),
        "--wait-timeout needs --wait"
    );

    // A short id: the first 13 characters (a time-ordered id's millisecond) name one job here.
    let short = &id[..13];
    let shown = cli.json(&["jobs", "show", short, "-o", "json"]);
    assert_eq!(shown["id"], id.as_str());
    let shown = cli.json(&["job", &id.replace('-', "")[..13], "-o", "json"]);
    assert_eq!(
        shown["id"],
        id.as_str(),
        "a prefix without hyphens, old spelling"
    );
    let api = app
        .http
        .get(format!("{}/jobs/{}", app.base, &id[..13]))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert_eq!(api.json::<Value>().await.unwrap()["id"], id.as_str());

    // Two jobs whose ids share 31 digits: their common prefix is refused, naming both.
    let twins = [
        "abcd0000-0000-7000-8000-000000000001",
        "abcd0000-0000-7000-8000-000000000002",
    ];
    for twin in twins {
        let out = cli.run(&["jobs", "submit", "echo", "--id", twin, "--wait"]);
        assert!(out.status.success());
    }
    let ambiguous = cli.run(&["jobs", "show", "abcd0000-0000-7000-8000-00000000000"]);
    assert_eq!(ambiguous.status.code(), Some(2));
    let why = stderr(&ambiguous);
    assert!(
        why.contains("409") && why.contains("ambiguous") && why.contains(twins[0]),
        "{why}"
    );
    assert!(why.contains(twins[1]), "{why}");
    let one = cli.json(&[
        "jobs",
        "show",
        "abcd0000000070008000000000000002",
        "-o",
        "json",
    ]);
    assert_eq!(one["id"], twins[1]);
    let eight = cli.run(&["jobs", "show", &id[..8]]);
    assert!(
        stderr(&eight).contains("ambiguous"),
        "jobs of one minute share their first 8 digits: {}",
        stderr(&eight)
    );
    let unknown = cli.run(&["jobs", "show", "ffff9999"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("404"), "{}", stderr(&unknown));
    let too_short = cli.run(&["jobs", "show", "abc"]);
    assert!(stderr(&too_short).contains("at least 4 hex digits"));
    let not_hex = app
        .http
        .post(format!("{}/jobs/xyz-not-an-id/cancel", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(not_hex.status(), 400);

    // Cancel and retry by a short id: the answer names the full id.
    let holder = cli.run(&[
        "jobs",
        "submit",
        "sleep",
        "--args",
        r#"{"ms": 3000}"#,
        "-r",
        "repo:9",
    ]);
    assert!(holder.status.success());
    let blocked =
        String::from_utf8_lossy(&cli.run(&["jobs", "submit", "echo", "-r", "repo:9"]).stdout)
            .trim()
            .to_owned();
    let canceled = cli.json(&["jobs", "cancel", &blocked[..13], "-o", "json"]);
    assert_eq!(canceled["id"], blocked.as_str());
    let path = format!("/jobs/{blocked}");
    eventually(Duration::from_secs(30), "the cancel to land", || async {
        let job = app.get_json(&path).await.ok()?;
        (job["state"] == "canceled").then_some(())
    })
    .await;
    let text = cli.run(&["jobs", "retry", &blocked[..13]]);
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(&blocked),
        "the full id is printed"
    );

    // The slow job went on after --wait-timeout gave up.
    let path = format!("/jobs/{slow_id}");
    eventually(
        Duration::from_secs(30),
        "the job --wait-timeout left",
        || async {
            let job = app.get_json(&path).await.ok()?;
            (job["state"] == "completed").then_some(())
        },
    )
    .await;

    // Every client command speaks JSON; lists work in both spellings.
    let listed = cli.json(&["jobs", "list", "--task", "echo", "-o", "json"]);
    assert!(listed.as_array().unwrap().len() >= 3, "{listed}");
    let old = cli.json(&["jobs", "--task", "echo", "-o", "json"]);
    assert_eq!(
        old.as_array().unwrap().len(),
        listed.as_array().unwrap().len()
    );
    cli.json(&["queues", "list", "-o", "json"]);
    let token = cli.json(&[
        "tokens",
        "new",
        "ci",
        "--scopes",
        "submit,read",
        "-o",
        "json",
    ]);
    assert!(token["line"]
        .as_str()
        .unwrap()
        .starts_with("ci submit,read "));
    assert!(cli
        .run(&["token", "new", "ci", "--scopes", "read"])
        .status
        .success());
    let workers = cli.json(&["workers", "list", "-o", "json"]);
    let worker = workers[0]["id"].as_str().unwrap().to_owned();
    let drained = cli.json(&[
        "workers",
        "drain",
        &worker[..worker.len() - 1],
        "-o",
        "json",
    ]);
    assert_eq!(drained["worker"], worker.as_str());
    assert_eq!(drained["draining"], true);
    let nobody = cli.run(&["workers", "drain", "w-no-such-worker"]);
    assert_eq!(nobody.status.code(), Some(2));
}
