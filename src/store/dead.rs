//! The record of dead letters: what the control plane set aside, why, and the start of each
//! message, newest first for the dashboard; pruned with finished jobs.

use super::{retry::retrying, Result, Store};
use crate::storable::sanitize;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How much of a message body the record keeps.
const EXCERPT: usize = 1024;

/// One recorded dead letter.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub source: String,
    pub job: Option<Uuid>,
    pub reason: String,
    pub body: String,
}

impl Store {
    /// Records letters set aside: (source, job, reason, body).
    pub async fn record_dead(&self, letters: &[(&str, Option<Uuid>, &str, &[u8])]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut sources = Vec::new();
        let mut jobs = Vec::new();
        let mut reasons = Vec::new();
        let mut bodies = Vec::new();
        for (source, job, reason, body) in letters {
            sources.push(source.to_string());
            jobs.push(*job);
            reasons.push(sanitize(reason.to_string()));
            let cut = &body[..body.len().min(EXCERPT)];
            bodies.push(sanitize(String::from_utf8_lossy(cut).into_owned()));
        }
        retrying(|| async {
            sqlx::query(
                "INSERT INTO dead_letters (source, job, reason, body)
                 SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[])",
            )
            .bind(&sources)
            .bind(&jobs)
            .bind(&reasons)
            .bind(&bodies)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// The newest recorded dead letters.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadRecord>> {
        retrying(|| async {
            Ok(sqlx::query_as(
                "SELECT seq, at, source, job, reason, body FROM dead_letters
                 ORDER BY seq DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Deletes records older than `older`; returns how many.
    pub async fn prune_dead(&self, older: std::time::Duration) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM dead_letters WHERE at < now() - make_interval(secs => $1)")
                .bind(older.as_secs_f64())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}
