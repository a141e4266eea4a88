//! The task handlers a worker offers, by name. A handler is async (`register`), typed with
//! serde (`register_typed`: its args are parsed into a type, its output serialized), or
//! blocking (`register_blocking`: it runs on the worker's blocking pool, see `ctx`).

use super::{builtins, exec, probe, webhook, Ctx};
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::{collections::BTreeMap, future::Future, sync::Arc};

/// What a handler returns: a JSON result, or an error whose text is recorded on the job.
pub type TaskResult = Result<Value, Box<dyn std::error::Error + Send + Sync>>;

type Handler = Arc<dyn Fn(Ctx, Value) -> BoxFuture<'static, TaskResult> + Send + Sync>;

/// An error that another attempt cannot mend (args that do not parse, say): the task fails at
/// once instead of using up its attempts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub String);

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

    /// The built-in tasks with the settings of a worker: `exec` limited to
    /// `LANES_EXEC_ALLOW`, `webhook` to `LANES_WEBHOOK_ALLOW`, calling back to `LANES_API_URL`,
    /// `probe` writing under `LANES_PROBE_DIR`.
    /// HTTPS trusts `trust`'s certificates beside the system's.
    pub fn for_worker(cfg: &crate::config::WorkerConfig, trust: &crate::tls::Trust) -> Self {
        let mut r = Registry::with_builtins(cfg.exec_allow.clone());
        let token = cfg.callback_token.clone().filter(|t| !t.is_empty());
        let hook =
            webhook::Webhook::new(cfg.webhook_allow.clone(), cfg.api_url.clone(), token, trust)
                .signing_with(cfg.webhook_secret.clone());
        r.add_webhook(hook);
        let probe_dir = cfg.probe_dir.clone();
        r.register_typed("probe", move |ctx, args| {
            probe::probe(probe_dir.clone(), ctx, args)
        });
        r
    }

    /// Registers the `webhook` task (see `webhook`): it may post to URLs that start with one
    /// of `allow`; executors report to `api_url`'s `/jobs/{id}`, which the task reads with
    /// `token` when the API wants one.
    pub fn register_webhook(&mut self, allow: Vec<String>, api_url: String, token: Option<String>) {
        let trust = crate::tls::Trust::default();
        self.add_webhook(webhook::Webhook::new(allow, api_url, token, &trust));
    }

    fn add_webhook(&mut self, hook: webhook::Webhook) {
        let hook = Arc::new(hook);
        self.register("webhook", move |ctx, args| hook.clone().run(ctx, args));
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

    /// Registers a handler whose args are parsed into `A` (serde) and whose output `O` is
    /// serialized. Args that do not parse fail the task at once, with serde's reason.
    pub fn register_typed<A, O, E, F, Fut>(&mut self, name: &str, handler: F)
    where
        A: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let task = name.to_owned();
        self.register(name, move |ctx, args| {
            let parsed = parse_args::<A>(&task, args);
            let handler = handler.clone();
            async move {
                let output = handler(ctx, parsed?).await.map_err(Into::into)?;
                Ok(serde_json::to_value(output)?)
            }
        });
    }

    /// Registers a blocking handler (synchronous I/O, a long computation): it runs on the
    /// worker's blocking pool (`LANES_BLOCKING_THREADS`), never on the async runtime. It sees
    /// cancellation through `Ctx::is_cancelled` and reports progress as any handler does.
    pub fn register_blocking<F>(&mut self, name: &str, handler: F)
    where
        F: Fn(Ctx, Value) -> TaskResult + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        self.register(name, move |ctx: Ctx, args| {
            let handler = handler.clone();
            let on = ctx.clone();
            async move { on.run_blocking(move || handler(ctx, args)).await }
        });
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

/// A task's args as `A`, or a permanent failure that says why not.
fn parse_args<A: DeserializeOwned>(task: &str, args: Value) -> Result<A, Permanent> {
    serde_json::from_value(args).map_err(|e| Permanent(format!("invalid args for `{task}`: {e}")))
}
