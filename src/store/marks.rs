//! Marks of recorded submit messages that carried no message id. Such a message has no
//! identity of its own: if its server dies after the insert and before the ack, the broker
//! delivers it again and it would become a second job. So its job is recorded with a digest of
//! the message (body and properties) until the ack is out; a redelivered id-less message
//! takes the oldest unclaimed mark with its digest, and so its first job's id.
//!
//! What is left open: a crash between the ack and the mark's removal leaves a mark that a
//! redelivered message with the very same content could claim within `STALE` (two identical
//! id-less submits, and a second crash); then that message would count as its twin.

use super::{Result, Store};
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// Marks older than this are left over from a crash between an ack and the mark's removal.
pub const STALE: Duration = Duration::from_secs(600);

/// A message's digest: the same for every delivery of one message.
pub fn digest(body: &[u8], reply_to: Option<&str>, correlation_id: Option<&str>) -> Uuid {
    let mut whole = Vec::with_capacity(body.len() + 64);
    for part in [reply_to, correlation_id] {
        let part = part.unwrap_or_default().as_bytes();
        whole.extend_from_slice(&(part.len() as u64).to_be_bytes());
        whole.extend_from_slice(part);
    }
    whole.extend_from_slice(body);
    Uuid::new_v5(&Uuid::NAMESPACE_OID, &whole)
}

/// Writes the marks of the jobs the insert recorded.
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    marks: &[(Uuid, Uuid)],
    inserted: &[Uuid],
) -> Result<()> {
    let (jobs, digests): (Vec<Uuid>, Vec<Uuid>) = marks
        .iter()
        .filter(|(job, _)| inserted.contains(job))
        .copied()
        .unzip();
    if jobs.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO submit_marks (job, digest) SELECT * FROM UNNEST($1::uuid[], $2::uuid[])
         ON CONFLICT (job) DO NOTHING",
    )
    .bind(&jobs)
    .bind(&digests)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The job each redelivered message's mark names, in order: the oldest mark with its
    /// digest that is not in `claimed` (nor taken by an earlier message of this call).
    pub async fn find_marks(
        &self,
        digests: &[Uuid],
        claimed: &[Uuid],
    ) -> Result<Vec<Option<Uuid>>> {
        let marks: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT digest, job FROM submit_marks WHERE digest = ANY($1) AND job <> ALL($2)
             ORDER BY at, job",
        )
        .bind(digests)
        .bind(claimed)
        .fetch_all(&self.pool)
        .await?;
        let mut free = marks;
        Ok(digests
            .iter()
            .map(|d| {
                let at = free.iter().position(|(digest, _)| digest == d)?;
                Some(free.remove(at).1)
            })
            .collect())
    }

    /// Removes the marks of jobs whose submit messages are acked.
    pub async fn forget_marks(&self, jobs: &[Uuid]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM submit_marks WHERE job = ANY($1)")
            .bind(jobs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes marks left over from a crash between an ack and the mark's removal.
    pub async fn purge_stale_marks(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM submit_marks WHERE at < now() - $1::interval")
            .bind(format!("{} seconds", STALE.as_secs()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
