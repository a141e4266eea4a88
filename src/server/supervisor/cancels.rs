//! Cancel requests on their way to the workers. A canceled job may be in any lane or running
//! on any worker, so every live worker is told (`Control::Cancel`), and every worker that comes
//! online is told of all requests still open, until the job ends.

use super::Supervisor;
use crate::protocol::Control;
use actix::prelude::*;
use uuid::Uuid;

/// These jobs were canceled: tell every worker, now and as they come online.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelJobs(pub Vec<Uuid>);

/// These jobs ended: their cancel requests, if any, are done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobsSettled(pub Vec<Uuid>);

impl Handler<CancelJobs> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: CancelJobs, _: &mut Context<Self>) {
        if msg.0.is_empty() {
            return;
        }
        self.cancels.extend(msg.0.iter().copied());
        let workers: Vec<String> = self.workers.keys().cloned().collect();
        for w in workers {
            self.send_control(
                &w,
                Control::Cancel {
                    jobs: msg.0.clone(),
                },
            );
        }
    }
}

impl Handler<JobsSettled> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: JobsSettled, _: &mut Context<Self>) {
        if self.cancels.is_empty() {
            return;
        }
        let done: Vec<Uuid> = msg
            .0
            .into_iter()
            .filter(|j| self.cancels.remove(j))
            .collect();
        if done.is_empty() {
            return;
        }
        // Every worker heard of these cancels; a retry of the job must not meet them.
        let workers: Vec<String> = self.workers.keys().cloned().collect();
        for w in workers {
            self.send_control(&w, Control::Uncancel { jobs: done.clone() });
        }
    }
}

impl Supervisor {
    /// Tells a worker that came online of every cancel request still open.
    pub(super) fn send_cancels(&self, worker: &str) {
        if !self.cancels.is_empty() {
            let jobs = self.cancels.iter().copied().collect();
            self.send_control(worker, Control::Cancel { jobs });
        }
    }
}
