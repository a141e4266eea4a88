//! The task names workers have offered. The active server records new ones; every server
//! loads them, so a submit of a library user's own task is accepted after a server restart, a
//! takeover, or on a standby's HTTP API, before any worker has spoken to that server.

use super::{Result, Store};

impl Store {
    /// Records task names (those known already are left as they are).
    pub async fn remember_tasks(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO task_names (name) SELECT * FROM UNNEST($1::text[])
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(names)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every task name recorded.
    pub async fn task_names(&self) -> Result<Vec<String>> {
        let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM task_names")
            .fetch_all(&self.pool)
            .await?;
        Ok(names.into_iter().map(|(n,)| n).collect())
    }

    /// Whether `name` is recorded.
    pub async fn knows_task(&self, name: &str) -> Result<bool> {
        let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM task_names WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}
