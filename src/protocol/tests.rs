use super::*;
use serde_json::json;

/// A fixed arrival time.
fn now() -> DateTime<Utc> {
    "2026-12-07T12:00:00Z".parse().unwrap()
}

fn parse(body: &str) -> Result<TaskSpec, Invalid> {
    parse_submit(body.as_bytes(), Uuid::nil(), 1024, now(), |t| t == "echo")
}

#[test]
fn accepts_a_full_submit_and_normalises_resources() {
    let spec =
        parse(r#"{"task":"echo","args":{"a":1},"resources":["b","a","b"],"max_attempts":5}"#)
            .unwrap();
    assert_eq!(spec.task, "echo");
    assert_eq!(spec.args, json!({"a":1}));
    assert_eq!(spec.resources, vec!["a", "b"]);
    assert_eq!(spec.max_attempts, 5);
}

#[test]
fn defaults_apply() {
    let spec = parse(r#"{"task":"echo"}"#).unwrap();
    assert_eq!(spec.args, Value::Null);
    assert!(spec.resources.is_empty());
    assert_eq!(spec.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(spec.timeout_ms, None);
}

#[test]
fn timeouts_are_positive_and_bounded() {
    let spec = parse(r#"{"task":"echo","timeout_ms":1500}"#).unwrap();
    assert_eq!(spec.timeout_ms, Some(1500));
    for bad in [
        "0",
        "-5",
        "1.5",
        "\"1s\"",
        &(MAX_TIMEOUT_MS + 1).to_string(),
    ] {
        let body = format!(r#"{{"task":"echo","timeout_ms":{bad}}}"#);
        assert_eq!(parse(&body), Err(Invalid::BadTimeout), "{body}");
    }
}

#[test]
fn rejects_bad_input_with_clear_reasons() {
    assert!(matches!(parse("{nope"), Err(Invalid::NotJson(_))));
    assert_eq!(parse("[1]"), Err(Invalid::NotObject("an array")));
    assert_eq!(parse(r#"{"args":1}"#), Err(Invalid::BadTask));
    assert_eq!(parse(r#"{"task":7}"#), Err(Invalid::BadTask));
    assert_eq!(
        parse(r#"{"task":"nope"}"#),
        Err(Invalid::UnknownTask("nope".into()))
    );
    assert_eq!(
        parse(r#"{"task":"echo","resources":"r"}"#),
        Err(Invalid::BadResources)
    );
    assert_eq!(
        parse(r#"{"task":"echo","resources":[1]}"#),
        Err(Invalid::BadResources)
    );
    assert_eq!(
        parse(r#"{"task":"echo","max_attempts":0}"#),
        Err(Invalid::BadMaxAttempts)
    );
    let big = format!(r#"{{"task":"echo","args":"{}"}}"#, "x".repeat(2000));
    assert!(matches!(parse(&big), Err(Invalid::TooLarge { .. })));
}

#[test]
fn rejects_what_storage_cannot_hold() {
    assert_eq!(
        parse(r#"{"task":"echo","args":{"a":"x\u0000"}}"#),
        Err(Invalid::Nul("field `args`"))
    );
    assert_eq!(
        parse(r#"{"task":"echo","args":{"k\u0000":1}}"#),
        Err(Invalid::Nul("field `args`"))
    );
    assert_eq!(
        parse(r#"{"task":"echo","resources":["r\u0000"]}"#),
        Err(Invalid::Nul("a resource name"))
    );
    let long = format!(r#"{{"task":"echo","resources":["{}"]}}"#, "r".repeat(300));
    assert!(matches!(
        parse(&long),
        Err(Invalid::ResourceTooLong { len: 300, .. })
    ));
    let many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    let body = json!({"task": "echo", "resources": many}).to_string();
    assert!(matches!(
        parse(&body),
        Err(Invalid::TooManyResources { count: 65, .. })
    ));
}

#[test]
fn message_ids_map_to_stable_job_ids() {
    let u = Uuid::new_v4();
    assert_eq!(job_id_from_message_id(&u.to_string()), u);
    assert_eq!(
        job_id_from_message_id("order-7"),
        job_id_from_message_id("order-7")
    );
    assert_ne!(
        job_id_from_message_id("order-7"),
        job_id_from_message_id("order-8")
    );
}

#[test]
fn events_round_trip() {
    let e = Event::Started {
        job: Uuid::nil(),
        worker: "w".into(),
        attempt: 1,
        at: Utc::now(),
    };
    let s = serde_json::to_string(&e).unwrap();
    assert!(s.contains(r#""type":"started""#));
    let _: Event = serde_json::from_str(&s).unwrap();
}

#[test]
fn heartbeats_name_their_control_queue_and_older_ones_still_parse() {
    let older =
        r#"{"type":"heartbeat","worker":"w","lanes":[],"running":[],"at":"2026-01-01T00:00:00Z"}"#;
    let Event::Heartbeat { control, .. } = serde_json::from_str::<Event>(older).unwrap() else {
        panic!("not a heartbeat")
    };
    assert_eq!(control, None);
    let Event::Heartbeat { slots, .. } = serde_json::from_str::<Event>(older).unwrap() else {
        panic!("not a heartbeat")
    };
    assert_eq!(slots, None);
    let beat = Event::Heartbeat {
        worker: "w".into(),
        lanes: Vec::new(),
        running: Vec::new(),
        at: Utc::now(),
        tasks: Vec::new(),
        control: Some("p.worker.w.ab".into()),
        slots: Some(8),
    };
    let s = serde_json::to_string(&beat).unwrap();
    let Event::Heartbeat { control, .. } = serde_json::from_str::<Event>(&s).unwrap() else {
        panic!("not a heartbeat")
    };
    assert_eq!(control.as_deref(), Some("p.worker.w.ab"));
}

#[test]
fn a_typo_is_refused_with_the_field_it_resembles() {
    let refused = |body: &str| parse(body).unwrap_err().to_string();
    let e = refused(r#"{"task":"echo","resource":["repo:1"]}"#);
    assert!(
        e.contains("unknown field `resource`; did you mean `resources`?"),
        "{e}"
    );
    let e = refused(r#"{"task":"echo","max_attempt":5}"#);
    assert!(e.contains("did you mean `max_attempts`?"), "{e}");
    let e = refused(r#"{"task":"echo","timeout":5}"#);
    assert!(e.contains("did you mean `timeout_ms`?"), "{e}");
    let e = refused(r#"{"task":"echo","args":{},"priority":1}"#);
    assert!(
        e.contains("unknown field `priority`") && !e.contains("did you mean"),
        "{e}"
    );
    // The fields a submit has are named, so the fix is in the message.
    assert!(e.contains("`resources`"), "{e}");
    let long = "x".repeat(1000);
    let e = refused(&format!(r#"{{"task":"echo","{long}":1}}"#));
    assert!(e.len() < 300, "a long name is cut: {e}");
}

#[test]
fn a_due_time_is_a_time_or_a_delay_never_both() {
    let at = parse(r#"{"task":"echo","run_at":"2026-12-07T13:00:00+01:00"}"#).unwrap();
    assert_eq!(at.run_at, Some(now()), "an offset is converted to UTC");
    let later = parse(r#"{"task":"echo","delay_ms":1500}"#).unwrap();
    assert_eq!(
        later.run_at,
        Some(now() + chrono::Duration::milliseconds(1500))
    );
    let past = parse(r#"{"task":"echo","run_at":"2020-01-01T00:00:00Z"}"#).unwrap();
    assert!(past.run_at.unwrap() < now(), "a time past is due at once");
    assert_eq!(
        parse(r#"{"task":"echo","run_at":null}"#).unwrap().run_at,
        None
    );
    for bad in [
        r#""tomorrow""#,
        "1700000000",
        r#""2026-12-07 13:00""#,
        r#""2099-01-01T00:00:00Z""#,
    ] {
        let body = format!(r#"{{"task":"echo","run_at":{bad}}}"#);
        assert_eq!(parse(&body), Err(Invalid::BadRunAt), "{body}");
    }
    for bad in ["-1", "1.5", r#""10m""#, &(MAX_DELAY_MS + 1).to_string()] {
        let body = format!(r#"{{"task":"echo","delay_ms":{bad}}}"#);
        assert_eq!(parse(&body), Err(Invalid::BadDelay), "{body}");
    }
    let both = r#"{"task":"echo","delay_ms":5,"run_at":"2026-12-07T13:00:00Z"}"#;
    assert_eq!(parse(both), Err(Invalid::TwoDueTimes));
    let typo = parse(r#"{"task":"echo","delay":5}"#)
        .unwrap_err()
        .to_string();
    assert!(typo.contains("did you mean `delay_ms`"), "{typo}");
}
