//! The nodes of a RabbitMQ cluster, as `LANES_AMQP_URL` lists them (comma separated), and a
//! connection to whichever answers first. Every role reconnects through here when its
//! connection is lost, so a stopped node costs each of its clients one failed attempt and a
//! reconnect to the next node, not an outage.

use super::BrokerError;
use crate::{config::redact, tls::Trust};
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
/// nodes in different orders to spread themselves over a cluster. `amqps://` nodes trust the
/// system's roots and `trust`'s certificates.
pub async fn connect(urls: &str, name: &str, trust: &Trust) -> Result<Connection, BrokerError> {
    let nodes = split(urls);
    let mut last = None;
    for url in &nodes {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let runtime = lapin::runtime::default_runtime().map_err(|e| BrokerError::Connect {
            url: redact(url),
            reason: e.to_string(),
        })?;
        let connecting = Connection::connect_with_config(url, props, trust.amqp(), runtime);
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connecting);
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
                let mut reason = e.to_string();
                if reason.contains("certificate") {
                    reason.push_str(
                        " (the system's roots and LANES_CA_FILE must hold the CA that signed \
                         the broker's certificate, issued for the URL's host name)",
                    );
                }
                last = Some(reason);
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

/// `urls` with `frame_max=frame` on every node's URL that does not set its own. lapin keeps
/// two buffers of 32 frames per connection, so a worker that takes the broker's 128 KiB
/// frames holds 8 MiB for them; larger messages are only split into more frames.
pub fn with_frame_max(urls: &str, frame: u32) -> String {
    split(urls)
        .into_iter()
        .map(|url| {
            if url.contains("frame_max=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&frame_max={frame}")
            } else {
                format!("{url}?frame_max={frame}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The user of the first node's URL (percent-decoded), as the broker knows the connection.
pub fn user_of(urls: &str) -> Option<String> {
    let first = split(urls).into_iter().next()?;
    let uri: lapin::uri::AMQPUri = first.parse().ok()?;
    Some(uri.authority.userinfo.username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_the_first_nodes() {
        assert_eq!(
            user_of("amqp://lanes%2Dserver:pw@h1/%2f, amqp://other:pw@h2/%2f").as_deref(),
            Some("lanes-server")
        );
        assert_eq!(user_of("").as_deref(), None);
    }

    #[test]
    fn a_frame_size_is_added_where_a_node_sets_none() {
        assert_eq!(
            with_frame_max(
                "amqp://a/%2f, amqps://b/v?heartbeat=5,amqp://c?frame_max=4096",
                16384
            ),
            "amqp://a/%2f?frame_max=16384,amqps://b/v?heartbeat=5&frame_max=16384,\
             amqp://c?frame_max=4096"
        );
    }

    #[test]
    fn lists_split_on_commas_and_drop_blanks() {
        assert_eq!(split("amqp://a, amqp://b,,"), vec!["amqp://a", "amqp://b"]);
        assert_eq!(split("amqp://a"), vec!["amqp://a"]);
        assert!(split(" , ").is_empty());
    }

    #[tokio::test]
    async fn an_error_names_every_node_without_its_password() {
        let urls = "amqp://u:secret@127.0.0.1:1/%2f,amqp://u:secret@127.0.0.1:2/%2f";
        let err = connect(urls, "probe", &Trust::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }
}
