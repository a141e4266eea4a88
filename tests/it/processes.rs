//! Starting, signalling and stopping a `TestApp`'s processes (a child module of `helpers`, loaded
//! by path like `talk`, so that it sees the app's private `command`).

use super::{free_port, TestApp};
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Sends `signal` to one process (never a group).
fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

impl TestApp {
    /// `lanes ROLE` in the network namespace `netns` (`ip netns exec`), with this app's
    /// environment and `env` on top.
    #[allow(dead_code)] // tests/partition.rs
    pub fn spawn_in(&self, netns: &str, role: &str, log: &str, env: &[(String, String)]) -> Child {
        let inner = self.command(role, log);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(inner.get_program())
            .args(inner.get_args())
            .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        self.log_to(&mut cmd, log);
        cmd.spawn().unwrap()
    }

    pub fn start_server(&mut self) {
        self.server = Some(self.command("server", "server").spawn().unwrap());
    }

    /// A second server (a standby while the first is active) on its own HTTP port.
    pub fn start_standby(&mut self) -> (Child, String) {
        let port = free_port();
        let mut cmd = self.command("server", "standby");
        cmd.env("LANES_HTTP_ADDR", format!("127.0.0.1:{port}"));
        (cmd.spawn().unwrap(), format!("http://127.0.0.1:{port}"))
    }

    /// The server process's pid.
    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().expect("a server runs").id()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the server process.
    pub fn signal_server(&self, signal: &str) {
        signal_pid(self.server_pid(), signal);
    }

    /// Starts a new worker in place of each one that has exited (a task killed it).
    pub fn replace_dead_workers(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            if self.workers[i].try_wait().unwrap().is_some() {
                let _ = self.workers.remove(i).wait();
                self.start_worker();
            } else {
                i += 1;
            }
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to worker `i`.
    pub fn signal_worker(&self, i: usize, signal: &str) {
        signal_pid(self.workers[i].id(), signal);
    }

    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill().unwrap();
            s.wait().unwrap();
        }
    }

    /// SIGKILLs worker `i`.
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].kill().unwrap();
        self.workers[i].wait().unwrap();
    }

    /// SIGTERMs worker `i` and waits (bounded) for it to exit; returns its exit code.
    pub async fn term_worker(&mut self, i: usize) -> Option<i32> {
        let pid = self.workers[i].id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..600 {
            if let Some(status) = self.workers[i].try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("worker {i} did not exit within 60 s of SIGTERM");
    }

    /// SIGTERMs the server and every worker at the same moment and waits (bounded) for all of
    /// them to exit; returns their exit codes, the server's first.
    pub async fn term_all(&mut self) -> Vec<Option<i32>> {
        let mut children: Vec<Child> = self.server.take().into_iter().collect();
        children.append(&mut self.workers);
        let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
        Command::new("kill")
            .arg("-TERM")
            .args(&pids)
            .status()
            .unwrap();
        let mut codes = Vec::new();
        for mut child in children {
            let mut code = None;
            for _ in 0..600 {
                if let Some(status) = child.try_wait().unwrap() {
                    code = Some(status.code());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let Some(code) = code else {
                let _ = child.kill();
                panic!("pid {} did not exit within 60 s of SIGTERM", child.id());
            };
            codes.push(code);
        }
        codes
    }

    /// Starts the example worker with tasks of its own (`examples/custom_worker.rs`, built by
    /// `cargo test --all-targets` or `cargo build --examples`).
    pub fn start_custom_worker(&mut self) {
        let lanes = PathBuf::from(env!("CARGO_BIN_EXE_lanes"));
        let example = lanes.with_file_name("examples").join("custom_worker");
        assert!(
            example.exists(),
            "{} is built by `cargo build --examples`",
            example.display()
        );
        let n = self.workers.len();
        // The environment `lanes worker` would get (the command itself is not run).
        let cmd = self.command("worker", &format!("custom{n}"));
        let mut custom = Command::new(example);
        custom.envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
        custom.stdin(Stdio::null());
        self.log_to(&mut custom, &format!("custom{n}"));
        self.workers.push(custom.spawn().unwrap());
    }

    /// Starts one `lanes worker --workers n` process (n workers in it).
    pub fn start_workers_process(&mut self, n: usize) {
        let i = self.workers.len();
        let child = self
            .command("worker", &format!("workers{i}"))
            .args(["--workers", &n.to_string()])
            .spawn()
            .unwrap();
        self.workers.push(child);
    }

    pub fn start_worker(&mut self) {
        let n = self.workers.len();
        let child = self
            .command("worker", &format!("worker{n}"))
            .spawn()
            .unwrap();
        self.workers.push(child);
    }

    /// Starts a worker that connects through `amqp_url` (say, a cluster's nodes in an order
    /// of its own) instead of the workers' URL.
    #[allow(dead_code)] // tests/cluster.rs
    pub fn start_worker_on(&mut self, amqp_url: &str) {
        let n = self.workers.len();
        let mut cmd = self.command("worker", &format!("worker{n}"));
        cmd.env("LANES_AMQP_URL", amqp_url);
        self.workers.push(cmd.spawn().unwrap());
    }
}
