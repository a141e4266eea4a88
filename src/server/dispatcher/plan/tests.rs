//! The batch plan and settle without a broker or database: classification, routing in submit
//! order, duplicates (in the batch, in the Router, in the database), and recovery.

use super::*;
use serde_json::json;

const MAX: usize = 1 << 20;

fn topo() -> Topology {
    Topology::new("t")
}

fn body(task: &str, resources: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({"task": task, "resources": resources})).unwrap()
}

fn incoming<'a>(id: Option<&'a str>, body: &'a [u8]) -> Incoming<'a> {
    Incoming {
        message_id: id,
        reply_to: None,
        correlation_id: None,
        body,
        idless: None,
        submitted_by: None,
    }
}

#[test]
fn an_idless_message_keeps_the_id_it_was_given_and_is_marked_until_acked() {
    let mut router = Router::new(2, 2);
    let (b, given, digest) = (body("noop", &["a"]), Uuid::new_v4(), Uuid::new_v4());
    let with_id = Uuid::new_v4().to_string();
    let mut idless = incoming(None, &b);
    idless.idless = Some((given, digest));
    let batch = [idless, incoming(Some(&with_id), &b)];
    let plan = plan(&batch, &mut router, &topo(), MAX, Utc::now(), known);
    assert_eq!(plan.accepted[0], given);
    // Only the message without an id is marked, with its digest.
    assert_eq!(plan.marks, vec![(given, digest)]);
}

fn known(t: &str) -> bool {
    t == "noop"
}

#[test]
fn a_batch_is_routed_in_order_and_recorded_with_lanes_or_as_waiting() {
    let mut router = Router::new(2, 2);
    let (a, b, ab) = (
        body("noop", &["a"]),
        body("noop", &["b"]),
        body("noop", &["a", "b"]),
    );
    let none = body("noop", &[]);
    let batch = [
        incoming(Some("1"), &a),
        incoming(Some("2"), &b),
        incoming(Some("3"), &ab),
        incoming(Some("4"), &none),
    ];
    let p = plan(&batch, &mut router, &topo(), MAX, Utc::now(), known);
    let states: Vec<_> = p.rows.iter().map(|r| (r.state, r.queue.clone())).collect();
    assert_eq!(
        states,
        vec![
            (JobState::Submitted, Some("t.q.0".into())),
            (JobState::Submitted, Some("t.q.1".into())),
            (JobState::Waiting, None),
            (JobState::Submitted, Some("t.q.default".into())),
        ]
    );
    let targets: Vec<_> = p.routed.iter().map(|(_, t)| *t).collect();
    assert_eq!(targets, [Target::Lane(0), Target::Lane(1), Target::Default]);
    assert_eq!(p.accepted.len(), 4);
    assert_eq!(router.waiting_len(), 1);
}

#[test]
fn invalid_messages_are_rejected_and_recorded_failed_only_with_an_id() {
    let mut router = Router::new(1, 1);
    let (unknown, not_json) = (body("nope", &["a"]), b"{".to_vec());
    let batch = [incoming(Some("x"), &unknown), incoming(None, &not_json)];
    let p = plan(&batch, &mut router, &topo(), MAX, Utc::now(), known);
    assert_eq!(p.rejected.len(), 2);
    assert_eq!(p.rejected[0].reason, Invalid::UnknownTask("nope".into()));
    assert!(matches!(p.rejected[1].reason, Invalid::NotJson(_)));
    assert_eq!(p.rows.len(), 1, "only the message with an id is recorded");
    assert_eq!(p.rows[0].state, JobState::Failed);
    assert_eq!(p.rows[0].id, job_id_from_message_id("x"));
    assert!(p.routed.is_empty() && p.accepted.is_empty());
}

