//! The README cannot drift from the product: this runs its quick start (`scripts/demo.sh`, with
//! this build's binary) and then, against that deployment and in the README's order, every
//! block marked `sh test` or `python test`, checking the `text output` block that follows one.
//!
//! The blocks are run as written, with two changes a reader makes too: the API's address
//! (`http://127.0.0.1:8080`) becomes the test's own, and `lanes` is this build's binary. The
//! prefix, database and broker come from the environment, as the CLI and the Python client
//! read them.

use crate::helpers::{eventually, Opts, TestApp, AMQP_URL};
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

/// A block of the README to run.
#[derive(Debug, PartialEq)]
struct Block {
    language: String,
    code: String,
    /// The line of its opening fence.
    line: usize,
    /// The `text output` block right after it.
    expected: Option<String>,
}

/// The `sh test` and `python test` blocks of a markdown text, in order.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut lines = markdown.lines().enumerate().peekable();
    let mut last_was_tested = false;
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            if !line.trim().is_empty() {
                last_was_tested = false;
            }
            continue;
        };
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        let words: Vec<&str> = info.split_whitespace().collect();
        match words.as_slice() {
            [language @ ("sh" | "python"), "test"] => {
                out.push(Block {
                    language: language.to_string(),
                    code: body,
                    line: n + 1,
                    expected: None,
                });
                last_was_tested = true;
                continue;
            }
            ["text", "output"] if last_was_tested => {
                out.last_mut().expect("a tested block").expected = Some(body);
            }
            _ => {}
        }
        last_was_tested = false;
    }
    out
}

/// Whether every expected line appears in `output`, in order (other lines may come between);
/// `<...>` in an expected line stands for any text.
fn shows(output: &str, expected: &str) -> Result<(), String> {
    let mut got = output.lines();
    'expected: for want in expected.lines().filter(|l| !l.trim().is_empty()) {
        for line in got.by_ref() {
            if line_matches(line.trim_end(), want.trim_end()) {
                continue 'expected;
            }
        }
        return Err(format!("no line `{want}` (in order) in:\n{output}"));
    }
    Ok(())
}

