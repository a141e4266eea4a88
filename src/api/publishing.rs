//! The API's own broker connection, for submits and executors' reports.
//!
//! Publishes are confirmed, and they pipeline: the lock guards only the connection slot, never
//! a confirm, so concurrent requests share the broker's round trips instead of queueing behind
//! each other's. And the API listens to what the broker says of the connection: while
//! RabbitMQ blocks publishers (a memory or disk alarm), a submit is refused at once with the
//! broker's reason (nothing was sent), a publish that was caught by the block answers within
//! `CONFIRM_WAIT` instead of hanging, and `/healthz` says why everything stands still.

use crate::{
    broker::{self, BrokerError, Publisher},
    tls::Trust,
};
use futures::StreamExt;
use lapin::{BasicProperties, Connection};
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex as StdMutex,
    },
    time::{Duration, Instant},
};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// How long a publish waits for the broker's confirm before the request gives up.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// Why a publish did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker blocks this connection's publishes; nothing was sent.
    #[error("the broker blocks publishers ({0}); nothing was sent, try again later")]
    Blocked(String),
    /// Sent, but not confirmed in time: the broker may still take it.
    #[error("the broker did not confirm within {} s{}", CONFIRM_WAIT.as_secs(), .0.as_ref().map(|r| format!(" (it blocks publishers: {r})")).unwrap_or_default())]
    NotConfirmed(Option<String>),
    /// The broker refused it, or the connection failed twice.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// One connection and its confirm-mode channel; `generation` tells a reconnect apart.
#[derive(Clone)]
struct Link {
    generation: u64,
    conn: Arc<Connection>,
    publisher: Publisher,
}

/// The broker's block of one connection.
struct Blocked {
    generation: u64,
    reason: String,
    since: Instant,
}

/// See the module docs.
pub struct ApiPublisher {
    amqp_url: String,
    /// The broker user of `amqp_url`, read once.
    user: Option<String>,
    trust: Trust,
    slot: Mutex<Option<Link>>,
    blocked: Arc<StdMutex<Option<Blocked>>>,
    generations: AtomicU64,
}

impl ApiPublisher {
    pub fn new(amqp_url: String, trust: Trust) -> Self {
        ApiPublisher {
            user: broker::user_of(&amqp_url),
            amqp_url,
            trust,
            slot: Mutex::new(None),
            blocked: Arc::new(StdMutex::new(None)),
            generations: AtomicU64::new(0),
        }
    }

    /// The broker user this API connects as (the broker checks a message's `user_id` against
    /// it).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The broker's reason, while it blocks this API's publishes.
    pub fn blocked(&self) -> Option<String> {
        let blocked = self.blocked.lock().expect("blocked lock");
        blocked.as_ref().map(|b| b.reason.clone())
    }

    /// Publishes (confirmed), connecting (again) when needed.
    pub async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let mut last = None;
        for _ in 0..2 {
            if let Some(reason) = self.blocked() {
                return Err(PublishError::Blocked(reason));
            }
            let link = self.link().await?;
            let sent = link
                .publisher
                .send(exchange, key, body, props.clone())
                .await;
            let confirmed = match sent {
                Ok(pending) => {
                    match tokio::time::timeout(CONFIRM_WAIT, pending.confirmed()).await {
                        Ok(confirmed) => confirmed,
                        Err(_) => return Err(PublishError::NotConfirmed(self.blocked())),
                    }
                }
                Err(e) => Err(e),
            };
            match confirmed {
                Ok(()) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, "publish failed; reconnecting");
                    self.forget(link.generation).await;
                    last = Some(e);
                }
            }
        }
        Err(last.expect("two attempts failed").into())
    }

    /// The current link, or a new one.
    async fn link(&self) -> Result<Link, BrokerError> {
        let mut slot = self.slot.lock().await;
        if let Some(link) = slot.as_ref().filter(|l| l.conn.status().connected()) {
            return Ok(link.clone());
        }
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let conn =
            broker::connect(&self.amqp_url, &format!("lanes-api@{host}"), &self.trust).await?;
        let publisher = Publisher::new(&conn).await?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.watch(&conn, generation);
        let link = Link {
            generation,
            conn: Arc::new(conn),
            publisher,
        };
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Drops the link of `generation` (unless a newer one replaced it already).
    async fn forget(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|l| l.generation == generation) {
            *slot = None;
        }
        let mut blocked = self.blocked.lock().expect("blocked lock");
        if blocked.as_ref().is_some_and(|b| b.generation == generation) {
            *blocked = None;
            metrics::gauge!("lanes_broker_blocked").set(0.0);
        }
    }

    /// Follows the broker's `connection.blocked` and `connection.unblocked` of a connection.
    fn watch(&self, conn: &Connection, generation: u64) {
        let mut events = conn.events_listener();
        let blocked = self.blocked.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let mut state = blocked.lock().expect("blocked lock");
                match event {
                    lapin::Event::ConnectionBlocked(reason) => {
                        warn!(%reason, "the broker blocks publishers: submits are refused until it lifts");
                        metrics::gauge!("lanes_broker_blocked").set(1.0);
                        *state = Some(Blocked {
                            generation,
                            reason,
                            since: Instant::now(),
                        });
                    }
                    lapin::Event::ConnectionUnblocked => {
                        if let Some(b) = state.take() {
                            let secs = b.since.elapsed().as_secs_f64();
                            info!(blocked_s = secs, "the broker takes publishes again");
                            metrics::counter!("lanes_broker_blocked_seconds_total")
                                .increment(secs.ceil() as u64);
                        }
                        metrics::gauge!("lanes_broker_blocked").set(0.0);
                    }
                    _ => {}
                }
            }
        });
    }
}