#[test]
fn duplicates_in_the_batch_and_in_the_router_are_counted_not_routed() {
    let mut router = Router::new(1, 1);
    let a = body("noop", &["a"]);
    let first = plan(
        &[incoming(Some("1"), &a)],
        &mut router,
        &topo(),
        MAX,
        Utc::now(),
        known,
    );
    assert_eq!(first.routed.len(), 1);
    let again = [
        incoming(Some("1"), &a),
        incoming(Some("2"), &a),
        incoming(Some("2"), &a),
    ];
    let p = plan(&again, &mut router, &topo(), MAX, Utc::now(), known);
    assert_eq!(p.duplicates, 2);
    assert_eq!(p.accepted, vec![job_id_from_message_id("2")]);
}

#[test]
fn jobs_the_database_had_leave_the_router_and_free_their_waiters() {
    let mut router = Router::new(2, 2);
    let (a, b, ab) = (
        body("noop", &["a"]),
        body("noop", &["b"]),
        body("noop", &["a", "b"]),
    );
    let batch = [
        incoming(Some("1"), &a),
        incoming(Some("2"), &b),
        incoming(Some("3"), &ab),
    ];
    let mut p = plan(&batch, &mut router, &topo(), MAX, Utc::now(), known);
    // The database already had job 2: it is not sent, and job 3 no longer waits for it: it
    // joins job 1's lane, behind it.
    let had = job_id_from_message_id("2");
    let inserted: Vec<Uuid> = p.accepted.iter().copied().filter(|id| *id != had).collect();
    let s = settle(&mut p, &inserted, &[], &mut router);
    assert!(p.rejected.is_empty());
    assert_eq!(s.new, 2);
    assert_eq!(s.duplicates, 1);
    let sent: Vec<_> = s.routed.iter().map(|(spec, t)| (spec.id, *t)).collect();
    assert_eq!(sent, vec![(job_id_from_message_id("1"), Target::Lane(0))]);
    let woken: Vec<_> = s.woken.iter().map(|(spec, t)| (spec.id, *t)).collect();
    assert_eq!(woken, vec![(job_id_from_message_id("3"), Target::Lane(0))]);
    assert!(!router.knows(&had));
    assert_eq!(router.waiting_len(), 0);
}

#[test]
fn jobs_the_database_refused_are_set_aside_with_their_reason_and_free_their_waiters() {
    let mut router = Router::new(2, 2);
    let (a, b, ab, b2) = (
        body("noop", &["a"]),
        body("poison", &["b"]),
        body("noop", &["a", "b"]),
        body("noop", &["b"]),
    );
    let batch = [
        incoming(Some("1"), &a),
        incoming(Some("2"), &b),
        incoming(Some("3"), &ab),
        incoming(Some("4"), &b2),
    ];
    let mut p = plan(&batch, &mut router, &topo(), MAX, Utc::now(), |_| true);
    let (bad, waiter) = (job_id_from_message_id("2"), job_id_from_message_id("4"));
    // The database refuses job 2 (routed) and job 4 (waiting behind 3): the rows it was given.
    let row = |id: Uuid| p.rows.iter().find(|r| r.id == id).unwrap().clone();
    let refused = vec![
        (row(bad), "no".to_owned()),
        (row(waiter), "nor this".to_owned()),
    ];
    let inserted: Vec<Uuid> = p
        .accepted
        .iter()
        .copied()
        .filter(|id| *id != bad && *id != waiter)
        .collect();
    let s = settle(&mut p, &inserted, &refused, &mut router);
    assert_eq!((s.new, s.duplicates), (2, 0));
    let sent: Vec<_> = s.routed.iter().map(|(spec, _)| spec.id).collect();
    assert_eq!(sent, vec![job_id_from_message_id("1")]);
    let woken: Vec<_> = s.woken.iter().map(|(spec, _)| spec.id).collect();
    assert_eq!(woken, vec![job_id_from_message_id("3")]);
    let aside: Vec<_> = p
        .rejected
        .iter()
        .map(|r| (r.id, r.reason.to_string()))
        .collect();
    assert_eq!(aside.len(), 2);
    assert_eq!(aside[0].0, Some(bad));
    assert!(aside[0].1.contains("refused") && aside[0].1.contains("no"));
    let body: serde_json::Value = serde_json::from_slice(&p.rejected[0].body).unwrap();
    assert_eq!(body["task"], "poison");
    let body: serde_json::Value = serde_json::from_slice(&p.rejected[1].body).unwrap();
    assert_eq!(body["resources"], json!(["b"]));
    assert_eq!(
        body["max_attempts"], 3,
        "the row as it was to be stored: {body}"
    );
    assert!(!router.knows(&bad) && !router.knows(&waiter));
    assert_eq!(router.waiting_len(), 0);
    let rows = refused_rows(&refused);
    assert!(rows.iter().all(|r| r.state == JobState::Failed));
    assert!(rows[1].error.as_deref().unwrap().contains("nor this"));
}

