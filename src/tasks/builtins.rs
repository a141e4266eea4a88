//! The small built-in tasks: `sleep` (with progress) and `fail` (on purpose, or by panicking),
//! for demos, tests and benchmarks. `noop` and `echo` are one-liners in the registry.

use super::{Ctx, TaskResult};
use serde_json::{json, Value};
use std::time::Duration;

fn arg_u64(args: &Value, key: &str) -> Option<u64> {
    args.get(key).and_then(Value::as_u64)
}

/// `sleep {"ms": N}`: waits N milliseconds, reporting progress on long sleeps.
pub async fn sleep(ctx: Ctx, args: Value) -> TaskResult {
    let ms = arg_u64(&args, "ms").ok_or("`sleep` needs {\"ms\": <milliseconds>}")?;
    let steps: u64 = if ms >= 400 { 4 } else { 1 };
    for step in 1..=steps {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms / steps)) => {}
            _ = ctx.cancelled().cancelled() => return Err("canceled".into()),
        }
        if steps > 1 {
            ctx.progress((step * 100 / steps) as f32, Some("sleeping"));
        }
    }
    Ok(json!({ "slept_ms": ms }))
}

/// `fail {"message": M, "times": N, "panic": bool}`: fails with M (on the first N attempts only,
/// when N is given); with `panic`, panics instead, to show that a panic fails only its task.
pub async fn fail(ctx: Ctx, args: Value) -> TaskResult {
    let message = args
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("failed on purpose")
        .to_owned();
    if let Some(times) = arg_u64(&args, "times") {
        if ctx.attempt() as u64 > times {
            return Ok(json!({ "succeeded_on_attempt": ctx.attempt() }));
        }
    }
    if args.get("panic").and_then(Value::as_bool) == Some(true) {
        panic!("{message}");
    }
    Err(message.into())
}
