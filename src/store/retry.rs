//! Running a statement again when it failed for a reason that passes: Postgres aborted it as a
//! deadlock victim or a serialization failure, or its connection broke (as across a database
//! restart). Which statements may be retried on which errors is decided here, in one place.

use super::{Result, StoreError};
use crate::backoff;
use backon::Retryable;
use std::future::Future;
use std::time::Duration;

/// Runs a statement again when Postgres aborted it as a deadlock victim or a serialization
/// failure, or when its connection turned out to be broken or shut down (as after a database
/// restart). Only for statements that are safe to run twice: reads, idempotent updates, and
/// `insert`, which knows it may be a retry.
pub(super) async fn retrying<T, F, Fut>(f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_if(f, |e| conflict(e) || broken(e)).await
}

/// Runs a statement again only when Postgres aborted it (deadlock, serialization failure):
/// then nothing of it was committed.
pub(super) async fn retrying_conflicts<T, F, Fut>(f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_if(f, conflict).await
}

async fn retry_if<T, F, Fut>(f: F, transient: impl Fn(&sqlx::Error) -> bool) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    f.retry(backoff::statement())
        .when(|e: &StoreError| matches!(e, StoreError::Sql(e) if transient(e)))
        .notify(|e: &StoreError, delay: Duration| {
            attempt += 1;
            tracing::debug!(error = %e, attempt, ?delay, "transient database error; retrying");
        })
        .await
}

fn conflict(e: &sqlx::Error) -> bool {
    db_code(e).is_some_and(|c| c == "40P01" || c == "40001")
}

/// The connection broke, or the server is shutting down or starting up.
fn broken(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_))
        || db_code(e).is_some_and(|c| matches!(c.as_str(), "57P01" | "57P02" | "57P03"))
}

/// The database refused a value of the statement (SQLSTATE class 22, data exception: a
/// character it cannot store, a number out of range, ...; or a value a constraint forbids,
/// 23502 and 23514): running it again changes nothing.
pub(super) fn refused_data(e: &StoreError) -> bool {
    matches!(e, StoreError::Sql(e) if db_code(e)
        .is_some_and(|c| c.starts_with("22") || c == "23502" || c == "23514"))
}

fn db_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken_connection() -> StoreError {
        StoreError::Sql(sqlx::Error::Io(std::io::Error::other("connection reset")))
    }

    #[tokio::test]
    async fn a_statement_is_tried_eleven_times_at_most() {
        let mut calls = 0;
        let res: Result<()> = retrying(|| {
            calls += 1;
            async { Err(broken_connection()) }
        })
        .await;
        assert!(matches!(res, Err(StoreError::Sql(sqlx::Error::Io(_)))));
        assert_eq!(calls, 11);
    }

    #[tokio::test]
    async fn a_statement_that_succeeds_on_a_retry_returns_its_answer() {
        let mut calls = 0;
        let res: Result<i32> = retrying(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(broken_connection())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(res.unwrap(), 3);
    }

    #[tokio::test]
    async fn only_transient_errors_are_retried() {
        let mut calls = 0;
        let res: Result<()> = retrying_conflicts(|| {
            calls += 1;
            async { Err(broken_connection()) }
        })
        .await;
        assert!(res.is_err());
        assert_eq!(calls, 1, "a broken connection is no conflict");

        let mut calls = 0;
        let res: Result<()> = retrying(|| {
            calls += 1;
            async { Err(StoreError::Sql(sqlx::Error::RowNotFound)) }
        })
        .await;
        assert!(res.is_err());
        assert_eq!(calls, 1, "a missing row is not transient");
    }
}
