//! Applying a batch of worker reports whose values the database may refuse. One refused value
//! fails its whole statement, and a batch that fails the same way each time would stop every
//! report behind it (the control plane restarts, takes the batch back, fails again). So a
//! batch refused for its data is applied in halves, down to single reports: only the report
//! that cannot be stored is refused, and its neighbours land.

use super::{retry::refused_data, Finished, JobUpdate, Result, Store};
use uuid::Uuid;

/// What a batch did: the jobs that ended, and the reports refused with the database's reason.
#[derive(Debug, Default)]
pub struct Applied {
    pub finished: Vec<Finished>,
    pub refused: Vec<(Uuid, String)>,
}

impl Store {
    /// `apply`, isolating the reports the database refuses for their data.
    pub async fn apply_isolating(&self, updates: &[JobUpdate]) -> Result<Applied> {
        let mut applied = Applied::default();
        let mut parts = vec![updates];
        while let Some(part) = parts.pop() {
            match self.apply(part).await {
                Ok(finished) => applied.finished.extend(finished),
                Err(e) if refused_data(&e) && part.len() > 1 => {
                    let (a, b) = part.split_at(part.len() / 2);
                    parts.push(b);
                    parts.push(a);
                }
                Err(e) if refused_data(&e) => applied.refused.push((part[0].id, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }
}
