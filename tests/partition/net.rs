//! A small network of the test's own: network namespaces as hosts, each with a veth into a
//! bridge in a hub namespace, addresses from the benchmarking range 198.18.0.0/24 and no
//! route out. RabbitMQ (AMQP and management) and PostgreSQL, which listen on the machine's
//! loopback, are reached at the hub's address through relays that cross namespaces over
//! Unix sockets (`socat`), so no address is ever given to the machine's own network.
//! Partitions are `nft` rules inside a host's namespace that drop its packets to or from a
//! service. Everything is torn down when the value is dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// The hub's address, where hosts reach the services.
pub const HUB: &str = "198.18.0.1";

/// A service the hosts reach through the hub.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    pub name: &'static str,
    pub port: u16,
}

pub const AMQP: Service = Service {
    name: "amqp",
    port: 5672,
};
pub const MANAGEMENT: Service = Service {
    name: "management",
    port: 15672,
};
pub const POSTGRES: Service = Service {
    name: "postgres",
    port: 5432,
};

/// Which way of a host's traffic with a service is dropped.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// The host's packets to the service.
    Outbound,
    /// The service's packets to the host.
    Inbound,
    Both,
}

pub struct Net {
    tag: String,
    hosts: Vec<String>,
    relays: Vec<Child>,
    dir: PathBuf,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// A hub and `hosts` hosts (198.18.0.2, .3, …), with relays to `services`.
    pub fn new(hosts: usize, services: &[Service]) -> Net {
        let tag = format!("lanes{}", std::process::id());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("net-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut net = Net {
            hosts: Vec::new(),
            relays: Vec::new(),
            dir,
            tag,
        };
        let hub = net.hub();
        run(&["ip", "netns", "add", &hub]);
        run(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB}/24"),
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let host = format!("{}-h{i}", net.tag);
            run(&["ip", "netns", "add", &host]);
            net.hosts.push(host.clone());
            let port = format!("p{i}");
            run(&[
                "ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &host,
            ]);
            run(&[
                "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
            ]);
            let addr = format!("198.18.0.{}/24", i + 2);
            run(&["ip", "-n", &host, "addr", "add", &addr, "dev", "eth0"]);
            run(&["ip", "-n", &host, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &host, "link", "set", "lo", "up"]);
        }
        for s in services {
            net.relay(*s);
        }
        net
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// Host `i`'s namespace.
    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// `HUB:port` relayed to the machine's `127.0.0.1:port`: one `socat` on the machine side
    /// of a Unix socket, one in the hub on the other.
    fn relay(&mut self, s: Service) {
        let sock = self.dir.join(format!("{}.sock", s.name));
        let machine = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork,unlink-early", sock.display()))
            .arg(format!("TCP:127.0.0.1:{}", s.port))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.relays.push(machine);
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let hub = Command::new("ip")
            .args(["netns", "exec", &self.hub(), "socat"])
            .arg(format!("TCP-LISTEN:{},bind={HUB},fork,reuseaddr", s.port))
            .arg(format!("UNIX-CONNECT:{}", sock.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.relays.push(hub);
    }

    /// A command that runs in host `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.host(i), program]);
        cmd
    }

    /// Drops host `i`'s traffic with `service` in `direction` until `heal`.
    pub fn partition(&self, i: usize, service: Service, direction: Direction) {
        let port = service.port;
        let mut rules = String::from(
            "table inet partition {\n chain out { type filter hook output priority 0; }\n \
             chain in { type filter hook input priority 0; }\n}\n",
        );
        if matches!(direction, Direction::Outbound | Direction::Both) {
            rules += &format!("add rule inet partition out ip daddr {HUB} tcp dport {port} drop\n");
        }
        if matches!(direction, Direction::Inbound | Direction::Both) {
            rules += &format!("add rule inet partition in ip saddr {HUB} tcp sport {port} drop\n");
        }
        let file = self.dir.join(format!("rules-{i}.nft"));
        std::fs::write(&file, rules).unwrap();
        self.nft(i, &["-f", &file.display().to_string()]);
    }

    /// Lifts every partition of host `i`.
    pub fn heal(&self, i: usize) {
        self.nft(i, &["delete", "table", "inet", "partition"]);
    }

    /// Runs `nft ARGS` in host `i`'s namespace.
    fn nft(&self, i: usize, args: &[&str]) {
        let out = self.command(i, "nft").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "nft {args:?} in {}: {}",
            self.host(i),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The listeners; the children they forked end with their connections.
        for relay in &mut self.relays {
            let _ = relay.kill();
            let _ = relay.wait();
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.hub())) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
