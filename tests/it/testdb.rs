//! A Store on a database of its own, for tests of the job table's statements without a
//! server.

use crate::helpers::{block_on_in_drop, PG_URL};
use lanes::store::Store;
use sqlx::PgPool;
use uuid::Uuid;

/// A Store on a database of its own, dropped at the end.
pub(crate) struct TestDb {
    pub(crate) store: Store,
    pub(crate) admin: PgPool,
    pub(crate) name: String,
}

impl TestDb {
    pub(crate) async fn new() -> TestDb {
        let name = format!(
            "lanes_test_store_{}",
            &Uuid::new_v4().simple().to_string()[..10]
        );
        let store = Store::connect(&format!("{PG_URL}/{name}")).await.unwrap();
        let admin = PgPool::connect(&format!("{PG_URL}/postgres"))
            .await
            .unwrap();
        TestDb { store, admin, name }
    }

    /// A pool on this test's own database, for reads and writes the Store does not offer.
    pub(crate) async fn own(&self) -> PgPool {
        PgPool::connect(&format!("{PG_URL}/{}", self.name))
            .await
            .unwrap()
    }

    pub(crate) async fn row(&self, id: Uuid) -> lanes::store::Job {
        self.store.get(id).await.unwrap().expect("the job's row")
    }

    /// Ends every session on this database, as a database restart does.
    pub(crate) async fn drop_connections(&self) {
        let ended: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&self.name)
        .fetch_all(&self.admin)
        .await
        .unwrap();
        assert!(!ended.is_empty(), "the store had no connection to end");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A pool of its own: the test's pools belong to the test's runtime.
        block_on_in_drop(async move {
            if let Ok(admin) = PgPool::connect(&format!("{PG_URL}/postgres")).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&admin)
                    .await;
            }
        });
    }
}
