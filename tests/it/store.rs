//! The job table's writes against the real PostgreSQL: what the hot path relies on when it
//! races the workers' events, and when the database drops every connection under it.

use crate::helpers::PG_URL;
use crate::testdb::TestDb;
use chrono::Utc;
use lanes::store::{self, sql, End, JobState, JobUpdate, NewJob};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

pub(crate) fn job(state: JobState, queue: Option<&str>) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        task: "noop".into(),
        args: json!({}),
        resources: vec!["r".into()],
        max_attempts: 3,
        state,
        queue: queue.map(str::to_owned),
        error: None,
        reply_to: None,
        correlation_id: None,
        timeout_ms: None,
        submitted_by: None,
        run_at: None,
    }
}

pub(crate) fn started(id: Uuid) -> JobUpdate {
    JobUpdate {
        attempt: 1,
        worker: Some("w".into()),
        started_at: Some(Utc::now()),
        ..JobUpdate::new(id)
    }
}

fn completed(id: Uuid) -> JobUpdate {
    JobUpdate {
        end: Some(End {
            state: JobState::Completed,
            result: Some(json!(1)),
            error: None,
            at: Utc::now(),
        }),
        ..started(id)
    }
}

#[tokio::test]
async fn a_queued_mark_never_moves_a_job_back_and_gives_a_woken_job_its_lane() {
    let db = TestDb::new().await;
    let routed = job(JobState::Submitted, Some("p.lane.1"));
    let woken = job(JobState::Waiting, None);
    let untouched = job(JobState::Submitted, Some("p.lane.2"));
    db.store
        .insert(&[routed.clone(), woken.clone(), untouched.clone()])
        .await
        .unwrap();
    // The workers' events arrive before the Dispatcher's marks.
    db.store
        .apply(&[completed(routed.id), started(woken.id)])
        .await
        .unwrap();
    db.store
        .mark_queued(&[
            (routed.id, "p.lane.1".into()),
            (woken.id, "p.lane.3".into()),
            (untouched.id, "p.lane.2".into()),
        ])
        .await
        .unwrap();

    let r = db.row(routed.id).await;
    assert_eq!(r.state, JobState::Completed);
    assert!(r.queued_at.is_some() && r.queued_at <= r.started_at);
    let w = db.row(woken.id).await;
    assert_eq!(w.state, JobState::Running);
    assert_eq!(w.queue.as_deref(), Some("p.lane.3"));
    let u = db.row(untouched.id).await;
    assert_eq!(u.state, JobState::Queued);
    assert!(u.queued_at.is_some());
    // The answer to a worker's question about a redelivered task: the state, attempts, and
    // the worker of the latest attempt.
    let records: Vec<_> = db
        .store
        .records(&[routed.id, woken.id])
        .await
        .unwrap()
        .into_iter()
        .map(|(id, state, attempts, worker, queue)| {
            assert!(queue.is_some(), "each has its lane");
            (id, state, attempts, worker)
        })
        .collect();
    assert!(records.contains(&(routed.id, JobState::Completed, 1, Some("w".into()))));
    assert!(records.contains(&(woken.id, JobState::Running, 1, Some("w".into()))));
}