#[test]
fn recovery_keeps_recorded_lanes_and_routes_only_waiting_jobs_afresh() {
    let row = |n: u128, state, queue: Option<&str>, res: &[&str]| Unfinished {
        id: Uuid::from_u128(n),
        task: "noop".into(),
        args: None,
        resources: res.iter().map(|r| r.to_string()).collect(),
        queue: queue.map(str::to_owned),
        state,
        attempts: 0,
        max_attempts: 3,
        timeout_ms: Some(500),
    };
    let rows = vec![
        row(1, JobState::Running, Some("t.q.1"), &["a"]),
        // Recorded with a lane whose message may exist: a copy goes to the same lane, even
        // though lane 0 would be free for it now.
        row(2, JobState::Submitted, Some("t.q.1"), &["b"]),
        row(3, JobState::Submitted, Some("t.q.default"), &[]),
        row(4, JobState::Waiting, None, &["a", "c"]),
        row(5, JobState::Waiting, None, &["d"]),
        // Beyond the pool: routed afresh.
        row(6, JobState::Submitted, Some("t.q.9"), &["e"]),
    ];
    let mut router = Router::new(2, 2);
    let r = recover(rows, &mut router, &topo());
    let resend: Vec<_> = r.resend.iter().map(|(s, t)| (s.id.as_u128(), *t)).collect();
    assert_eq!(resend, vec![(2, Target::Lane(1)), (3, Target::Default)]);
    let publish: Vec<_> = r
        .publish
        .iter()
        .map(|(s, t)| (s.id.as_u128(), *t))
        .collect();
    assert_eq!(
        publish,
        vec![
            (4, Target::Lane(1)),
            (5, Target::Lane(0)),
            (6, Target::Lane(0))
        ]
    );
    assert!(router.is_routed(&Uuid::from_u128(1)));
    assert!(router.is_routed(&Uuid::from_u128(2)));
}

#[test]
fn a_recovered_job_keeps_its_timeout() {
    let row = Unfinished {
        id: Uuid::from_u128(9),
        task: "noop".into(),
        args: None,
        resources: vec!["a".into()],
        queue: Some("t.q.0".into()),
        state: JobState::Queued,
        attempts: 1,
        max_attempts: 3,
        timeout_ms: Some(1500),
    };
    assert_eq!(spec_of(row).timeout_ms, Some(1500));
}

#[test]
fn a_reply_to_naming_one_of_the_deployments_queues_is_refused() {
    let mut router = Router::new(2, 2);
    let b = body("noop", &["a"]);
    let cases = [("t.q.0", false), ("t", false), ("t.worker.w1.ab", false)];
    let mine = [("amq.gen-xyz", true), ("tq.0", true), ("reply.t.q", true)];
    for (reply_to, allowed) in cases.into_iter().chain(mine) {
        let mut m = incoming(None, &b);
        m.reply_to = Some(reply_to.into());
        let plan = plan(&[m], &mut router, &topo(), MAX, Utc::now(), known);
        assert_eq!(plan.rejected.is_empty(), allowed, "{reply_to}");
        if !allowed {
            let reason = plan.rejected[0].reason.to_string();
            assert!(reason.contains("reply_to"), "{reason}");
        }
    }
}

