//! Retention: finished jobs older than `LANES_RETENTION` are deleted by the active server,
//! counted in `lanes_jobs_pruned_total`; newer ones and unfinished ones stay, and `GET /jobs`
//! answers meanwhile.

use crate::helpers::{submit, Opts, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn finished_jobs_older_than_the_retention_are_pruned() {
    let app = TestApp::with(Opts {
        workers: 1,
        env: vec![
            ("LANES_RETENTION".into(), "7d".into()),
            ("LANES_RETENTION_EVERY_MS".into(), "300".into()),
        ],
        ..Opts::default()
    })
    .await;
    let work: Vec<_> = (0..20)
        .map(|i| (submit("echo", json!(i), &[]), Some(format!("job-{i}"))))
        .collect();
    app.publish_many(&work).await;
    app.wait_final(20, Duration::from_secs(60)).await;
    // Half of them ended eight days ago; one more is unfinished and as old.
    let old: Vec<uuid::Uuid> = (0..10)
        .map(|i| lanes::protocol::job_id_from_message_id(&format!("job-{i}")))
        .collect();
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '8 days' WHERE id = ANY($1)")
        .bind(&old)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, task, args, resources, max_attempts, state, created_at)
         VALUES ($1, 'echo', 'null', '{}', 1, 'waiting', now() - interval '9 days')",
    )
    .bind(uuid::Uuid::new_v4())
    .execute(&app.pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Reads keep working while it prunes.
        let listed = app.get_json("/jobs?limit=100").await.unwrap();
        assert!(listed.is_array(), "{listed}");
        if app.rows().await.len() == 11 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old finished jobs were not pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = app.rows().await;
    assert!(
        rows.iter().all(|r| !old.contains(&r.id)),
        "an old job survived"
    );
    assert_eq!(rows.iter().filter(|r| r.state == "completed").count(), 10);
    assert_eq!(rows.iter().filter(|r| r.state == "waiting").count(), 1);
    assert_eq!(app.metric("lanes_jobs_pruned_total").await, 10.0);
}
