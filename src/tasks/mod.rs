//! Task handlers: the registry library users fill (`registry`: plain, typed and blocking
//! handlers), the context a handler sees (`ctx`), and the built-in tasks the `lanes` binary
//! ships (`noop`, `echo`, `sleep`, `fail` in `builtins`; `exec` in `exec`, which keeps a
//! program's whole process tree inside its run; `probe`, an execution log for tests of order).

mod builtins;
mod ctx;
mod exec;
mod probe;
mod registry;
pub mod signature;
mod webhook;

pub use ctx::{BlockingPool, Ctx};
pub use registry::{Permanent, Registry, TaskResult};

/// A panicked task's message.
pub(crate) fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Progress;
    use serde_json::{json, Value};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

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
