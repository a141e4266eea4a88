//! Steering one job from the API: cancel and retry. The Dispatcher does both because it owns
//! the waiting line and the reservations: a waiting job is canceled here at once (it has no
//! message anywhere), and a retried job re-enters routing behind everything submitted before
//! the retry, so per-resource order holds from that moment.

use super::{plan, DispatchError, Dispatcher};
use crate::{
    server::{routing::Decision, supervisor::CancelJobs},
    store::JobState,
};
use actix::prelude::*;
use uuid::Uuid;

/// What became of a cancel or retry.
#[derive(Debug, Clone, PartialEq)]
pub enum Steered {
    /// Canceled at once (it was waiting for its resources, or not due yet).
    Canceled,
    /// Every worker is told; the job ends `canceled` when its worker skips or stops it.
    Canceling,
    /// Routed again, as a new submission.
    Retried,
    /// Not possible in this state (None: no such job).
    Refused(Option<JobState>),
}

/// `POST /jobs/{id}/cancel`.
#[derive(Message)]
#[rtype(result = "Result<Steered, DispatchError>")]
pub struct CancelJob(pub Uuid);

/// `POST /jobs/{id}/retry`.
#[derive(Message)]
#[rtype(result = "Result<Steered, DispatchError>")]
pub struct RetryJob(pub Uuid);

impl Handler<CancelJob> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<Steered, DispatchError>>;
    fn handle(&mut self, CancelJob(id): CancelJob, ctx: &mut Context<Self>) -> Self::Result {
        let store = self.plane.store.clone();
        if self.router.is_waiting(&id) {
            // It leaves the line now, so nothing routes it meanwhile; those it held back may go.
            let woken = self.router.finish(&id);
            self.record_gauges();
            self.dispatch(woken, ctx);
            let write = async move { store.cancel_waiting(id).await };
            return Box::pin(write.into_actor(self).map(move |res, act, ctx| match res {
                Ok(_) => Ok(Steered::Canceled),
                Err(e) => {
                    // The Router let go of it already: only a rebuild from the table (where
                    // it still waits) routes it again.
                    let why = e.to_string();
                    act.fail(e.into(), ctx);
                    Err(DispatchError::Stopped(why))
                }
            }));
        }
        let supervisor = self.supervisor.clone();
        Box::pin(
            async move {
                // Not fired yet: it ends here. Fired meanwhile: canceled like any other.
                if store.cancel_scheduled(id).await? {
                    return Ok(Steered::Canceled);
                }
                match store.request_cancel(id).await? {
                    Some(_) => {
                        supervisor.do_send(CancelJobs(vec![id]));
                        Ok(Steered::Canceling)
                    }
                    None => Ok(Steered::Refused(store.get(id).await?.map(|j| j.state))),
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<RetryJob> for Dispatcher {
    type Result = ResponseActFuture<Self, Result<Steered, DispatchError>>;
    fn handle(&mut self, RetryJob(id): RetryJob, _: &mut Context<Self>) -> Self::Result {
        let store = self.plane.store.clone();
        if self.router.knows(&id) {
            // Its end is not released yet (or it never ended): not a job to retry now.
            return Box::pin(
                async move { Ok(Steered::Refused(store.get(id).await?.map(|j| j.state))) }
                    .into_actor(self),
            );
        }
        let fut = async move {
            let row = store.reset_for_retry(id).await?;
            let state = match row {
                Some(_) => None,
                None => store.get(id).await?.map(|j| j.state),
            };
            Ok::<_, DispatchError>((row, state))
        };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            let (row, state) = res?;
            let Some(row) = row else {
                return Ok(Steered::Refused(state));
            };
            // Recorded `waiting` without a lane, as a woken waiter is: routed like one.
            let spec = plan::spec_of(row);
            let resources = spec.resources.clone();
            if let Decision::Routed(spec, target) = act.router.submit(id, &resources, spec) {
                act.dispatch(vec![(spec, target)], ctx);
            }
            act.record_gauges();
            Ok(Steered::Retried)
        }))
    }
}
