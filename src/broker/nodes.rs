//! The nodes of a RabbitMQ cluster, as `LANES_AMQP_URL` lists them (comma separated), and a
//! connection to whichever answers first. Every role reconnects through here when its
//! connection is lost, so a stopped node costs each of its clients one failed attempt and a
//! reconnect to the next node, not an outage.

use super::BrokerError;
use crate::config::redact;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;
use tracing::{info, warn};

/// How long one node may take to accept a connection before the next is tried: a node cut
/// off by a partition does not refuse, it stays silent.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The URLs of a comma-separated list, in order, blanks dropped.
pub fn split(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Connects to the first node of `urls` (comma separated) that answers, in the order given,
/// with a name the management UI shows (e.g. `lanes-worker-<id>@host`). Clients list the
/// nodes in different orders to spread themselves over a cluster.
pub async fn connect(urls: &str, name: &str) -> Result<Connection, BrokerError> {
    let nodes = split(urls);
    let mut last = None;
    for url in &nodes {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props));
        match attempt.await {
            Ok(Ok(conn)) => {
                if nodes.len() > 1 {
                    info!(node = %redact(url), connection = name, "connected to RabbitMQ");
                }
                return Ok(conn);
            }
            Ok(Err(e)) => {
                if nodes.len() > 1 {
                    warn!(node = %redact(url), error = %e, "RabbitMQ node did not answer; trying the next");
                }
                last = Some(e.to_string());
            }
            Err(_) => {
                warn!(node = %redact(url), timeout = ?CONNECT_TIMEOUT, "RabbitMQ node did not answer in time");
                last = Some(format!("no answer within {CONNECT_TIMEOUT:?}"));
            }
        }
    }
    Err(BrokerError::Connect {
        url: redact(urls),
        reason: last.unwrap_or_else(|| "no URL given".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_and_drop_blanks() {
        assert_eq!(split("amqp://a, amqp://b,,"), vec!["amqp://a", "amqp://b"]);
        assert_eq!(split("amqp://a"), vec!["amqp://a"]);
        assert!(split(" , ").is_empty());
    }

    #[tokio::test]
    async fn an_error_names_every_node_without_its_password() {
        let urls = "amqp://u:secret@127.0.0.1:1/%2f,amqp://u:secret@127.0.0.1:2/%2f";
        let err = connect(urls, "probe").await.unwrap_err().to_string();
        assert!(
            err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
}
