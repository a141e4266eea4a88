//! Scoped tokens: each named token may do what its scopes allow (403 naming the missing scope
//! otherwise), jobs record who submitted them and who steered them, the file holds only hashes
//! and is read again on SIGHUP (a broken file keeps the tokens before it).

use crate::helpers::{eventually, submit, Opts, TestApp};
use lanes::tokens::hash_line;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMIN: &str = "root-token";
const CI: &str = "token-of-ci";
const OPS: &str = "token-of-ops";
const EXEC: &str = "token-of-executor";

fn file_text(extra: &str) -> String {
    format!(
        "# name scopes hash\nci submit,read {}\nops read,operate {}\nexec execute {}\n{extra}",
        hash_line(CI),
        hash_line(OPS),
        hash_line(EXEC)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_do_what_their_scopes_allow_and_jobs_say_who() {
    let dir = std::env::temp_dir().join(format!("lanes-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(&file, file_text("")).unwrap();
    let app = TestApp::with(Opts {
        env: vec![
            ("LANES_TOKENS_FILE".into(), file.display().to_string()),
            ("LANES_API_TOKEN".into(), ADMIN.into()),
            ("LANES_PROTECT_READS".into(), "true".into()),
        ],
        read_token: Some(ADMIN.into()),
        ..Opts::default()
    })
    .await;
    let call = |method: reqwest::Method, path: String, token: Option<&str>, body: Option<Value>| {
        let mut req = app.http.request(method, format!("{}{path}", app.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or_default())
        }
    };
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    // Submit: ci may, ops may not (403 with the scope), nobody without a known token (401).
    let long = json!({"task": "sleep", "args": {"ms": 30_000}, "resources": ["r"]});
    let (status, body) = call(post.clone(), "/jobs".into(), Some(CI), Some(long)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        post.clone(),
        "/jobs".into(),
        Some(OPS),
        Some(json!({"task": "noop"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("lacks the scope `submit`"),
        "{body}"
    );
    for token in [None, Some("not-a-token")] {
        let (status, _) = call(
            post.clone(),
            "/jobs".into(),
            token,
            Some(json!({"task": "noop"})),
        )
        .await;
        assert_eq!(status, 401);
    }
    // Reads need `read`: ci and ops have it, exec has not.
    let (status, _) = call(get.clone(), format!("/jobs/{id}"), Some(EXEC), None).await;
    assert_eq!(status, 403);
    // Cancel needs `operate`: ci is refused, ops cancels.
    let cancel = format!("/jobs/{id}/cancel");
    let (status, body) = call(post.clone(), cancel.clone(), Some(CI), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`operate`"),
        "{body}"
    );
    let (status, body) = call(post.clone(), cancel, Some(OPS), None).await;
    assert!(status == 200 || status == 202, "{body}");
    // Reports need `execute`.
    let report = json!({"attempt": 1, "progress": 5});
    let (status, _) = call(
        reqwest::Method::PATCH,
        format!("/jobs/{id}"),
        Some(CI),
        Some(report.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        reqwest::Method::PATCH,
        format!("/jobs/{id}"),
        Some(EXEC),
        Some(report),
    )
    .await;
    assert_ne!(status, 403, "exec may report");

    // The job says who submitted it and who canceled it; AMQP submits say so too.
    let job = eventually(
        Duration::from_secs(30),
        "the job to be canceled",
        || async {
            let (_, job) = call(get.clone(), format!("/jobs/{id}"), Some(OPS), None).await;
            (job["state"] == "canceled").then_some(job)
        },
    )
    .await;
    assert_eq!(job["submitted_by"], "ci", "{job}");
    assert_eq!(job["steers"][0]["action"], "cancel", "{job}");
    assert_eq!(job["steers"][0]["by"], "ops", "{job}");
    app.publish(&submit("noop", json!(null), &[]), Some("over-amqp"))
        .await;
    let amqp_id = lanes::protocol::job_id_from_message_id("over-amqp");
    let job = eventually(
        Duration::from_secs(30),
        "the AMQP submit to be recorded",
        || async {
            let (status, job) =
                call(get.clone(), format!("/jobs/{amqp_id}"), Some(ADMIN), None).await;
            (status == 200).then_some(job)
        },
    )
    .await;
    assert_eq!(job["submitted_by"], "amqp", "{job}");

    // SIGHUP reads the file again: a new token works; a broken file keeps what was loaded.
    let fresh = lanes::tokens::new_token();
    std::fs::write(
        &file,
        file_text(&format!("new submit {}\n", hash_line(&fresh))),
    )
    .unwrap();
    app.signal_server("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = call(
            post.clone(),
            "/jobs".into(),
            Some(&fresh),
            Some(json!({"task": "noop"})),
        )
        .await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 401);
        assert!(Instant::now() < deadline, "the new token was never taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&file, "broken line\n").unwrap();
    app.signal_server("HUP");
    eventually(
        Duration::from_secs(10),
        "the broken file to be reported",
        || async {
            let log = app.process_log("server");
            log.contains("API tokens not reloaded").then_some(())
        },
    )
    .await;
    let (status, _) = call(
        post,
        "/jobs".into(),
        Some(&fresh),
        Some(json!({"task": "noop"})),
    )
    .await;
    assert_eq!(status, 202, "the tokens loaded before stay");
    assert!(
        !app.process_log("server").contains(&fresh),
        "no token in the logs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn token_new_prints_a_token_once_and_a_line_the_file_takes() {
    let out = std::process::Command::new(TestApp::lanes_binary())
        .args(["token", "new", "ci", "--scopes", "submit,read"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once; give it to its holder): "))
        .unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("line for LANES_TOKENS_FILE (then SIGHUP the server): "))
        .unwrap();
    assert!(
        !line.contains(token),
        "the file holds the hash, not the token"
    );
    let tokens = lanes::tokens::Tokens::parse(line).unwrap();
    assert_eq!(tokens.holder(token).unwrap().name, "ci");
    let bad = std::process::Command::new(TestApp::lanes_binary())
        .args(["token", "new", "ci", "--scopes", "write"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope `write`"));
}
