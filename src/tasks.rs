//! Task handlers: the registry library users fill, the context a handler sees, and the
//! built-in tasks the `lanes` binary ships (`noop`, `echo`, `sleep`, `fail`, `exec`).

use crate::protocol::Progress;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
        }
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
        r.register("sleep", sleep);
        r.register("fail", fail);
        let allow = Arc::new(exec_allow);
        r.register("exec", move |ctx, args| exec(ctx, args, allow.clone()));
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

fn arg_u64(args: &Value, key: &str) -> Option<u64> {
    args.get(key).and_then(Value::as_u64)
}

/// `sleep {"ms": N}`: waits N milliseconds, reporting progress on long sleeps.
async fn sleep(ctx: Ctx, args: Value) -> TaskResult {
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
async fn fail(ctx: Ctx, args: Value) -> TaskResult {
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

/// `exec {"program": P, "args": [...]}`: runs an allow-listed program. Lines of the form
/// `::progress N message` on its stdout report progress; the rest of its output is the result.
async fn exec(ctx: Ctx, args: Value, allow: Arc<Vec<String>>) -> TaskResult {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let program = args
        .get("program")
        .and_then(Value::as_str)
        .ok_or("`exec` needs {\"program\": ..., \"args\": [...]}")?;
    if !allow.iter().any(|p| p == program) {
        return Err(format!("program `{program}` is not in LANES_EXEC_ALLOW").into());
    }
    let argv: Vec<String> = match args.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or("`args` must be strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`args` must be a list of strings".into()),
    };
    let mut child = tokio::process::Command::new(program)
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut output = String::new();
    loop {
        tokio::select! {
            line = stdout.next_line() => match line? {
                Some(line) => match parse_progress(&line) {
                    Some((pct, msg)) => ctx.progress(pct, msg),
                    None => { output.push_str(&line); output.push('\n'); }
                },
                None => break,
            },
            _ = ctx.cancelled().cancelled() => {
                child.kill().await?;
                return Err("canceled".into());
            }
        }
    }
    let status = child.wait().await?;
    let stderr = err_task.await.unwrap_or_default();
    if status.success() {
        Ok(json!({ "exit_code": 0, "stdout": output }))
    } else {
        Err(format!("`{program}` exited with {status}: {}", stderr.trim()).into())
    }
}

fn parse_progress(line: &str) -> Option<(f32, Option<&str>)> {
    let rest = line.strip_prefix("::progress ")?;
    let (num, msg) = match rest.split_once(' ') {
        Some((n, m)) => (n, Some(m)),
        None => (rest, None),
    };
    Some((num.parse().ok()?, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(attempt: i32) -> (Ctx, mpsc::UnboundedReceiver<(Uuid, Progress)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Ctx::new(Uuid::nil(), attempt, tx, CancellationToken::new()),
            rx,
        )
    }

    #[test]
    fn parses_progress_lines() {
        assert_eq!(
            parse_progress("::progress 40 halfway"),
            Some((40.0, Some("halfway")))
        );
        assert_eq!(parse_progress("::progress 5"), Some((5.0, None)));
        assert_eq!(parse_progress("hello"), None);
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
