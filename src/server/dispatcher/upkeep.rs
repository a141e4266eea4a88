//! The Dispatcher's I/O beyond batches: recovering its state after a restart, declaring the
//! lanes the Router opens, deleting idle surplus lanes, and reconciling lanes with the table
//! (see `reconcile`): jobs whose lane message is gone are published again, and a lane with
//! ready tasks and no consumer twice in a row has its owner and standby subscribe afresh.

use super::{plan, send, send::Publication, DispatchError, Dispatcher};
use crate::{
    broker::{delete_queue_if_empty, lane_counts, BrokerError, Publisher},
    limit::Limit,
    protocol::TaskSpec,
    server::{
        in_order::InOrder,
        plane::Plane,
        reconcile::Suspects,
        routing::{Router, Target},
        supervisor::{GetHeld, Resubscribe, SetLanes, Supervisor},
    },
};
use actix::prelude::*;
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    future::Future,
    time::{Duration, Instant},
};
use tracing::{info, warn};
use uuid::Uuid;

/// Jobs re-dispatched per round of publishes and confirms during recovery.
const RECOVERY_WINDOW: usize = 2_000;
/// Unfinished rows read per statement at recovery.
const RECOVERY_PAGE: i64 = 10_000;
/// How often the Dispatcher looks for surplus lanes to delete.
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often lanes are checked for jobs whose message is gone.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How often marks of id-less submits left over from a crash are purged.
pub const PURGE_MARKS_EVERY: Duration = Duration::from_secs(60);

/// What reconciliation remembers between checks.
#[derive(Default)]
pub struct Upkeep {
    suspects: Suspects,
    /// Lanes that held ready tasks without a consumer at the last check.
    orphaned: HashSet<u32>,
}