#[tokio::test]
async fn every_statement_survives_the_database_ending_its_connections() {
    let db = TestDb::new().await;
    let first = job(JobState::Submitted, Some("p.lane.0"));
    db.store.insert(std::slice::from_ref(&first)).await.unwrap();

    // Stale pooled connections are not pinged before every use: these statements retry.
    db.drop_connections().await;
    db.store.ping().await.unwrap();
    db.drop_connections().await;
    db.store
        .mark_queued(&[(first.id, "p.lane.0".into())])
        .await
        .unwrap();
    // The apply is not retried on a broken connection (it may have committed); a connection
    // idle for a while is pinged before it is used instead.
    db.drop_connections().await;
    tokio::time::sleep(lanes::store::PING_IDLE + std::time::Duration::from_millis(200)).await;
    let ended = db.store.apply(&[completed(first.id)]).await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, JobState::Completed);
    db.drop_connections().await;
    assert_eq!(db.row(first.id).await.state, JobState::Completed);

    // An insert retried after a broken connection still tells new jobs from duplicates.
    let second = job(JobState::Submitted, Some("p.lane.0"));
    db.drop_connections().await;
    let new = db
        .store
        .insert(&[first.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(new, vec![second.id], "a finished job is a duplicate");
}

#[tokio::test]
async fn a_retried_insert_counts_the_unfinished_rows_its_first_attempt_left() {
    let db = TestDb::new().await;
    let committed = job(JobState::Submitted, Some("p.lane.0"));
    let finished = job(JobState::Submitted, Some("p.lane.0"));
    db.store
        .insert(&[committed.clone(), finished.clone()])
        .await
        .unwrap();
    db.store.apply(&[completed(finished.id)]).await.unwrap();

    // A first attempt that committed `committed` and lost its connection before the answer:
    // the retry must report it as new, or it would never be published.
    db.drop_connections().await;
    let fresh = job(JobState::Submitted, Some("p.lane.0"));
    let mut new = db
        .store
        .insert(&[committed.clone(), finished.clone(), fresh.clone()])
        .await
        .unwrap();
    new.sort();
    let mut want = vec![committed.id, fresh.id];
    want.sort();
    assert_eq!(new, want);
}

/// PostgreSQL caches a plan made while the job table was empty and keeps it as the table
/// grows; a plan that scanned the table would cost every batch more as the table fills
/// (`lanes bench` measured batch updates of up to 685 ms). So the plans the batch
/// statements get on an empty table must already find jobs by their primary key.
#[tokio::test]
async fn batch_statements_find_jobs_by_key_in_plans_made_on_an_empty_table() {
    let db = TestDb::new().await;
    let url = format!("{PG_URL}/{}", db.name);
    let mut conn = PgConnection::connect_with(&store::connect_options(&url).unwrap())
        .await
        .unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    for (name, statement) in [
        ("insert", sql::INSERT),
        ("mark_queued", sql::MARK_QUEUED),
        ("apply", sql::APPLY),
    ] {
        let params = (1..)
            .take_while(|n| statement.contains(&format!("${n}::")))
            .count();
        assert!(params > 0, "{name} takes its batch as parameters");
        sqlx::raw_sql(&format!("PREPARE {name} AS {statement}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let nulls = vec!["NULL"; params].join(", ");
        let lines: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN EXECUTE {name}({nulls})"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan: Vec<String> = lines.into_iter().map(|(l,)| l).collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on jobs"),
            "{name} scans the job table:\n{plan}"
        );
        assert!(
            plan.contains("jobs_pkey"),
            "{name} does not use the key:\n{plan}"
        );
    }
}

#[tokio::test]
async fn events_applied_twice_count_their_attempts_once() {
    let db = TestDb::new().await;
    let j = job(JobState::Submitted, Some("t.q.0"));
    db.store.insert(std::slice::from_ref(&j)).await.unwrap();
    // The same batch again, as when events are redelivered after their commit.
    db.store.apply(&[started(j.id)]).await.unwrap();
    db.store.apply(&[started(j.id)]).await.unwrap();
    assert_eq!(db.row(j.id).await.attempts, 1);
    let second = JobUpdate {
        attempt: 2,
        ..started(j.id)
    };
    db.store.apply(&[second]).await.unwrap();
    db.store.apply(&[started(j.id)]).await.unwrap();
    assert_eq!(
        db.row(j.id).await.attempts,
        2,
        "a late first attempt moves nothing back"
    );
}

#[tokio::test]
async fn a_job_that_ends_without_a_start_never_started() {
    let db = TestDb::new().await;
    let j = job(JobState::Submitted, Some("t.q.0"));
    db.store.insert(std::slice::from_ref(&j)).await.unwrap();
    // What a worker reports for a delivery it skipped: canceled before it ran.
    let skipped = JobUpdate {
        worker: Some("w".into()),
        end: Some(End {
            state: JobState::Canceled,
            result: None,
            error: Some("canceled".into()),
            at: Utc::now(),
        }),
        ..JobUpdate::new(j.id)
    };
    db.store.apply(&[skipped]).await.unwrap();
    let r = db.row(j.id).await;
    assert_eq!(r.state, JobState::Canceled);
    assert!(r.finished_at.is_some() && r.started_at.is_none(), "{r:?}");
}

#[tokio::test]
async fn a_lease_passes_on_expiry_or_death_and_fences_the_old_epochs_inserts() {
    use std::time::Duration;
    let db = TestDb::new().await;
    let long = Duration::from_secs(60);
    let mut a = db.store.lease_conn().await.unwrap();
    let mut b = db.store.lease_conn().await.unwrap();
    let first = a.take("p", "a", long).await.unwrap().expect("a free lease");
    assert_eq!(
        b.take("p", "b", long).await.unwrap(),
        None,
        "held and alive"
    );
    // An expired lease passes, with the next epoch; the old epoch's inserts fail.
    let short = Duration::from_millis(1);
    let lease = store::Lease {
        prefix: "p".into(),
        epoch: first,
    };
    assert!(a.renew(&lease, short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = b
        .take("p", "b", long)
        .await
        .unwrap()
        .expect("an expired lease");
    assert_eq!(second, first + 1);
    assert!(
        !a.renew(&lease, long).await.unwrap(),
        "the old epoch cannot renew"
    );
    let fenced = db.store.fenced_by(lease);
    let err = fenced
        .insert(&[job(JobState::Submitted, None)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    let current = db.store.fenced_by(store::Lease {
        prefix: "p".into(),
        epoch: second,
    });
    assert_eq!(
        current
            .insert(&[job(JobState::Submitted, None)])
            .await
            .unwrap()
            .len(),
        1
    );
    // A holder whose session is gone (its process died) loses the lease at once.
    drop(b);
    let mut c = db.store.lease_conn().await.unwrap();
    let mut third = None;
    for _ in 0..50 {
        third = c.take("p", "c", long).await.unwrap();
        if third.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(third, Some(second + 1));
}

#[tokio::test]
async fn a_report_the_database_refuses_fails_only_itself() {
    let db = TestDb::new().await;
    let jobs: Vec<NewJob> = (0..5)
        .map(|_| job(JobState::Submitted, Some("t.q.0")))
        .collect();
    db.store.insert(&jobs).await.unwrap();
    let mut updates: Vec<JobUpdate> = jobs.iter().map(|j| completed(j.id)).collect();
    // A value jsonb cannot hold, as a worker that skipped sanitizing might send.
    updates[2].end.as_mut().unwrap().result = Some(json!({"out": "a\u{0}b"}));
    assert!(
        db.store.apply(&updates).await.is_err(),
        "the batch as a whole is refused"
    );
    let applied = db.store.apply_isolating(&updates).await.unwrap();
    assert_eq!(applied.finished.len(), 4);
    assert_eq!(applied.refused.len(), 1);
    assert_eq!(applied.refused[0].0, jobs[2].id);
    for (i, j) in jobs.iter().enumerate() {
        let state = db.row(j.id).await.state;
        let want = if i == 2 {
            JobState::Submitted
        } else {
            JobState::Completed
        };
        assert_eq!(state, want, "job {i}");
    }
}

#[tokio::test]
async fn a_takeover_waits_for_the_writes_that_passed_the_fence() {
    use std::time::Duration;
    let db = TestDb::new().await;
    let mut holder = db.store.lease_conn().await.unwrap();
    let epoch = holder
        .take("p", "a", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await; // expired now
                                                         // A write of the holder that passed the fence and has not committed yet.
    let url = format!("{PG_URL}/{}", db.name);
    let mut writer = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut writer).await.unwrap();
    sqlx::query("SELECT lanes_fence('p', $1)")
        .bind(epoch)
        .execute(&mut writer)
        .await
        .unwrap();
    let mut standby = db.store.lease_conn().await.unwrap();
    let take = tokio::spawn(async move {
        standby
            .take("p", "b", Duration::from_secs(60))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!take.is_finished(), "the takeover waits for the write");
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    assert_eq!(take.await.unwrap(), Some(epoch + 1));
    // After the takeover, the old epoch's writes fail.
    let err = sqlx::query("SELECT lanes_fence('p', $1)")
        .bind(epoch)
        .execute(&mut writer)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
}
