//! What can be checked of the deployment files without a container engine: the compose file
//! validates, and the broker definitions give each role what it needs and no more.

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
    assert_eq!(publisher["configure"], "^$", "a publisher declares nothing");
    assert_eq!(publisher["read"], "^$", "a publisher reads nothing");
    let write = matcher(publisher["write"].as_str().unwrap());
    assert!(write("lanes") && !write("lanes.q.0") && !write("lanes.submit"));
    let worker = perm("lanes-worker");
    let read = matcher(worker["read"].as_str().unwrap());
    assert!(
        read("lanes.q.3") && !read("lanes.submit"),
        "a worker cannot read the submit queue"
    );
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
