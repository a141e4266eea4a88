//! The schedules' loop: every `EVERY`, the schedules whose last job's tick has come get the job
//! of their next tick, and of any tick the loop fell behind on (see `schedule`): a delayed
//! job, recorded `scheduled` under the id its tick gives it, which the Dispatcher fires when
//! it is due like any other. A job made for a tick that passed long ago while no control plane
//! ran is left out (`canceled`, with the reason) when its schedule skips missed ticks. A tick
//! whose task no worker offers any more is recorded `failed` with the reason, so the schedule
//! moves on and the failure shows.

use super::{plan, DispatchError, Dispatcher};
use crate::{
    schedule::{job_id, leave_out, next_tick, ticks_to_make},
    store::{JobState, NewJob},
};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tracing::{info, warn};

/// How often schedules are looked at.
pub const EVERY: Duration = Duration::from_millis(200);

impl Dispatcher {
    /// One round of the loop; `then_fire` fires what is due once it is done (at start: after
    /// the missed jobs are left out).
    pub(super) fn run_schedules(&mut self, then_fire: bool, ctx: &mut Context<Self>) {
        if self.schedules_busy {
            return;
        }
        self.schedules_busy = true;
        let (store, tasks) = (self.plane.store.clone(), self.plane.tasks.clone());
        let round = async move {
            let due = store.schedules_due().await?;
            let now = Utc::now();
            let (mut rows, mut ticks, mut missed) = (Vec::new(), Vec::new(), Vec::new());
            let mut first: Option<DateTime<Utc>> = None;
            for stored in due {
                let s = &stored.schedule;
                let compiled = match s.compile() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(schedule = %s.name, error = %e, "a stored schedule does not compile");
                        continue;
                    }
                };
                if let Some(last) = stored.last_tick {
                    let next = next_tick(&compiled, Some(last), now, s.missed);
                    if leave_out(last, now, s.missed, next) {
                        missed.push(job_id(&s.name, last));
                    }
                }
                let (made, skipped) =
                    ticks_to_make(&compiled, Some(stored.ticks_after()), now, s.missed);
                let Some(&latest) = made.last() else {
                    continue;
                };
                if skipped {
                    info!(schedule = %s.name, tick = %made[0], "ticks were missed: no control plane made their jobs within 30 s");
                }
                for tick in made {
                    let id = job_id(&s.name, tick);
                    let known = |t: &str| tasks.contains(t);
                    let mut row = match s.spec(id, tick, known) {
                        Ok(spec) => {
                            let mut row = plan::new_row(&spec, None, None);
                            row.state = JobState::Scheduled;
                            row
                        }
                        Err(e) => NewJob {
                            state: JobState::Failed,
                            error: Some(format!("schedule {}: {e}", s.name)),
                            run_at: Some(tick),
                            ..plan::new_row(&plan::empty_spec(id), None, None)
                        },
                    };
                    row.submitted_by = Some(format!("schedule:{}", s.name));
                    if row.state == JobState::Scheduled {
                        first = Some(first.map_or(tick, |f| f.min(tick)));
                    }
                    rows.push(row);
                }
                ticks.push((s.name.clone(), latest));
            }
            if !missed.is_empty() {
                let reason = "missed: no control plane ran at its time";
                store.skip_scheduled(&missed, reason).await?;
            }
            if !rows.is_empty() {
                store.insert(&rows).await?;
                store.advance_schedules(&ticks).await?;
            }
            Ok::<_, DispatchError>(first)
        };
        ctx.spawn(round.into_actor(self).map(move |res, act, ctx| {
            act.schedules_busy = false;
            match res {
                Ok(first) => {
                    if let Some(at) = first {
                        act.due_at(at, ctx);
                    }
                    if then_fire {
                        act.fire(ctx);
                    }
                }
                Err(e) => act.fail(e, ctx),
            }
        }));
    }
}
