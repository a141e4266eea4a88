//! A worker with tasks of its own: what a library user builds. It registers `resize` beside
//! the built-in tasks and runs `lanes::worker::run` with the same settings as `lanes worker`
//! (flags or `LANES_*` variables). Run it beside a `lanes server`:
//!
//! ```sh
//! cargo run --example custom_worker
//! lanes submit resize --args '{"width": 640}' --wait
//! ```

use clap::Parser;
use lanes::{
    config::{BrokerConfig, WorkerConfig},
    tasks::Registry,
};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    broker: BrokerConfig,
    #[command(flatten)]
    worker: WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lanes::telemetry::init();
    let mut registry = Registry::with_builtins(args.worker.exec_allow.clone());
    registry.register("resize", |ctx, input: Value| async move {
        let width = input
            .get("width")
            .and_then(Value::as_u64)
            .ok_or("`resize` needs {\"width\": <pixels>}")?;
        ctx.progress(50.0, Some("resizing"));
        Ok(json!({ "width": width, "attempt": ctx.attempt() }))
    });
    let shutdown = lanes::shutdown_on_signals();
    lanes::worker::run(&args.broker, &args.worker, Arc::new(registry), shutdown).await?;
    Ok(())
}
