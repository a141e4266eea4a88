//! What can be checked of the deployment files without a container engine: the compose file
//! validates, the broker definitions give each role what it needs and no more, and the binary
//! names the commit it was built from.

use serde_json::Value;

fn compose_config(token: Option<&str>) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = std::process::Command::new("docker-compose");
    cmd.args(["-f", &format!("{root}/docker-compose.yml"), "config"]);
    match token {
        Some(t) => cmd.env("LANES_API_TOKEN", t),
        None => cmd.env_remove("LANES_API_TOKEN"),
    };
    cmd.output()
        .expect("docker-compose is installed by scripts/services.sh")
}

#[test]
fn compose_file_validates_and_requires_a_token() {
    let out = compose_config(Some("t0ken"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("LANES_PROTECT_READS"), "reads are protected");
    // Without a token compose refuses, saying why.
    let out = compose_config(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LANES_API_TOKEN"));
}

#[test]
fn broker_definitions_are_least_privilege() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/broker/definitions.json"
    ))
    .unwrap();
    let defs: Value = serde_json::from_str(&text).unwrap();
    let perm = |user: &str| {
        defs["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["user"] == user)
            .unwrap_or_else(|| panic!("permissions for {user}"))
            .clone()
    };
    let publisher = perm("lanes-publisher");
    // A publisher declares and reads only server-named queues (its replies).
    for what in ["configure", "read"] {
        let may = matcher(publisher[what].as_str().unwrap());
        assert!(may("amq.gen-abc") && !may("lanes") && !may("lanes.q.0") && !may("lanes.submit"));
    }
    let write = matcher(publisher["write"].as_str().unwrap());
    assert!(write("lanes") && !write("lanes.q.0") && !write("lanes.submit"));
    assert!(
        !write("amq.default"),
        "a publisher cannot publish through the default exchange"
    );
    let worker = perm("lanes-worker");
    let read = matcher(worker["read"].as_str().unwrap());
    assert!(
        read("lanes.q.3") && !read("lanes.submit") && !read("lanes.events"),
        "a worker cannot read the submit queue or the events"
    );
    let write = matcher(worker["write"].as_str().unwrap());
    assert!(write("lanes.worker-events") && write("lanes.worker.w-1.ab"));
    for other in [
        "amq.default",
        "lanes",
        "lanes.control",
        "lanes.q.0",
        "lanes.events",
    ] {
        assert!(!write(other), "a worker cannot write to {other}");
    }
    // For quorum queues the lower of policy and queue argument wins: a lower limit in the
    // policy would dead-letter a lane message (leaving its job unfinished) before the
    // worker's own attempt accounting fails it.
    let lanes_policy = defs["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lanes-lanes")
        .expect("a policy for the lanes");
    let limit = lanes_policy["definition"]["delivery-limit"].as_i64();
    assert!(
        limit.is_none_or(|l| l >= lanes::broker::DELIVERY_LIMIT),
        "policy delivery-limit {limit:?} is below the lanes' own {}",
        lanes::broker::DELIVERY_LIMIT
    );
}

fn matcher(pattern: &str) -> impl Fn(&str) -> bool {
    let re = regex::Regex::new(pattern).unwrap();
    move |name: &str| re.is_match(name)
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanes"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    assert!(
        text.starts_with(&format!("lanes {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    if let Some(head) = head {
        assert!(text.contains(&head), "{text} names {head}");
    }
}

/// `lanes up` whose workers cannot reach RabbitMQ stops and says why, rather than serving on
/// without workers (its submits would never run).
#[tokio::test(flavor = "multi_thread")]
async fn lanes_up_without_a_broker_stops_and_says_why() {
    let db = format!(
        "lanes_test_up_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let port = crate::helpers::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lanes"))
        .args(["up", "--workers", "2"])
        .env("LANES_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("DATABASE_URL", format!("{}/{db}", crate::helpers::PG_URL))
        .env("LANES_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("LANES_PREFIX", &db)
        .env_remove("LANES_API_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("lanes up ran on without its workers");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("a worker failed") && err.contains("cannot reach RabbitMQ"),
        "{err}"
    );
    if let Ok(pool) = sqlx::PgPool::connect(&format!("{}/postgres", crate::helpers::PG_URL)).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .execute(&pool)
            .await;
    }
}
