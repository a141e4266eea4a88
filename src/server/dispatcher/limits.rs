//! Resource limits in the Dispatcher: it reads them from the table (at start, every
//! `RELOAD_EVERY`, and at once when this server's API changes one), hears of starts from the
//! Callback, and lets the time pass for rates; each may let a waiter on a limited resource go
//! (see `routing::gate`).

use super::Dispatcher;
use crate::limit::Limit;
use actix::prelude::*;
use std::{collections::HashMap, time::Duration};
use tracing::{info, warn};
use uuid::Uuid;

/// How often the limits are read again (a change made through another server's API).
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How often the time is given to the Router, for rates.
pub const GATE_TICK: Duration = Duration::from_millis(10);

/// Read the limits again now (this server's API changed one).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadLimits;

/// Jobs that started (the Callback heard so), before it tells of their ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsStarted(pub Vec<Uuid>);

/// Now, in milliseconds since the Unix epoch: the Router's clock for rates.
pub fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// What the Dispatcher remembers of the limits.
#[derive(Default)]
pub struct Limits {
    /// As last given to the Router.
    current: HashMap<String, Limit>,
    reading: bool,
}

impl Limits {
    /// The limits given to the Router at start.
    pub fn new(current: HashMap<String, Limit>) -> Limits {
        Limits {
            current,
            reading: false,
        }
    }
}

impl Dispatcher {
    /// Reads the limits and gives the Router any change; the waiters it lets go are sent.
    fn read_limits(&mut self) -> impl ActorFuture<Self, Output = ()> + 'static {
        let store = self.plane.store.clone();
        async move { store.limits().await }
            .into_actor(self)
            .map(|res, act, ctx| {
                let read: HashMap<String, Limit> = match res {
                    Ok(all) => all.into_iter().collect(),
                    Err(e) => return warn!(error = %e, "reading resource limits failed"),
                };
                if read == act.limits.current {
                    return;
                }
                info!(limited = read.len(), "resource limits changed");
                act.limits.current = read.clone();
                let woken = act.router.set_limits(read);
                act.dispatch(woken, ctx);
            })
    }

    pub(super) fn reload_limits(&mut self, ctx: &mut Context<Self>) {
        if self.limits.reading {
            return;
        }
        self.limits.reading = true;
        let read = self
            .read_limits()
            .map(|(), act, _| act.limits.reading = false);
        ctx.spawn(read);
    }

    pub(super) fn open_gates(&mut self, ctx: &mut Context<Self>) {
        if self.limits.current.is_empty() {
            return;
        }
        let woken = self.router.tick(now_ms());
        if !woken.is_empty() {
            self.record_gauges();
        }
        self.dispatch(woken, ctx);
    }
}

/// Answers once the limits as the table holds them now are in force.
impl Handler<ReloadLimits> for Dispatcher {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: ReloadLimits, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.read_limits())
    }
}

impl Handler<JobsStarted> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobsStarted, ctx: &mut Context<Self>) {
        if self.limits.current.is_empty() {
            return;
        }
        let woken = self.router.started(&msg.0, now_ms());
        self.record_gauges();
        self.dispatch(woken, ctx);
    }
}
