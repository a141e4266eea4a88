//! Attempts a broker user makes, each answering whether the broker allowed it.

use crate::helpers::submit;
use lapin::{
    options::{
        BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
    BasicProperties, Connection, ConnectionProperties, ErrorKind,
};
use serde_json::Value;

pub(super) fn is_access_refused(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 403)
}

#[track_caller]
pub(super) fn assert_refused<T>(what: &str, result: Result<T, lapin::Error>) {
    match result {
        Ok(_) => panic!("{what}: allowed, but must be refused"),
        Err(e) => assert!(
            is_access_refused(&e),
            "{what}: expected ACCESS_REFUSED, got {e:?}"
        ),
    }
}

pub(super) async fn connect(url: &str, name: &str) -> Connection {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .unwrap_or_else(|e| panic!("{name} cannot log in: {e}"))
}

pub(super) async fn try_consume(conn: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.basic_consume(
        queue.into(),
        "lanes-test-probe".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

pub(super) async fn try_get(conn: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.basic_get(queue.into(), BasicGetOptions::default())
        .await?;
    Ok(())
}

pub(super) async fn try_declare(conn: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Publishes with confirms; an unauthorised publish comes back as the channel's close.
pub(super) async fn try_publish(
    conn: &Connection,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        &submit("noop", Value::Null, &[]),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await?
    .await?;
    Ok(())
}
