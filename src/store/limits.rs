//! The `resource_limits` table: each limited resource's capacity and rate (see `limit`), and
//! the starts that count toward a rate after a restart.

use super::{retry::retrying, Result, Store};
use crate::limit::{Limit, Rate};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct Row {
    name: String,
    slots: i32,
    rate_starts: Option<i32>,
    rate_per_ms: Option<i64>,
}

impl From<Row> for (String, Limit) {
    fn from(r: Row) -> (String, Limit) {
        let rate = match (r.rate_starts, r.rate_per_ms) {
            (Some(starts), Some(per_ms)) => Some(Rate {
                starts: starts as u32,
                per_ms: per_ms as u64,
            }),
            _ => None,
        };
        let limit = Limit {
            slots: r.slots as u32,
            rate,
        };
        (r.name, limit)
    }
}

impl Store {
    /// Every limit, by resource name.
    pub async fn limits(&self) -> Result<Vec<(String, Limit)>> {
        retrying(|| async {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT name, slots, rate_starts, rate_per_ms FROM resource_limits ORDER BY name",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
        .await
    }

    pub async fn limit(&self, name: &str) -> Result<Option<Limit>> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT name, slots, rate_starts, rate_per_ms FROM resource_limits WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| <(String, Limit)>::from(r).1))
    }

    /// Sets a resource's limit (a new one or a change).
    pub async fn set_limit(&self, name: &str, limit: &Limit) -> Result<()> {
        sqlx::query(
            "INSERT INTO resource_limits (name, slots, rate_starts, rate_per_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET slots = $2, rate_starts = $3, rate_per_ms = $4,
                                              updated_at = now()",
        )
        .bind(name)
        .bind(limit.slots as i32)
        .bind(limit.rate.map(|r| r.starts as i32))
        .bind(limit.rate.map(|r| r.per_ms as i64))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a resource's limit; false if it had none.
    pub async fn remove_limit(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM resource_limits WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The last `rate.starts` starts of jobs holding `name` (in any spelling) within the rate's
    /// period before now: what a restarted control plane counts toward the rate.
    pub async fn recent_starts(&self, name: &str, rate: &Rate) -> Result<Vec<DateTime<Utc>>> {
        let spellings = crate::protocol::spellings(name);
        retrying(|| async {
            Ok(sqlx::query_scalar(
                "SELECT started_at FROM jobs
                 WHERE resources && $1
                   AND started_at > now() - make_interval(secs => $2::float8 / 1000)
                 ORDER BY started_at DESC LIMIT $3",
            )
            .bind(&spellings[..])
            .bind(rate.per_ms as f64)
            .bind(rate.starts as i64)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }
}