#[test]
fn the_waiting_line_holds_no_arguments_and_sending_gives_them_back() {
    let mut router = Router::new(2, 2);
    let with_args = |resources: &[&str]| {
        serde_json::to_vec(
            &json!({"task": "noop", "args": {"big": "x".repeat(1000)}, "resources": resources}),
        )
        .unwrap()
    };
    let (a, b, ab) = (with_args(&["a"]), with_args(&["b"]), with_args(&["a", "b"]));
    let batch = [
        incoming(Some("1"), &a),
        incoming(Some("2"), &b),
        incoming(Some("3"), &ab),
    ];
    let p = plan(&batch, &mut router, &topo(), MAX, Utc::now(), known);
    // Routed jobs keep their arguments; the waiting one's stay in its row only.
    assert!(p.routed.iter().all(|(s, _)| s.args["big"].is_string()));
    let waiting = job_id_from_message_id("3");
    assert_eq!(
        router.waiting_task(&waiting).unwrap().args,
        serde_json::Value::Null
    );
    assert_eq!(p.rows[2].args["big"].as_str().unwrap().len(), 1000);
    let mut woken = release(
        &mut router,
        &[job_id_from_message_id("1"), job_id_from_message_id("2")],
    );
    assert_eq!(woken.len(), 1);
    let mut args = HashMap::from([(waiting, json!({"big": "back"}))]);
    fill_args(&mut woken, &mut args);
    assert_eq!(woken[0].0.args, json!({"big": "back"}));
}

#[test]
fn only_the_servers_own_broker_user_vouches_for_a_token_name() {
    let by = |u, h| submitted_by(u, h, Some("lanes-server"));
    assert_eq!(by(Some("lanes-server"), Some("ci")), Some("ci".to_owned()));
    assert_eq!(
        by(Some("mallory"), Some("ci")),
        Some("amqp:mallory".to_owned())
    );
    assert_eq!(by(None, Some("ci")), Some("amqp".to_owned()));
    assert_eq!(
        by(Some("lanes-server"), None),
        Some("amqp:lanes-server".to_owned())
    );
}

#[test]
fn a_job_due_later_is_recorded_scheduled_and_holds_nothing_until_it_fires() {
    let mut router = Router::new(2, 2);
    let now = Utc::now();
    let later =
        serde_json::to_vec(&json!({"task": "noop", "resources": ["a"], "delay_ms": 5000})).unwrap();
    let sooner =
        serde_json::to_vec(&json!({"task": "noop", "resources": ["b"], "delay_ms": 10})).unwrap();
    let past = serde_json::to_vec(
        &json!({"task": "noop", "resources": ["a"], "run_at": "2020-01-01T00:00:00Z"}),
    )
    .unwrap();
    let batch = [
        incoming(Some("1"), &later),
        incoming(Some("2"), &sooner),
        incoming(Some("3"), &past),
    ];
    let p = plan(&batch, &mut router, &topo(), MAX, now, known);
    let states: Vec<JobState> = p.rows.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [
            JobState::Scheduled,
            JobState::Scheduled,
            JobState::Submitted
        ]
    );
    assert_eq!(p.accepted.len(), 3);
    assert_eq!(p.first_due, Some(now + chrono::Duration::milliseconds(10)));
    assert!(
        p.rows.iter().all(|r| r.run_at.is_some()),
        "each keeps its due time"
    );
    // The job due in the past is routed at once, and nothing holds `a` before it.
    assert_eq!(p.routed.len(), 1);
    assert_eq!(p.routed[0].0.id, p.rows[2].id);
    assert!(!router.knows(&p.rows[0].id) && !router.knows(&p.rows[1].id));
}
