//! The client commands' text output: tables and sentences a person reads at a terminal.

use serde_json::{json, Value};

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

pub fn jobs(jobs: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "{:<36}  {:<9}  {:<10}  {:>3}  {:<14}  RESOURCES",
        "ID", "STATE", "TASK", "ATT", "QUEUE"
    )];
    for j in jobs.as_array().into_iter().flatten() {
        out.push(format!(
            "{:<36}  {:<9}  {:<10}  {:>3}  {:<14}  {}",
            j["id"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            j["task"].as_str().unwrap_or(""),
            j["attempts"],
            j["queue"].as_str().unwrap_or("-"),
            strings(&j["resources"]).join(","),
        ));
    }
    out
}

/// One job: its record, then why it waits, in words.
pub fn job(job: &Value) -> Vec<String> {
    let mut out = vec![serde_json::to_string_pretty(job).unwrap_or_default()];
    out.extend(why_waiting(job));
    out
}

pub fn workers(workers: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "{:<16}  {:<20}  {:>7}  {:>8}  {:>7}  LANES",
        "WORKER", "HOST", "PID", "RUNNING", "HB AGE"
    )];
    for w in workers.as_array().into_iter().flatten() {
        out.push(format!(
            "{:<16}  {:<20}  {:>7}  {:>8}  {:>5}ms  {}{}",
            w["id"].as_str().unwrap_or(""),
            w["host"].as_str().unwrap_or("?"),
            w["pid"],
            w["running"].as_array().map_or(0, Vec::len),
            w["heartbeat_age_ms"],
            strings(&w["lanes"]).join(","),
            if w["draining"] == json!(true) {
                " (draining)"
            } else {
                ""
            },
        ));
    }
    out
}

pub fn queues(q: &Value) -> Vec<String> {
    let mut out = vec![
        format!(
            "waiting: {}  reserved resources: {}",
            q["waiting"], q["reserved_resources"]
        ),
        format!("{:<24}  {:>10}  OWNER", "QUEUE", "UNFINISHED"),
    ];
    for l in q["lanes"].as_array().into_iter().flatten() {
        out.push(format!(
            "{:<24}  {:>10}  {}",
            l["queue"].as_str().unwrap_or(""),
            l["unfinished"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            l["owner"].as_str().unwrap_or("-"),
        ));
    }
    out
}

/// A waiting or queued job's `blocked_by`, in words: "waits for 3f2a1c0d… (running on
/// w-9c1e…, lane lanes.q.4) on repo:42".
pub fn why_waiting(job: &Value) -> Vec<String> {
    if job["state"] == "scheduled" {
        let at = job["run_at"].as_str().unwrap_or("?");
        return vec![format!(
            "scheduled: joins its resources' order at {at}{}",
            until(at).map(|d| format!(" (in {d})")).unwrap_or_default()
        )];
    }
    let Some(by) = job["blocked_by"].as_array() else {
        return Vec::new();
    };
    let estimate = job["estimated_start"].as_str().map(|at| match until(at) {
        Some(d) => format!("estimated start: {at} (in {d})"),
        None => format!("estimated start: {at} (any moment)"),
    });
    let held = held(&job["held"]);
    if by.is_empty() && held.is_none() {
        let mut out = vec!["next in line: nothing holds it back".to_owned()];
        out.extend(estimate);
        return out;
    }
    let mut lines: Vec<String> = by
        .iter()
        .map(|b| {
            let short: String = b["id"].as_str().unwrap_or("?").chars().take(13).collect();
            let state = b["state"].as_str().unwrap_or("?");
            let mut whose = state.to_owned();
            if let Some(w) = b["worker"].as_str().filter(|_| state == "running") {
                whose = format!("{state} on {w}");
            }
            if let Some(lane) = b["lane"].as_str() {
                whose = format!("{whose}, lane {lane}");
            }
            match b["resource"].as_str() {
                Some(r) => format!("waits for {short}… ({whose}) on {r}"),
                None => format!("waits for {short}… ({whose}), ahead in its lane"),
            }
        })
        .collect();
    lines.extend(held);
    lines.extend(estimate);
    lines
}

/// A limited resource's reason, in words, with how long until a rate lets it go.
fn held(h: &Value) -> Option<String> {
    let words = lanes::limit::held_in_words(h)?;
    let left = h["until"].as_str().and_then(until);
    Some(match left {
        Some(d) => format!("{words} (in {d})"),
        None => words,
    })
}

/// How long until `at` (RFC 3339), to the second; None once it has passed.
fn until(at: &str) -> Option<String> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let left = (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()?;
    Some(humantime::format_duration(std::time::Duration::from_secs(left.as_secs())).to_string())
}

/// Limited resources: their slots and rate.
pub fn limits(all: &Value) -> Vec<String> {
    let mut out = vec![format!("{:<32}  {:>6}  RATE", "RESOURCE", "SLOTS")];
    for l in all.as_array().into_iter().flatten() {
        let rate = serde_json::from_value::<lanes::limit::Rate>(l["rate"].clone())
            .map_or_else(|_| "-".to_owned(), |r| r.to_string());
        out.push(format!(
            "{:<32}  {:>6}  {rate}",
            l["resource"].as_str().unwrap_or(""),
            l["slots"].as_u64().unwrap_or(1),
        ));
    }
    out
}

pub fn schedules(all: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "{:<24}  {:<16}  {:<14}  {:<12}  {:<25}  STATE",
        "NAME", "CRON", "TZ", "TASK", "NEXT"
    )];
    for s in all.as_array().into_iter().flatten() {
        out.push(format!(
            "{:<24}  {:<16}  {:<14}  {:<12}  {:<25}  {}",
            s["name"].as_str().unwrap_or(""),
            s["cron"].as_str().unwrap_or(""),
            s["tz"].as_str().unwrap_or(""),
            s["task"].as_str().unwrap_or(""),
            s["next"][0].as_str().unwrap_or("-"),
            if s["paused"] == json!(true) {
                "paused"
            } else {
                "active"
            },
        ));
    }
    out
}

/// One schedule: its definition, its coming ticks and its latest jobs.
pub fn schedule(s: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "{}: `{}` in {}, task {}{}",
        s["name"].as_str().unwrap_or("?"),
        s["cron"].as_str().unwrap_or("?"),
        s["tz"].as_str().unwrap_or("?"),
        s["task"].as_str().unwrap_or("?"),
        if s["paused"] == json!(true) {
            " (paused)"
        } else {
            ""
        },
    )];
    for next in s["next"].as_array().into_iter().flatten() {
        out.push(format!("  next {}", next.as_str().unwrap_or("?")));
    }
    for j in s["jobs"].as_array().into_iter().flatten() {
        out.push(format!(
            "  job  {}  {}  {}",
            j["run_at"].as_str().unwrap_or("?"),
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
        ));
    }
    out
}
