//! Readers released together: readers (`shared:doc`) submitted behind a writer of `doc` wait
//! for it to end and then run at the same time in different lanes, not one after another in
//! the writer's lane; the writer after them waits for all of them. Proven from the probe
//! tasks' execution log.

use crate::{
    execlog::{worker_env, ExecLog},
    helpers::{Opts, TestApp},
};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn readers_behind_a_writer_run_together_when_it_ends() {
    let mut log = ExecLog::new("readers");
    let app = TestApp::with(Opts {
        env: worker_env(),
        workers: 2,
        max_queues: 32,
        ..Opts::default()
    })
    .await;
    let (doc, shared) = (vec!["doc".to_owned()], vec!["shared:doc".to_owned()]);
    let mut jobs = vec![log.probe(&doc, 300)];
    let readers: Vec<_> = (0..20).map(|_| log.probe(&shared, 200)).collect();
    jobs.extend(readers.iter().cloned());
    jobs.push(log.probe(&doc, 50));
    app.publish_many(&jobs).await;
    let rows = app
        .wait_completed(jobs.len(), Duration::from_secs(60))
        .await;
    // Order and exclusion: the readers after the first writer, the last writer after them.
    log.assert_kept(&rows);
    let tokens: Vec<String> = readers.iter().map(|(_, t)| t.clone().unwrap()).collect();
    let most = log
        .running_at_starts(&tokens)
        .into_iter()
        .map(|(_, running)| running)
        .max()
        .unwrap_or(0);
    let lanes: std::collections::HashSet<_> = rows
        .iter()
        .filter(|r| tokens.contains(&r.id.to_string()))
        .filter_map(|r| r.queue.clone())
        .collect();
    let of_readers = |r: &&crate::helpers::Row| tokens.contains(&r.id.to_string());
    let first = rows
        .iter()
        .filter(of_readers)
        .filter_map(|r| r.started_at)
        .min()
        .unwrap();
    let last = rows
        .iter()
        .filter(of_readers)
        .filter_map(|r| r.finished_at)
        .max()
        .unwrap();
    eprintln!(
        "20 readers of 200 ms behind a writer: at most {most} at once, over {} lanes; the \
         first started and the last ended {} ms apart",
        lanes.len(),
        (last - first).num_milliseconds()
    );
    // Two workers run 16 tasks at once: the readers go in (at most) two rounds.
    assert!(most >= 8, "readers ran together: at most {most} at once");
    assert!(
        lanes.len() >= 4,
        "readers went to different lanes: {lanes:?}"
    );
}
