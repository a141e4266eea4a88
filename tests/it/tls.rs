//! TLS on every connection, with real TLS: the test makes its own CA and a certificate for
//! `localhost`, serves the API over HTTPS with it, reaches RabbitMQ over `amqps://` through a
//! TLS listener of its own (socat in front of the machine's broker), PostgreSQL with
//! `sslmode=verify-full` (the machine's server, `ssl = on`), and hands `webhook` tasks to an
//! executor behind HTTPS, and fences through the management API over HTTPS. The CLI talks to
//! the HTTPS API. A wrong CA is refused, clearly.

use crate::{
    execlog::ExecLog,
    helpers::{free_port, submit, Opts, TestApp, PG_URL},
};
use serde_json::json;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A CA and a server certificate for `localhost` and 127.0.0.1, made with openssl.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Another CA, which signed nothing here.
    stranger: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs(dir: &Path) -> Certs {
    for ca in ["ca", "stranger"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-subj",
                &format!("/CN=lanes test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        stranger: dir.join("stranger.pem"),
    }
}

/// A TLS listener on a free port in front of `to` (127.0.0.1), killed when dropped.
struct Terminator(Child, u16);

impl Terminator {
    async fn start(certs: &Certs, to: u16) -> Terminator {
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},reuseaddr,fork,cert={},key={},verify=0",
                certs.cert.display(),
                certs.key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{to}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs (scripts/services.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Terminator(child, port)
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The certificate file of the machine's PostgreSQL, when it serves TLS for `localhost`.
async fn postgres_certificate() -> Option<PathBuf> {
    let pool = sqlx::PgPool::connect(&format!("{PG_URL}/postgres"))
        .await
        .ok()?;
    let on: (String,) = sqlx::query_as("SHOW ssl").fetch_one(&pool).await.ok()?;
    let file: (String,) = sqlx::query_as("SHOW ssl_cert_file")
        .fetch_one(&pool)
        .await
        .ok()?;
    (on.0 == "on").then(|| PathBuf::from(file.0))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_connection_speaks_tls() {
    let log = ExecLog::new("tls");
    let certs = make_certs(&log.path(""));
    let pg_cert = postgres_certificate()
        .await
        .expect("the machine's PostgreSQL serves TLS (ssl = on)");
    let amqps = Terminator::start(&certs, 5672).await;
    let management = Terminator::start(&certs, 15672).await;
    let amqp_url = format!("amqps://guest:guest@localhost:{}/%2f", amqps.1);
    let ca = certs.ca.display().to_string();
    let mut app = TestApp::with(Opts {
        workers: 0,
        server_amqp_url: Some(amqp_url.clone()),
        worker_amqp_url: Some(amqp_url.clone()),
        api_ca: Some(certs.ca.clone()),
        env: vec![
            ("LANES_CA_FILE".into(), ca.clone()),
            ("LANES_TLS_CERT".into(), certs.cert.display().to_string()),
            ("LANES_TLS_KEY".into(), certs.key.display().to_string()),
            (
                "LANES_MANAGEMENT_URL".into(),
                format!("https://guest:guest@localhost:{}", management.1),
            ),
        ],
        database_params: Some(format!(
            "sslmode=verify-full&sslrootcert={}",
            pg_cert.display()
        )),
        ..Opts::default()
    })
    .await;
    assert!(app.base.starts_with("https://"));
    // The new control plane fenced the ones before it through the management API, over HTTPS.
    let server_log = app.process_log("server");
    assert!(
        server_log.contains("this server is active")
            && !server_log.contains("could not fence the control planes before this one")
            && !server_log.contains("fencing of silent workers is off"),
        "{server_log}"
    );

    // The connections are what they claim: the broker sees TLS ones, PostgreSQL SSL ones.
    let db = app.db_name.clone();
    let ssl: Vec<(bool,)> = sqlx::query_as(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
    )
    .bind(&db)
    .fetch_all(
        &sqlx::PgPool::connect(&format!("{PG_URL}/postgres"))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let plain: Vec<_> = ssl.iter().filter(|(s,)| !s).collect();
    // The test's own pool reads the table in plain text; the server's connections are TLS.
    assert!(
        ssl.iter().any(|(s,)| *s),
        "no TLS connection to PostgreSQL: {ssl:?}"
    );
    assert!(plain.len() <= 1, "{plain:?}");

    // An executor behind HTTPS; workers over amqps that post to it and read the HTTPS API.
    let executor_port = free_port();
    let mut executor = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/executor.py"))
        .args(["--port", &executor_port.to_string(), "--api", &app.base])
        .arg("--log")
        .arg(log.path("log"))
        .arg("--lock-dir")
        .arg(log.path(""))
        .env("SSL_CERT_FILE", &certs.ca)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", executor_port)).is_err() {
        assert!(Instant::now() < deadline, "the executor did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let https_executor = Terminator::start(&certs, executor_port).await;
    let hook = format!("https://localhost:{}/", https_executor.1);
    app.opts
        .env
        .push(("LANES_WEBHOOK_ALLOW".into(), hook.clone()));
    app.opts
        .env
        .push(("LANES_API_URL".into(), app.base.clone()));
    app.start_worker();
    app.start_worker();
    app.wait_workers(2).await;

    let (status, _) = app
        .post_jobs(
            json!({"task": "echo", "args": "over https", "resources": ["a"]}).to_string(),
            None,
        )
        .await;
    assert_eq!(status, 202);
    app.publish(
        &submit("webhook", json!({"url": hook, "seconds": 0.1}), &["b"]),
        Some("hooked"),
    )
    .await;
    let rows = app.wait_completed(2, Duration::from_secs(60)).await;
    assert!(rows.iter().all(|r| r.state == "completed"), "{rows:?}");

    // The CLI over HTTPS: with the CA it reads the jobs; without it, the certificate is
    // refused and it says it cannot reach the API (exit 3).
    let cli = |ca: Option<&Path>| {
        let mut cmd = Command::new(TestApp::lanes_binary());
        cmd.args(["jobs", "-o", "json", "--api-url", &app.base])
            .env_remove("LANES_CA_FILE");
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.output().unwrap()
    };
    let out = cli(Some(&certs.ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(2), "{jobs}");
    let out = cli(None);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A worker that trusts another CA refuses the broker's certificate, and says why.
    let refused_log = log.path("refused.log");
    let mut refused = Command::new(TestApp::lanes_binary())
        .arg("worker")
        .env("LANES_AMQP_URL", &amqp_url)
        .env("LANES_PREFIX", &app.prefix)
        .env("LANES_CA_FILE", &certs.stranger)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&refused_log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&refused_log)
            .unwrap_or_default()
            .to_lowercase();
        let ended = refused.try_wait().unwrap().is_some();
        if text.contains("certificate") || ended || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = refused.kill();
    let _ = refused.wait();
    assert!(text.contains("certificate"), "{text}");

    let _ = executor.kill();
    let _ = executor.wait();
}
