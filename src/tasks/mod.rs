//! Task handlers: the registry library users fill, the context a handler sees, and the
//! built-in tasks the `lanes` binary ships (`noop`, `echo`, `sleep`, `fail` in `builtins`;
//! `exec` in `exec`, which keeps a program's whole process tree inside its run).

mod builtins;
mod exec;

use crate::protocol::Progress;
use futures::future::BoxFuture;
use serde_json::Value;
use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a task stays frozen with its stopped worker before it is killed, by default.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);

/// What a handler returns: a JSON result, or an error whose text is recorded on the job.
pub type TaskResult = Result<Value, Box<dyn std::error::Error + Send + Sync>>;

type Handler = Arc<dyn Fn(Ctx, Value) -> BoxFuture<'static, TaskResult> + Send + Sync>;

/// What a running task can see and do.
#[derive(Clone)]
pub struct Ctx {
    job: Uuid,
    attempt: i32,
    progress: mpsc::UnboundedSender<(Uuid, Progress)>,
    cancel: CancellationToken,
    stop_grace: Duration,
}

impl Ctx {
    pub fn new(
        job: Uuid,
        attempt: i32,
        progress: mpsc::UnboundedSender<(Uuid, Progress)>,
        cancel: CancellationToken,
    ) -> Self {
        Ctx {
            job,
            attempt,
            progress,
            cancel,
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }

    /// How long the task may stay frozen with its stopped worker (SIGSTOP) before it is
    /// killed: past that the worker's lanes may already run elsewhere. The worker sets it to
    /// its `LANES_BROKER_SILENCE_MS`.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    pub fn stop_grace(&self) -> Duration {
        self.stop_grace
    }
    pub fn job_id(&self) -> Uuid {
        self.job
    }
    /// 1 for the first attempt.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }
    /// Reports progress (0–100) with an optional message; it shows in the job's `progress`.
    pub fn progress(&self, percent: f32, message: Option<&str>) {
        let p = Progress {
            percent: percent.clamp(0.0, 100.0),
            message: message.map(str::to_owned),
        };
        let _ = self.progress.send((self.job, p));
    }
    /// Cancelled when the task should stop early (the worker is going away).
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// Task handlers by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Handler>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in tasks; `exec_allow` lists the programs `exec` may run.
    pub fn with_builtins(exec_allow: Vec<String>) -> Self {
        let mut r = Registry::new();
        r.register("noop", |_, _| async { Ok(Value::Null) });
        r.register("echo", |_, args| async move { Ok(args) });
        r.register("sleep", builtins::sleep);
        r.register("fail", builtins::fail);
        let allow = Arc::new(exec_allow);
        r.register("exec", move |ctx, args| {
            exec::exec(ctx, args, allow.clone())
        });
        r
    }

    /// Registers `handler` under `name`, replacing any earlier one.
    pub fn register<F, Fut>(&mut self, name: &str, handler: F)
    where
        F: Fn(Ctx, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TaskResult> + Send + 'static,
    {
        let h: Handler = Arc::new(move |ctx, args| Box::pin(handler(ctx, args)));
        self.handlers.insert(name.to_owned(), h);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// Starts the handler of `name`, if there is one.
    pub fn call(
        &self,
        name: &str,
        ctx: Ctx,
        args: Value,
    ) -> Option<BoxFuture<'static, TaskResult>> {
        self.handlers.get(name).map(|h| h(ctx, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(attempt: i32) -> (Ctx, mpsc::UnboundedReceiver<(Uuid, Progress)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Ctx::new(Uuid::nil(), attempt, tx, CancellationToken::new()),
            rx,
        )
    }

    #[tokio::test]
    async fn builtins_behave() {
        let r = Registry::with_builtins(vec!["sh".into()]);
        let (c, _) = ctx(1);
        assert_eq!(
            r.call("echo", c.clone(), json!({"a": 1}))
                .unwrap()
                .await
                .unwrap(),
            json!({"a": 1})
        );
        assert!(r.call("nope", c.clone(), Value::Null).is_none());
        let err = r
            .call("fail", c.clone(), json!({"message": "boom"}))
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        let (c3, _) = ctx(3);
        assert!(r
            .call("fail", c3, json!({"times": 2}))
            .unwrap()
            .await
            .is_ok());
        let (c, mut rx) = ctx(1);
        let out = r
            .call(
                "exec",
                c,
                json!({"program": "sh", "args": ["-c", "echo ::progress 50 half; echo hi"]}),
            )
            .unwrap()
            .await
            .unwrap();
        assert_eq!(out["stdout"], "hi\n");
        assert_eq!(rx.recv().await.unwrap().1.percent, 50.0);
        let (c, _) = ctx(1);
        assert!(r
            .call("exec", c, json!({"program": "rm"}))
            .unwrap()
            .await
            .is_err());
    }
}