fn line_matches(line: &str, pattern: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('<') {
        match rest[open..].find('>') {
            Some(close) => {
                parts.push(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    parts.push(rest);
    if parts.len() == 1 {
        return line == pattern;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut at = first.len();
    let end = line.len() - last.len();
    for middle in &parts[1..parts.len() - 1] {
        match line[at..end].find(middle) {
            Some(i) => at += i + middle.len(),
            None => return false,
        }
    }
    true
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kills a process group when dropped: a script's children go with it.
struct Group(u32);

impl Group {
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal("KILL");
    }
}

/// Runs one block; its output, or why it failed.
async fn run(block: &Block, app: &TestApp, python: &Path) -> Result<String, String> {
    let code = block.code.replace("http://127.0.0.1:8080", &app.base);
    let stem = std::env::temp_dir().join(format!("{}-readme-{}", app.name, block.line));
    let (program, file) = match block.language.as_str() {
        "sh" => {
            let path = stem.with_extension("sh");
            // Background processes of the block end with it.
            let text = format!(
                "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n{code}"
            );
            std::fs::write(&path, text).unwrap();
            (PathBuf::from("bash"), path)
        }
        _ => {
            let path = stem.with_extension("py");
            std::fs::write(&path, &code).unwrap();
            (python.to_owned(), path)
        }
    };
    let bin = Path::new(TestApp::lanes_binary())
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(program);
    cmd.arg(&file)
        .current_dir(repository())
        .env("PATH", path)
        .env("LANES_API_URL", &app.base)
        .env("LANES_PREFIX", &app.prefix)
        .env("LANES_AMQP_URL", AMQP_URL)
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "warn")
        .env_remove("LANES_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().unwrap();
    let group = Group(child.id());
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    drop(group);
    let out = match out {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => return Err("did not end within 120 s".to_owned()),
    };
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "README line {}: {:?}\n{stdout}{stderr}",
        block.line, out.status
    );
    if !out.status.success() {
        return Err(format!("{:?}\n{stdout}{stderr}", out.status));
    }
    if let Some(expected) = &block.expected {
        shows(&stdout, expected)?;
    }
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_runs_as_written() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let tested = blocks(&readme);
    assert!(tested.len() >= 5, "the README's tested blocks: {tested:#?}");

    let python = Command::new(repository().join("clients/python/venv.sh"))
        .output()
        .unwrap();
    assert!(
        python.status.success(),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );
    let python = PathBuf::from(String::from_utf8(python.stdout).unwrap().trim());

    // The quick start, as a reader runs it, under this test's names.
    let app = TestApp::unstarted(Opts::default()).await;
    let mut demo = Command::new("bash");
    demo.arg(repository().join("scripts/demo.sh"))
        .env("LANES_BIN", TestApp::lanes_binary())
        .env("LANES_PREFIX", &app.prefix)
        .env("DATABASE_URL", app.database_url())
        .env("LANES_HTTP_ADDR", app.base.trim_start_matches("http://"))
        .env("LANES_AMQP_URL", AMQP_URL)
        .env("LANES_MAX_QUEUES", app.opts.max_queues.to_string())
        .env_remove("LANES_API_TOKEN")
        .stdin(Stdio::null())
        .process_group(0);
    app.log_to(&mut demo, "demo");
    let mut script = demo.spawn().unwrap();
    let group = Group(script.id());
    let log = app.log_path("demo");
    eventually(Duration::from_secs(180), "the demo to be up", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Ok(Some(status)) = script.try_wait() {
            panic!("scripts/demo.sh ended {status}:\n{text}");
        }
        std::future::ready(text.contains("lanes keeps running").then_some(()))
    })
    .await;
    let shown = std::fs::read_to_string(&log).unwrap();
    for step in ["the dashboard is at", "completed", "fail"] {
        assert!(shown.contains(step), "the demo shows `{step}`:\n{shown}");
    }

    let mut failed = Vec::new();
    for block in &tested {
        if let Err(why) = run(block, &app, &python).await {
            failed.push(format!("README line {}: {why}", block.line));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));

    // Ctrl-C: the demo drains lanes and ends.
    group.signal("INT");
    let ended = tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            if let Ok(Some(status)) = script.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await
    .unwrap();
    assert!(
        ended.is_some(),
        "the demo did not stop within 60 s of Ctrl-C"
    );
    let shown = std::fs::read_to_string(&log).unwrap();
    assert!(shown.contains("stopping lanes"), "{shown}");
}

#[test]
fn tested_blocks_and_their_output_are_found() {
    let md = "text\n```sh test\necho hi\n```\n\n```text output\nhi\n```\n```sh\nnot run\n```\n\
              ```python test\nprint(1)\n```\nprose\n```text output\nnot its output\n```\n";
    let found = blocks(md);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].code, "echo hi\n");
    assert_eq!(found[0].expected.as_deref(), Some("hi\n"));
    assert_eq!(found[0].line, 2);
    assert_eq!(found[1].language, "python");
    assert_eq!(found[1].expected, None, "prose came between");
}

#[test]
fn expected_lines_match_in_order_with_placeholders() {
    let out = "submitted 0193\nnoise\ncompleted {'a': 1}\n";
    assert!(shows(out, "completed <result>").is_ok());
    assert!(shows(out, "submitted <id>\ncompleted <...>").is_ok());
    assert!(
        shows(out, "completed <x>\nsubmitted <id>").is_err(),
        "order counts"
    );
    assert!(shows(out, "failed").is_err());
    assert!(line_matches("a 1 b 2 c", "a <n> b <m> c"));
    assert!(!line_matches("a 1 c", "a <n> b <m> c"));
    assert!(line_matches("exact", "exact"));
}
