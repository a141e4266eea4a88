//! The `schedules` table: the definitions, and the tick each made a job for last. The jobs of
//! the ticks are ordinary delayed jobs (`delayed`), recorded by the active control plane.

use super::{Result, Store};
use crate::schedule::{Missed, Schedule};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// A schedule as stored: its definition, and the tick it made a job for last.
#[derive(Debug, Clone)]
pub struct Stored {
    pub schedule: Schedule,
    pub last_tick: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Stored {
    /// Where its ticks continue from: the tick it made a job for last or, before its first, the
    /// moment it took its current form (created, changed or resumed). A loop that first sees a
    /// schedule late still makes the ticks between.
    pub fn ticks_after(&self) -> DateTime<Utc> {
        self.last_tick.unwrap_or(self.updated_at)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    name: String,
    cron: String,
    tz: String,
    task: String,
    args: Option<Value>,
    resources: Vec<String>,
    max_attempts: Option<i32>,
    timeout_ms: Option<i64>,
    missed: String,
    paused: bool,
    last_tick: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Stored {
    fn from(r: Row) -> Stored {
        Stored {
            schedule: Schedule {
                name: r.name,
                cron: r.cron,
                tz: r.tz,
                task: r.task,
                args: r.args.unwrap_or_default(),
                resources: r.resources,
                max_attempts: r.max_attempts,
                timeout_ms: r.timeout_ms.map(|t| t as u64),
                missed: r.missed.parse().unwrap_or(Missed::Skip),
                paused: r.paused,
            },
            last_tick: r.last_tick,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "name, cron, tz, task, args, resources, max_attempts, timeout_ms, missed, \
                       paused, last_tick, created_at, updated_at";

impl Store {
    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Stored>> {
        let rows: Vec<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Stored::from).collect())
    }

    pub async fn schedule(&self, name: &str) -> Result<Option<Stored>> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM schedules WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Stored::from))
    }

    /// Records a new schedule; false if one of that name exists.
    pub async fn create_schedule(&self, s: &Schedule) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO schedules (name, cron, tz, task, args, resources, max_attempts,
                                    timeout_ms, missed, paused)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&s.name)
        .bind(&s.cron)
        .bind(&s.tz)
        .bind(&s.task)
        .bind(&s.args)
        .bind(&s.resources)
        .bind(s.max_attempts)
        .bind(s.timeout_ms.map(|t| t as i64))
        .bind(s.missed.as_str())
        .bind(s.paused)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a schedule's definition and forgets its last tick (its next job is the next
    /// tick from now); returns the tick it had, or None if there is no such schedule.
    pub async fn replace_schedule(&self, s: &Schedule) -> Result<Option<Option<DateTime<Utc>>>> {
        let row: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(
            "UPDATE schedules AS s SET cron = $2, tz = $3, task = $4, args = $5, resources = $6,
                    max_attempts = $7, timeout_ms = $8, missed = $9, paused = $10,
                    last_tick = NULL, updated_at = now()
             FROM (SELECT name, last_tick FROM schedules WHERE name = $1 FOR UPDATE) AS old
             WHERE s.name = old.name
             RETURNING old.last_tick",
        )
        .bind(&s.name)
        .bind(&s.cron)
        .bind(&s.tz)
        .bind(&s.task)
        .bind(&s.args)
        .bind(&s.resources)
        .bind(s.max_attempts)
        .bind(s.timeout_ms.map(|t| t as i64))
        .bind(s.missed.as_str())
        .bind(s.paused)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(t,)| t))
    }

    /// Deletes a schedule; returns its last tick, or None if there is no such schedule.
    pub async fn delete_schedule(&self, name: &str) -> Result<Option<Option<DateTime<Utc>>>> {
        let row: Option<(Option<DateTime<Utc>>,)> =
            sqlx::query_as("DELETE FROM schedules WHERE name = $1 RETURNING last_tick")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(t,)| t))
    }

    /// The schedules that need a job made: not paused, and their last tick has come.
    pub async fn schedules_due(&self) -> Result<Vec<Stored>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM schedules
             WHERE NOT paused AND (last_tick IS NULL OR last_tick <= now())"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Stored::from).collect())
    }

    /// Moves schedules on to the ticks they made jobs for (never back).
    pub async fn advance_schedules(&self, ticks: &[(String, DateTime<Utc>)]) -> Result<()> {
        let (names, at): (Vec<&str>, Vec<DateTime<Utc>>) =
            ticks.iter().map(|(n, t)| (n.as_str(), *t)).unzip();
        sqlx::query(
            "UPDATE schedules SET last_tick = u.tick
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(name, tick)
             WHERE schedules.name = u.name
               AND (schedules.last_tick IS NULL OR schedules.last_tick < u.tick)
               AND (SELECT lanes_fence($3::text, $4::bigint))",
        )
        .bind(&names)
        .bind(&at)
        .bind(self.fence.as_ref().map(|l| l.prefix.as_str()))
        .bind(self.fence.as_ref().map(|l| l.epoch))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
