//! Writing a batch whose values the database may refuse (submitted jobs, worker reports).
//! One refused value fails its whole statement, and a batch that fails the same way each time
//! would stop everything behind it (the control plane restarts, takes the batch back, fails
//! again). So a batch refused for its data is written in halves, down to single rows: only
//! the row that cannot be stored is refused, and its neighbours land.

use super::{retry::refused_data, Finished, JobUpdate, NewJob, Result, Store};
use std::collections::HashSet;
use uuid::Uuid;

/// What a batch did: the jobs that ended, and the reports refused with the database's reason.
#[derive(Debug, Default)]
pub struct Applied {
    pub finished: Vec<Finished>,
    pub refused: Vec<(Uuid, String)>,
}

/// What an insert did: the jobs it recorded, and the rows refused with the database's reason.
#[derive(Debug, Default)]
pub struct Inserted {
    pub inserted: Vec<Uuid>,
    pub refused: Vec<(NewJob, String)>,
}

impl Store {
    /// `insert_marked`, isolating the rows the database refuses for their data (each mark goes
    /// with its job).
    pub async fn insert_isolating(
        &self,
        jobs: &[NewJob],
        marks: &[(Uuid, Uuid)],
    ) -> Result<Inserted> {
        let mut out = Inserted::default();
        let mut parts = vec![jobs];
        while let Some(part) = parts.pop() {
            let ids: HashSet<Uuid> = part.iter().map(|j| j.id).collect();
            let part_marks: Vec<(Uuid, Uuid)> = if part.len() == jobs.len() {
                marks.to_vec()
            } else {
                marks
                    .iter()
                    .filter(|m| ids.contains(&m.0))
                    .copied()
                    .collect()
            };
            match self.insert_marked(part, &part_marks).await {
                Ok(inserted) => out.inserted.extend(inserted),
                Err(e) if refused_data(&e) && part.len() > 1 => {
                    let (a, b) = part.split_at(part.len() / 2);
                    parts.push(b);
                    parts.push(a);
                }
                Err(e) if refused_data(&e) => out.refused.push((part[0].clone(), e.to_string())),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

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
