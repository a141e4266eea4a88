//! Setting aside what the control plane cannot take: a refused submit message or an event
//! message that does not parse goes to `<prefix>.dead` with its reason in `x-lanes-reason`
//! (and, when known, the job in `x-lanes-job-id`), so nothing bad comes back forever and
//! nothing is dropped without a trace. Each is also recorded in the table `dead_letters`
//! (the dashboard's page) and counted in `lanes_dead_letters_total{from}`.

use crate::{
    broker::{json_properties, BrokerError, Outgoing, Pending, Publisher, Topology},
    store::{Store, StoreError},
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tracing::warn;
use uuid::Uuid;

/// One message to set aside.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where it was read: `submit` or `events`.
    pub from: &'static str,
    pub job: Option<Uuid>,
    pub reason: String,
    pub body: Vec<u8>,
}

/// Why setting letters aside failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records the letters, then sends them in order; returns the confirms to wait for.
pub async fn send(
    publisher: &Publisher,
    store: &Store,
    topo: &Topology,
    letters: &[DeadLetter],
) -> Result<Vec<Pending>, DeadLetterError> {
    let records: Vec<_> = letters
        .iter()
        .map(|l| (l.from, l.job, l.reason.as_str(), l.body.as_slice()))
        .collect();
    store.record_dead(&records).await?;
    let dead = topo.dead();
    let messages: Vec<Outgoing> = letters
        .iter()
        .map(|l| {
            warn!(from = l.from, job = ?l.job, reason = %l.reason, "set a message aside");
            metrics::counter!("lanes_dead_letters_total", "from" => l.from).increment(1);
            let mut headers = FieldTable::default();
            headers.insert("x-lanes-reason".into(), long_string(&l.reason));
            if let Some(id) = l.job {
                headers.insert("x-lanes-job-id".into(), long_string(&id.to_string()));
            }
            Outgoing {
                exchange: "",
                routing_key: &dead,
                body: l.body.clone(),
                props: json_properties().with_headers(headers),
            }
        })
        .collect();
    Ok(publisher.send_all(&messages).await?)
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}
