//! Delayed jobs. A submit due later (`run_at`, `delay_ms`) is recorded `scheduled` and held
//! by no one; when it falls due the Dispatcher fires it: it routes it as a new submission,
//! behind everything decided before that moment, and records it `waiting` with a new `seq`
//! (its place in submit order, which a restarted Dispatcher rebuilds from) in the same ordered
//! step that sends it. The table is the only record, so a restart or a takeover finds what is
//! due there; the update out of `scheduled` is conditional, so a job fires once, and a cancel
//! that lands first keeps it from firing.
//!
//! The Dispatcher wakes at the earliest due time it knows (from its own inserts and from the
//! table) and, as a backstop, every `TICK`.

use super::{plan, Dispatcher};
use crate::{server::in_order::InOrder, server::routing::Decision, store::Due};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::{collections::HashSet, time::Duration};
use uuid::Uuid;

/// Due jobs fired per round.
const FIRE_BATCH: i64 = 1_000;
/// How often the table is asked for due jobs when no due time is known, and for the count of
/// scheduled jobs.
pub const TICK: Duration = Duration::from_secs(1);

/// When the Dispatcher wakes next to fire due jobs.
#[derive(Default)]
pub struct Timer {
    /// The earliest due time known to be recorded.
    next: Option<DateTime<Utc>>,
    handle: Option<SpawnHandle>,
    /// A round is out (asking the table, then firing); `again` asks for another after it,
    /// and `recorded` is the earliest due time recorded meanwhile (the round's answer may
    /// predate it).
    firing: bool,
    again: bool,
    recorded: Option<DateTime<Utc>>,
}

impl Dispatcher {
    /// A job due at `at` was recorded.
    pub(super) fn due_at(&mut self, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        if self.timer.firing {
            self.timer.recorded = earliest(self.timer.recorded, Some(at));
            return;
        }
        if self.timer.next.is_some_and(|next| next <= at) {
            return;
        }
        self.timer.next = Some(at);
        self.arm(ctx);
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.handle.take() {
            ctx.cancel_future(handle);
        }
        let Some(next) = self.timer.next else { return };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        self.timer.handle = Some(ctx.run_later(wait, |act, ctx| {
            act.timer.handle = None;
            act.fire(ctx);
        }));
    }

    /// The backstop: fires what is due, and counts what is scheduled.
    pub(super) fn tick(&mut self, ctx: &mut Context<Self>) {
        self.fire(ctx);
        let store = self.plane.store.clone();
        ctx.spawn(
            async move { store.scheduled_count().await }
                .into_actor(self)
                .map(|count, act, _| {
                    if act.failure().is_down() {
                        return;
                    }
                    if let Ok(n) = count {
                        metrics::gauge!("lanes_jobs_scheduled").set(n as f64);
                    }
                }),
        );
    }

    /// One round: asks the table for the due jobs (in order with every other step), routes
    /// them, then fires and sends them in one later step.
    pub(super) fn fire(&mut self, ctx: &mut Context<Self>) {
        if self.timer.firing {
            self.timer.again = true;
            return;
        }
        self.timer.firing = true;
        let store = self.plane.store.clone();
        let ask = async move { store.due(FIRE_BATCH).await };
        let step = ask.into_actor(self).map(|res, act, ctx| match res {
            Ok(due) => act.route_due(due, ctx),
            Err(e) => act.fail(e.into(), ctx),
        });
        InOrder::push(self, ctx, step);
    }

    fn route_due(&mut self, due: Due, ctx: &mut Context<Self>) {
        let full = due.jobs.len() as i64 >= FIRE_BATCH;
        let now = Utc::now();
        let (mut ids, mut routed) = (Vec::new(), Vec::new());
        for (row, run_at) in due.jobs {
            if self.router.knows(&row.id) {
                continue;
            }
            let late = (now - run_at).num_microseconds().unwrap_or(0).max(0);
            metrics::histogram!("lanes_scheduled_lateness_seconds").record(late as f64 / 1e6);
            // Its arguments stay in the table until it is sent, as a waiting job's do.
            let spec = plan::spec_of(row);
            let (id, resources) = (spec.id, spec.resources.clone());
            ids.push(id);
            if let Decision::Routed(spec, target) = self.router.submit(id, &resources, spec) {
                routed.push((spec, target));
            }
        }
        if !ids.is_empty() {
            self.record_gauges();
            metrics::counter!("lanes_jobs_fired_total").increment(ids.len() as u64);
            self.send_fired(ids, routed, ctx);
        }
        self.timer.firing = false;
        self.timer.next = earliest(due.next, self.timer.recorded.take());
        if full || std::mem::take(&mut self.timer.again) {
            self.fire(ctx);
        } else {
            self.arm(ctx);
        }
    }

    /// Records the routed jobs `waiting` with their new place in submit order and sends those
    /// that moved, in one step; a job canceled since it was asked for leaves the Router.
    fn send_fired(
        &mut self,
        ids: Vec<Uuid>,
        routed: Vec<(crate::protocol::TaskSpec, crate::server::routing::Target)>,
        ctx: &mut Context<Self>,
    ) {
        let store = self.plane.store.clone();
        // The lanes these decisions opened are declared by this step.
        let open = self.open_lanes();
        let fire = async move {
            open.await?;
            Ok::<_, super::DispatchError>(store.fire(&ids).await.map(|moved| (ids, moved))?)
        };
        let step = fire.into_actor(self).then(move |res, act, ctx| {
            let send = match res {
                Ok((ids, moved)) => {
                    let moved: HashSet<Uuid> = moved.into_iter().collect();
                    let gone: Vec<Uuid> =
                        ids.into_iter().filter(|id| !moved.contains(id)).collect();
                    let go: Vec<_> = routed
                        .into_iter()
                        .filter(|(spec, _)| moved.contains(&spec.id))
                        .collect();
                    let woken: Vec<_> = plan::release(&mut act.router, &gone)
                        .into_iter()
                        .filter(|(spec, _)| !gone.contains(&spec.id))
                        .collect();
                    act.record_gauges();
                    let send = act.send_batch(Vec::new(), Vec::new(), go, None, Vec::new());
                    act.dispatch(woken, ctx);
                    Some(send)
                }
                Err(e) => {
                    act.fail(e, ctx);
                    None
                }
            };
            async move {
                match send {
                    Some(send) => send.await,
                    None => Ok(()),
                }
            }
            .into_actor(act)
            .map(|res, act, ctx| {
                if let Err(e) = res {
                    act.fail(e, ctx);
                }
            })
        });
        InOrder::push(self, ctx, step);
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
