//! The compose stack, really running in containers (podman, through its Docker-compatible
//! API, driven by docker-compose): `docker-compose.yml` with the test's override
//! `tests/containers/compose.host.yml` (stand-in RabbitMQ and PostgreSQL images built from
//! Debian's packages, the lanes image built from this build's binary, host networking on
//! ports of its own), merged by `docker-compose config` and stripped of published ports by
//! `tests/containers/host-network.py` (docker-compose refuses them on the host's network, and
//! an override can add to a list but not empty it). The server container becomes healthy and runs as a non-root user;
//! three workers come up; tasks submitted from the host (HTTP and the CLI) complete; a worker
//! stopped while they run drains and exits 0; scaling down to one worker loses no task.
//!
//! Its own target: it installs and configures podman if missing (`scripts/containers.sh`),
//! builds images (the first run takes a few minutes, later runs reuse the stand-ins), and
//! every wait is bounded.

use serde_json::{json, Value};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const API: &str = "http://127.0.0.1:18080";
const TOKEN: &str = "containers-test-token";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stack: podman's API service, the compose project, and a loop that runs the
/// containers' health checks (podman schedules them with systemd timers, and there is no
/// systemd here). Dropping it takes everything down.
struct Stack {
    project: String,
    socket: PathBuf,
    /// docker-compose.yml and the override, merged for host networking.
    file: PathBuf,
    service: Child,
    health: Arc<AtomicBool>,
}

impl Stack {
    fn start() -> Stack {
        let project = format!("lanesct{}", std::process::id());
        let socket = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{project}.sock"));
        let _ = std::fs::remove_file(&socket);
        let service = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "podman's API socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let health = Arc::new(AtomicBool::new(true));
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{project}.yml"));
        let merged = run(Command::new("sh")
            .arg("-c")
            .arg(
                "docker-compose -f docker-compose.yml -f tests/containers/compose.host.yml \
                 config | tests/containers/host-network.py",
            )
            .current_dir(ROOT)
            .env("LANES_API_TOKEN", TOKEN));
        std::fs::write(&file, merged).unwrap();
        let stack = Stack {
            project,
            socket,
            file,
            service,
            health: health.clone(),
        };
        let project = stack.project.clone();
        std::thread::spawn(move || {
            // Bounded: at most 20 minutes, or until the stack goes.
            for _ in 0..1200 {
                if !health.load(Ordering::Relaxed) {
                    break;
                }
                let names = Command::new("podman")
                    .args(["ps", "-q", "--filter"])
                    .arg(format!("label=com.docker.compose.project={project}"))
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                for id in names.split_whitespace() {
                    let _ = Command::new("podman")
                        .args(["healthcheck", "run", id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        stack
    }

    fn compose(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["300", "docker-compose", "-p", &self.project, "-f"])
            .arg(&self.file)
            .current_dir(ROOT)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("COMPOSE_HTTP_TIMEOUT", "300")
            .env("LANES_API_TOKEN", TOKEN);
        cmd
    }

    fn scale(&self, workers: usize) {
        run(self
            .compose()
            .args(["up", "-d", "--no-build", "--scale"])
            .arg(format!("worker={workers}")));
    }

    /// The ids of a service's running containers.
    fn running(&self, service: &str) -> Vec<String> {
        let out = run(Command::new("podman").args([
            "ps",
            "--format",
            "json",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]));
        let list: Vec<Value> = serde_json::from_str(&out).unwrap();
        list.iter()
            .filter_map(|c| c["Id"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "podman ps -a --filter label=com.docker.compose.project={p} -q | \
                     xargs -r -n1 sh -c 'echo \"--- $0\"; podman logs --tail 40 $0' >&2",
                    p = self.project
                ))
                .status();
        }
        let _ = self
            .compose()
            .args(["down", "-v", "--timeout", "10"])
            .status();
        self.health.store(false, Ordering::Relaxed);
        let _ = self.service.kill();
        let _ = self.service.wait();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.file);
    }
}

async fn get(http: &reqwest::Client, path: &str) -> Option<Value> {
    let resp = http
        .get(format!("{API}{path}"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(())?;
    resp.json().await.ok()
}

async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut ok: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    start.elapsed()
}

async fn live_workers(http: &reqwest::Client) -> usize {
    get(http, "/workers")
        .await
        .and_then(|w| w.as_array().map(Vec::len))
        .unwrap_or(0)
}

async fn states(http: &reqwest::Client) -> Vec<String> {
    get(http, "/jobs?limit=1000")
        .await
        .and_then(|j| j.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|j| j["state"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_runs_in_containers() {
    let started = Instant::now();
    let script = Path::new(ROOT).join("scripts/containers.sh");
    run(Command::new(&script).arg("setup"));
    run(Command::new(&script)
        .arg("images")
        .arg(env!("CARGO_BIN_EXE_lanes")));
    let prepared = started.elapsed();

    let stack = Stack::start();
    stack.scale(3);
    let http = reqwest::Client::new();
    let healthy = wait_for(
        "the server answers /healthz",
        Duration::from_secs(180),
        || async {
            get(&http, "/healthz")
                .await
                .is_some_and(|h| h["active"] == json!(true))
        },
    )
    .await;
    let server = stack.running("server").pop().expect("a server container");
    let uid = run(Command::new("podman").args(["exec", &server, "id", "-u"]));
    assert_ne!(uid.trim(), "0", "the lanes image runs as root");
    wait_for("three workers online", Duration::from_secs(120), || async {
        live_workers(&http).await == 3
    })
    .await;

    // From the host: 60 tasks over HTTP, one through the CLI, which waits for it.
    for i in 0..60 {
        let body =
            json!({"task": "sleep", "args": {"ms": 300}, "resources": [format!("r{}", i % 6)]});
        let resp = http
            .post(format!("{API}/jobs"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    }
    // While they run: one worker stopped as an operator would (SIGTERM, then its grace):
    // it drains and exits 0. Then compose scales the workers down to one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = stack.running("worker").pop().expect("a worker container");
    run(Command::new("podman").args(["stop", "--time", "30", &stopped]));
    let code =
        run(Command::new("podman").args(["inspect", "--format", "{{.State.ExitCode}}", &stopped]));
    let log = run(Command::new("sh")
        .arg("-c")
        .arg(format!("podman logs {stopped} 2>&1")));
    assert_eq!(
        code.trim(),
        "0",
        "the stopped worker did not exit cleanly: {log}"
    );
    assert!(
        log.contains("draining") && log.contains("worker stopped"),
        "{log}"
    );
    stack.scale(1);
    assert_eq!(stack.running("worker").len(), 1);
    let cli = run(Command::new(env!("CARGO_BIN_EXE_lanes"))
        .args([
            "submit",
            "echo",
            "--args",
            r#"{"from":"the host"}"#,
            "-r",
            "r0",
            "--wait",
        ])
        .env("LANES_API_URL", API)
        .env("LANES_API_TOKEN", TOKEN));
    // Exit 0 (5 would be a failed job) and the echoed arguments as its result.
    assert!(cli.contains("the host"), "{cli}");
    wait_for("every task completed", Duration::from_secs(120), || async {
        let s = states(&http).await;
        s.len() == 61 && s.iter().all(|s| s == "completed")
    })
    .await;
    assert_eq!(live_workers(&http).await, 1);
    let report = json!({
        "prepare_s": prepared.as_secs(),
        "healthy_after_up_s": healthy.as_secs(),
        "total_s": started.elapsed().as_secs(),
        "image_user": uid.trim(),
    });
    eprintln!("containers: {report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/containers.json"),
        report.to_string(),
    );
}
