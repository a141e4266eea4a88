//! `submit --wait`: follows a job to its end. On a terminal a progress bar shows its state,
//! percent and message; otherwise (a pipe, a log) one line per change, on stderr.

use super::error::CliError;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::{io::IsTerminal, time::Duration};

/// Polls the job (`get` reads its record) until it ends, or until `limit` has passed;
/// returns its final record.
pub async fn follow<F, Fut>(id: &str, get: F, limit: Option<Duration>) -> Result<Value, CliError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Value, CliError>>,
{
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(100);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {pos:>3}% {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last = String::new();
    let began = tokio::time::Instant::now();
    loop {
        match get().await {
            Ok(job) => {
                let state = job["state"].as_str().unwrap_or("?").to_owned();
                let percent = job["progress"]["percent"].as_f64();
                let message = job["progress"]["message"].as_str().unwrap_or("");
                let line = match percent {
                    Some(p) => format!("{state} {p:.0}% {message}"),
                    None => state.clone(),
                };
                match &bar {
                    Some(bar) => {
                        bar.set_position(percent.unwrap_or(0.0) as u64);
                        bar.set_message(format!("{state} {message}"));
                    }
                    None if line != last => eprintln!("  {id}: {line}"),
                    None => {}
                }
                last = line;
                if matches!(state.as_str(), "completed" | "failed" | "canceled") {
                    if let Some(bar) = bar {
                        if state == "completed" {
                            bar.set_position(100);
                        }
                        bar.finish_with_message(state);
                    }
                    return Ok(job);
                }
            }
            // Not recorded by the Dispatcher yet.
            Err(CliError::Api { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        if let Some(limit) = limit.filter(|l| began.elapsed() >= *l) {
            if let Some(bar) = bar {
                bar.abandon_with_message("still waiting; giving up");
            }
            return Err(CliError::WaitTimedOut {
                id: id.to_owned(),
                state: last
                    .split(' ')
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("submitted")
                    .to_owned(),
                waited: humantime::format_duration(limit).to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
