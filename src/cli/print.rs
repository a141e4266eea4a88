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
    let Some(by) = job["blocked_by"].as_array() else {
        return Vec::new();
    };
    if by.is_empty() {
        return vec!["next in line: nothing holds it back".to_owned()];
    }
    by.iter()
        .map(|b| {
            let short: String = b["id"].as_str().unwrap_or("?").chars().take(8).collect();
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
        .collect()
}
