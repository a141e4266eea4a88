//! How the bench sends: submit messages and probe messages in confirmed windows of 1,000, and
//! the progress bars it shows while it does.

use super::BenchError;
use indicatif::{ProgressBar, ProgressStyle};
use lanes::broker::{self, json_properties, Outgoing, Publisher, Topology};
use uuid::Uuid;

pub(super) fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(what.to_owned());
    b
}

/// Publishes submit messages with confirms in windows of 1,000, like the ceiling.
pub(super) async fn submit_all(
    publisher: &Publisher,
    topo: &Topology,
    jobs: impl Iterator<Item = (Uuid, Vec<u8>)>,
) -> Result<(), BenchError> {
    let exchange = topo.exchange();
    let messages = jobs.map(|(id, body)| Outgoing {
        exchange: &exchange,
        routing_key: "submit",
        body,
        props: json_properties().with_message_id(id.to_string().into()),
    });
    send_in_windows(publisher, messages).await
}

/// Hands lapin a window of 1,000 messages at once and waits for their confirms, then the next.
pub(super) async fn send_in_windows<'a>(
    publisher: &Publisher,
    messages: impl Iterator<Item = Outgoing<'a>>,
) -> Result<(), BenchError> {
    let mut messages = messages.peekable();
    while messages.peek().is_some() {
        let window: Vec<Outgoing> = messages.by_ref().take(1000).collect();
        broker::confirm_all(publisher.send_all(&window).await?).await?;
    }
    Ok(())
}