/// Rebuilds the reservations and the waiting line from Postgres, re-dispatches jobs left
/// `submitted`, and returns the Router with the resource limits it was given. The open lanes
/// are `0..min` and every lane that holds a queued or running job; they are declared, and the
/// Supervisor is told.
pub async fn recover(
    plane: &Plane,
    publisher: &Publisher,
    supervisor: &Addr<Supervisor>,
) -> Result<(Router<TaskSpec>, HashMap<String, Limit>), DispatchError> {
    let (cfg, topo, store) = (&plane.cfg, &plane.topo, &plane.store);
    let depth = (cfg.lane_depth > 0).then_some(cfg.lane_depth);
    let rebalance = (cfg.rebalance_after > 0).then_some(cfg.rebalance_after);
    let mut router = Router::new(cfg.min_queues, cfg.max_queues.max(1))
        .with_depth(depth)
        .with_rebalance_after(rebalance);
    // The limits and the starts that count toward rates come first: the jobs restored next
    // are held to them.
    let limits: HashMap<String, Limit> = store.limits().await?.into_iter().collect();
    router.set_limits(limits.clone());
    for (name, rate) in limits.iter().filter_map(|(n, l)| Some((n, l.rate?))) {
        let starts: Vec<u64> = store
            .recent_starts(name, &rate)
            .await?
            .iter()
            .map(|t| t.timestamp_millis().max(0) as u64)
            .collect();
        router.restore_starts(name, &starts);
    }
    router.tick(super::limits::now_ms());
    // A page at a time, in submit order: the Router carries over from page to page.
    let (mut recovery, mut total, mut after) = (plan::Recovery::default(), 0, 0);
    loop {
        let page = store.unfinished_after(after, RECOVERY_PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        total += page.len();
        let more = plan::recover(
            page.into_iter().map(|(_, row)| row).collect(),
            &mut router,
            topo,
        );
        recovery.resend.extend(more.resend);
        recovery.publish.extend(more.publish);
    }
    router.take_opened();
    let open = router.open_lanes();
    for &n in &open {
        topo.declare_lane(&plane.conn, n).await?;
    }
    supervisor.do_send(SetLanes(open.iter().copied().collect()));
    // Surplus lanes a previous server left on the broker: delete the empty ones, so that the
    // broker shows the pool. One that still holds messages stays (unconsumed until the lane
    // opens again).
    for n in (0..router.max_lanes()).filter(|n| !router.is_open(*n)) {
        delete_queue_if_empty(&plane.conn, &topo.lane(n)).await?;
    }
    // In windows, so that a large backlog neither holds every confirm at once nor waits for
    // all of them before the first rows are marked.
    let mut redispatched = 0;
    let windows = (recovery
        .resend
        .chunks(RECOVERY_WINDOW)
        .map(|w| (w, Publication::Copy)))
    .chain(
        recovery
            .publish
            .chunks(RECOVERY_WINDOW)
            .map(|w| (w, Publication::First)),
    );
    for (window, publication) in windows {
        let mut window = window.to_vec();
        if publication == Publication::First {
            let mut args = store.mark_routed(&send::queues_of(topo, &window)).await?;
            plan::fill_args(&mut window, &mut args);
        }
        let queued = send::publish_jobs(publisher, topo, &window, publication).await?;
        store.mark_queued(&queued).await?;
        redispatched += queued.len();
    }
    info!(
        lanes = open.len(),
        unfinished = total,
        redispatched,
        waiting = router.waiting_len(),
        reserved = router.reserved(),
        "dispatcher recovered its state"
    );
    Ok((router, limits))
}

impl Dispatcher {
    /// The lanes the Router opened since last asked: declares them, then tells the Supervisor.
    /// Await it before publishing.
    pub(super) fn open_lanes(&mut self) -> impl Future<Output = Result<(), BrokerError>> {
        let opened = self.router.take_opened();
        let open: BTreeSet<u32> = self.router.open_lanes().into_iter().collect();
        let (conn, topo, supervisor) = (
            self.plane.conn.clone(),
            self.plane.topo.clone(),
            self.supervisor.clone(),
        );
        async move {
            if opened.is_empty() {
                return Ok(());
            }
            for &n in &opened {
                topo.declare_lane(&conn, n).await?;
            }
            info!(lanes = ?opened, open = open.len(), "opened lanes");
            supervisor.do_send(SetLanes(open));
            Ok(())
        }
    }

    /// Deletes the surplus lanes that have been idle for the cool-down. The Router stops
    /// routing to them first; a lane the broker still holds messages in is kept open.
    /// Purges marks of id-less submits that a crash left behind (see `store::marks`).
    pub(super) fn purge_marks(&mut self) {
        let store = self.plane.store.clone();
        actix::spawn(async move {
            match store.purge_stale_marks().await {
                Ok(0) => {}
                Ok(n) => info!(marks = n, "purged stale marks of id-less submits"),
                Err(e) => warn!(error = %e, "could not purge stale marks of id-less submits"),
            }
        });
    }

    /// Sizes the lane pool to the live workers' slots when they changed (see `routing::pool`);
    /// with no worker heard of, the pool stays as it is. Tasks that waited for room go.
    pub(super) fn follow_fleet(&mut self, ctx: &mut Context<Self>) {
        if !self.slots.has_changed().unwrap_or(false) {
            return;
        }
        let slots = *self.slots.borrow_and_update();
        if slots == 0 {
            return;
        }
        let before = self.router.size();
        let woken = self.router.set_size(slots);
        if self.router.size() != before {
            info!(
                slots,
                size = self.router.size(),
                "the lane pool follows the fleet"
            );
            self.record_gauges();
        }
        self.dispatch(woken, ctx);
    }

    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        self.follow_fleet(ctx);
        let closable = self.router.closable(Instant::now(), self.cool_down);
        let closed: Vec<u32> = closable
            .into_iter()
            .filter(|l| self.router.close(*l))
            .collect();
        if closed.is_empty() {
            return;
        }
        let (conn, topo) = (self.plane.conn.clone(), self.plane.topo.clone());
        let fut = async move {
            let mut kept = Vec::new();
            for &n in &closed {
                if !delete_queue_if_empty(&conn, &topo.lane(n)).await? {
                    kept.push(n);
                }
            }
            Ok::<_, BrokerError>((closed, kept))
        };
        let step = fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((closed, kept)) => {
                for &n in &kept {
                    act.router.open(n);
                }
                act.router.take_opened();
                let deleted: Vec<u32> = closed.into_iter().filter(|n| !kept.contains(n)).collect();
                let open: BTreeSet<u32> = act.router.open_lanes().into_iter().collect();
                info!(lanes = ?deleted, open = open.len(), "deleted idle lanes");
                act.supervisor.do_send(SetLanes(open));
            }
            Err(e) => act.fail(e.into(), ctx),
        });
        InOrder::push(self, ctx, step);
    }

    /// Finds jobs whose lane message is gone (see `reconcile`) and dispatches them again.
    pub(super) fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let busy: Vec<u32> = self
            .router
            .loads()
            .into_iter()
            .filter(|(_, load)| *load > 0)
            .map(|(lane, _)| lane)
            .collect();
        if busy.is_empty() {
            self.upkeep.suspects.confirm(HashMap::new());
            return;
        }
        let (conn, topo, supervisor) = (
            self.plane.conn.clone(),
            self.plane.topo.clone(),
            self.supervisor.clone(),
        );
        let fut = async move {
            let held = supervisor.send(GetHeld).await.unwrap_or_default();
            let (mut empty, mut orphaned) = (Vec::new(), HashSet::new());
            for n in busy {
                let counts = lane_counts(&conn, &topo, n).await?;
                if counts.messages == 0 {
                    empty.push(n);
                } else if counts.consumers == 0 {
                    orphaned.insert(n);
                }
            }
            Ok::<_, BrokerError>((empty, orphaned, held))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let (empty, orphaned, held) = match res {
                Ok(found) => found,
                Err(e) => return act.fail(e.into(), ctx),
            };
            // Seen twice in a row: not a handoff in progress.
            for &n in orphaned.intersection(&act.upkeep.orphaned) {
                act.supervisor.do_send(Resubscribe(n));
            }
            act.upkeep.orphaned = orphaned;
            let now = empty
                .into_iter()
                .map(|n| {
                    let ids = act.router.lane_jobs(n).into_iter();
                    (n, ids.filter(|id| !held.contains(id)).collect())
                })
                .collect();
            let lost = act.upkeep.suspects.confirm(now);
            if !lost.is_empty() {
                act.redispatch(lost, ctx);
            }
        }));
    }

    /// Publishes lost jobs to their lanes again (their reservations never moved).
    fn redispatch(&mut self, lost: Vec<Uuid>, ctx: &mut Context<Self>) {
        warn!(
            jobs = lost.len(),
            "lane messages are gone (queue purged or deleted?); dispatching those jobs again"
        );
        metrics::counter!("lanes_jobs_reconciled_total").increment(lost.len() as u64);
        let (publisher, topo, store) = (
            self.publisher.clone(),
            self.plane.topo.clone(),
            self.plane.store.clone(),
        );
        let fut = async move {
            let rows = store.unfinished_of(&lost).await?;
            let jobs: Vec<(TaskSpec, Target)> = rows
                .into_iter()
                .filter_map(|r| {
                    let lane = topo.lane_index(r.queue.as_deref()?)?;
                    Some((plan::spec_of(r), Target::Lane(lane)))
                })
                .collect();
            send::publish_jobs(&publisher, &topo, &jobs, Publication::Copy).await?;
            Ok::<_, DispatchError>(())
        };
        self.in_order_or_fail(ctx, fut);
    }
}
