//! Lists by a state (`GET /jobs?state=failed`, the dashboard's pages) read `rare_states` for
//! the rare ones and `open_jobs` for the unfinished ones, which triggers keep; these check both
//! against the jobs table itself through every way a job enters or leaves those states: an
//! insert, a start, an end, a refused row stored failed, a cancel, a retry, a delayed job
//! firing (with a new seq), retention.

use crate::store::{job, started};
use crate::testdb::TestDb;
use chrono::Utc;
use lanes::store::{End, JobFilter, JobState, JobUpdate, PageQuery};
use std::time::Duration;
use uuid::Uuid;

fn ended(id: Uuid, state: JobState) -> JobUpdate {
    JobUpdate {
        end: Some(End {
            state,
            result: None,
            error: Some("boom".into()),
            at: Utc::now(),
        }),
        ..started(id)
    }
}

/// The ids in `state`, newest first, three ways: the table, `list` and `page` (two pages).
async fn listed(db: &TestDb, state: &str) -> [Vec<Uuid>; 3] {
    let truth: Vec<(Uuid,)> =
        sqlx::query_as("SELECT id FROM jobs WHERE state = $1 ORDER BY seq DESC")
            .bind(state)
            .fetch_all(&db.own().await)
            .await
            .unwrap();
    let filter = JobFilter {
        state: Some(state.into()),
        limit: Some(1000),
        ..JobFilter::default()
    };
    let list = db.store.list(&filter).await.unwrap();
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let q = PageQuery {
            filter: JobFilter {
                limit: Some(4),
                ..filter.clone()
            },
            before,
        };
        let page = db.store.page(&q).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        pages.extend(page.iter().map(|l| l.id));
    }
    [
        truth.into_iter().map(|(id,)| id).collect(),
        serde_json::from_slice::<Vec<lanes::store::Job>>(&list.json)
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect(),
        pages,
    ]
}

async fn assert_lists_agree(db: &TestDb, failed: usize, canceled: usize) {
    for (state, n) in [("failed", failed), ("canceled", canceled)] {
        let [truth, list, pages] = listed(db, state).await;
        assert_eq!(truth.len(), n, "{state} jobs in the table");
        assert_eq!(list, truth, "GET /jobs?state={state}");
        assert_eq!(pages, truth, "the dashboard's pages of {state} jobs");
    }
    for state in ["submitted", "waiting", "queued", "running", "scheduled"] {
        let [truth, list, pages] = listed(db, state).await;
        assert_eq!(list, truth, "GET /jobs?state={state}");
        assert_eq!(pages, truth, "the dashboard's pages of {state} jobs");
    }
    let (missing, stale): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE state IN ('submitted', 'waiting', 'queued', 'running')
                   AND seq NOT IN (SELECT seq FROM open_jobs)),
                (SELECT count(*) FROM open_jobs WHERE seq NOT IN
                   (SELECT seq FROM jobs WHERE state IN ('submitted', 'waiting', 'queued', 'running')))",
    )
    .fetch_one(&db.own().await)
    .await
    .unwrap();
    assert_eq!(
        (missing, stale),
        (0, 0),
        "open_jobs holds the unfinished jobs' seqs"
    );
}

#[tokio::test]
async fn lists_by_a_state_follow_every_way_into_and_out_of_it() {
    let db = TestDb::new().await;
    let running: Vec<_> = (0..12)
        .map(|_| job(JobState::Submitted, Some("p.q.0")))
        .collect();
    let waiting: Vec<_> = (0..5).map(|_| job(JobState::Waiting, None)).collect();
    let mut delayed = job(JobState::Scheduled, None);
    delayed.run_at = Some(Utc::now());
    // A row the Dispatcher stores failed at once (a refused submit).
    let refused = job(JobState::Failed, None);
    let all: Vec<_> = running
        .iter()
        .chain(&waiting)
        .chain([&refused, &delayed])
        .cloned()
        .collect();
    db.store.insert(&all).await.unwrap();
    assert_lists_agree(&db, 1, 0).await;

    let updates: Vec<_> = running
        .iter()
        .enumerate()
        .map(|(i, j)| match i % 3 {
            0 => ended(j.id, JobState::Failed),
            1 => ended(j.id, JobState::Completed),
            _ => started(j.id),
        })
        .collect();
    db.store.apply(&updates).await.unwrap();
    for w in &waiting[..3] {
        assert!(db.store.cancel_waiting(w.id).await.unwrap());
    }
    assert_lists_agree(&db, 5, 3).await;
    // A delayed job fires: it joins the order with a new seq.
    assert_eq!(db.store.fire(&[delayed.id]).await.unwrap(), [delayed.id]);
    assert_lists_agree(&db, 5, 3).await;

    // Retried: failed or canceled jobs become waiting again.
    for id in [running[0].id, waiting[0].id] {
        assert!(db.store.reset_for_retry(id).await.unwrap().is_some());
    }
    assert_lists_agree(&db, 4, 2).await;
    // The retried one fails again.
    db.store
        .apply(&[ended(running[0].id, JobState::Failed)])
        .await
        .unwrap();
    assert_lists_agree(&db, 5, 2).await;

    // Retention deletes the finished ones that ended long ago.
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '2 days' WHERE id = ANY($1)")
        .bind([running[3].id, waiting[1].id, running[1].id])
        .execute(&db.own().await)
        .await
        .unwrap();
    let pruned = db
        .store
        .prune_finished(Duration::from_secs(86_400), 100)
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    assert_lists_agree(&db, 4, 1).await;
}
