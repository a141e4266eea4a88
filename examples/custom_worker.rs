//! A worker with tasks of its own: what a library user builds. Beside the built-in tasks it
//! registers `resize` (typed: its args parse into `Resize`, its output is `Resized`) and
//! `crunch` (blocking: it runs on the worker's blocking pool, `LANES_BLOCKING_THREADS`, so it
//! never holds up heartbeats or async tasks), then runs `lanes::worker::run` with the same
//! settings as `lanes worker` (flags or `LANES_*` variables). Run it beside a `lanes server`:
//!
//! ```sh
//! cargo run --example custom_worker
//! lanes submit resize --args '{"width": 640}' --wait
//! lanes submit crunch --args '{"ms": 2000}' --wait
//! ```

use clap::Parser;
use lanes::{
    config::{BrokerConfig, WorkerConfig},
    tasks::Registry,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    broker: BrokerConfig,
    #[command(flatten)]
    worker: WorkerConfig,
}

/// `resize`'s args: `{"width": 640}` or `{"width": 640, "height": 480}`.
#[derive(Deserialize)]
struct Resize {
    width: u32,
    height: Option<u32>,
}

#[derive(Serialize)]
struct Resized {
    width: u32,
    height: u32,
    attempt: i32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lanes::telemetry::init();
    let mut registry = Registry::with_builtins(args.worker.exec_allow.clone());
    registry.register_typed("resize", |ctx, r: Resize| async move {
        ctx.progress(50.0, Some("resizing"));
        let height = r.height.unwrap_or(r.width * 3 / 4);
        Ok::<_, std::io::Error>(Resized {
            width: r.width,
            height,
            attempt: ctx.attempt(),
        })
    });
    // Blocks its thread for `ms` (as a synchronous call or a computation would), reporting
    // progress and stopping early when the task is cancelled.
    registry.register_blocking("crunch", |ctx, args: Value| {
        let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(1000);
        let began = Instant::now();
        let mut rounds = 0u64;
        while began.elapsed() < Duration::from_millis(ms) {
            if ctx.is_cancelled() {
                return Err("cancelled".into());
            }
            std::thread::sleep(Duration::from_millis(50));
            rounds += 1;
            let done = began.elapsed().as_millis() as f32 / ms.max(1) as f32;
            ctx.progress(done * 100.0, None);
        }
        Ok(json!({ "rounds": rounds, "thread": format!("{:?}", std::thread::current().id()) }))
    });
    let shutdown = lanes::shutdown_on_signals();
    lanes::worker::run(&args.broker, &args.worker, Arc::new(registry), shutdown).await?;
    Ok(())
}
