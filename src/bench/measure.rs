//! The measurements of `lanes bench`: the raw broker ceiling and one-hop latency on scratch
//! quorum queues, then lanes' own throughput and latency, read back from the jobs table. Kept
//! apart from the run that orders them and from the processes under test, so that how a number
//! is measured can be read in one place.

use super::{
    submit::{bar, send_in_windows},
    workload::{self, Workload},
    BenchArgs, BenchError,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::ProgressBar;
use lanes::broker::{self, json_properties, Outgoing, Publisher, Topology};
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The raw round trip: persistent messages, confirms (window 1,000), prefetch 500, multiple acks.
pub(super) async fn ceiling(
    conn: &lapin::Connection,
    prefix: &str,
    n: usize,
    quiet: bool,
) -> Result<f64, BenchError> {
    let queue = format!("{prefix}.ceiling");
    let (probe, publisher, mut consumer) = probe_queue(conn, &queue, "lanes-bench/ceiling").await?;
    let progress = bar(n as u64, "ceiling", quiet);
    let started = Instant::now();
    let consume = async {
        let mut seen = 0;
        while seen < n {
            let batch = consumer
                .next()
                .await
                .ok_or_else(|| BenchError::Stalled("ceiling consumer ended".into()))??;
            seen += 1;
            if seen % 250 == 0 || seen == n {
                batch.acker.ack(BasicAckOptions { multiple: true }).await?;
                progress.set_position(seen as u64);
            }
        }
        Ok::<_, BenchError>(())
    };
    let message = Outgoing {
        exchange: "",
        routing_key: &queue,
        body: br#"{"task":"noop"}"#.to_vec(),
        props: json_properties(),
    };
    let publish = send_in_windows(&publisher, std::iter::repeat_n(message, n));
    let (c, p) = futures::join!(consume, publish);
    c?;
    p?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    probe.delete().await;
    Ok(rate)
}

/// A raw measurement's queue and its consumer's channel.
struct Probe {
    queue: String,
    admin: lapin::Channel,
    consumer: lapin::Channel,
}

impl Probe {
    /// Ends the consumer, then deletes the queue (deleting a queue under a live consumer
    /// makes RabbitMQ 3.10 in a cluster close the connection with an internal error).
    async fn delete(self) {
        let _ = self.consumer.close(200, "measured".into()).await;
        let _ = self
            .admin
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

/// Declares a quorum queue for a raw measurement; returns it, a confirming publisher and a
/// consumer (prefetch 500) tagged `tag`.
async fn probe_queue(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
) -> Result<(Probe, Publisher, lapin::Consumer), BenchError> {
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, args).await?;
    let publisher = Publisher::new(conn).await?;
    let consumer_ch = conn.create_channel().await?;
    broker::prefetch(&consumer_ch, 500).await?;
    let consumer = consumer_ch
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let probe = Probe {
        queue: queue.to_owned(),
        admin: ch,
        consumer: consumer_ch,
    };
    Ok((probe, publisher, consumer))
}

/// The latency of one hop through the broker (publish → delivery to a consumer) on the queue
/// type lanes uses, at `rate` messages/s for two seconds: the floor under every latency lanes
/// can show, since a task takes two such hops (submit, then its lane).
pub(super) async fn hop_latency(
    conn: &lapin::Connection,
    prefix: &str,
    rate: u64,
    quiet: bool,
) -> Result<[f64; 3], BenchError> {
    let queue = format!("{prefix}.hop");
    let (probe, publisher, mut consumer) = probe_queue(conn, &queue, "lanes-bench/hop").await?;
    let n = (rate * 2).max(1) as usize;
    let progress = bar(n as u64, "one broker hop", quiet);
    let t0 = Instant::now();
    let consume = async {
        let mut took = Vec::with_capacity(n);
        while took.len() < n {
            let d = consumer
                .next()
                .await
                .ok_or_else(|| BenchError::Stalled("hop consumer ended".into()))??;
            let sent: [u8; 8] = d.data[..8].try_into().expect("8 bytes");
            let sent = Duration::from_nanos(u64::from_le_bytes(sent));
            took.push((t0.elapsed() - sent).as_secs_f64() * 1000.0);
            d.acker.ack(BasicAckOptions::default()).await?;
            progress.set_position(took.len() as u64);
        }
        Ok::<_, BenchError>(took)
    };
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let publish = async {
        let mut pending = Vec::new();
        for i in 0..n {
            tokio::time::sleep_until((t0 + interval * i as u32).into()).await;
            let body = (t0.elapsed().as_nanos() as u64).to_le_bytes();
            pending.push(publisher.send("", &queue, &body, json_properties()).await?);
            if pending.len() >= 100 {
                broker::confirm_all(std::mem::take(&mut pending)).await?;
            }
        }
        broker::confirm_all(pending).await?;
        Ok::<_, BenchError>(())
    };
    let (took, sent) = futures::join!(consume, publish);
    sent?;
    let mut took = took?;
    progress.finish_and_clear();
    probe.delete().await;
    Ok(percentiles(&mut took))
}

pub(super) struct Latency {
    /// Submit → the job's row exists (the Dispatcher took it): where the time goes.
    pub(super) recorded: [f64; 3],
    pub(super) start: [f64; 3],
    pub(super) done: [f64; 3],
}

/// Offers `rate` tasks/s for `latency_secs`, one publish at a time on a fixed schedule.
pub(super) async fn latency(
    publisher: &Publisher,
    topo: &Topology,
    pool: &PgPool,
    args: &BenchArgs,
    quiet: bool,
) -> Result<Latency, BenchError> {
    let n = (args.rate * args.latency_secs) as usize;
    let base = workload::last_seq(pool).await?;
    let progress = bar(n as u64, "latency", quiet);
    let mut sent: Vec<(Uuid, DateTime<Utc>)> = Vec::with_capacity(n);
    let mut pending = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let t0 = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(t0 + interval * i as u32).await;
        let id = args.new_id();
        let props = json_properties().with_message_id(id.to_string().into());
        sent.push((id, Utc::now()));
        pending.push(
            publisher
                .send(
                    &topo.exchange(),
                    "submit",
                    &Workload::Single.task(i, args.resources),
                    props,
                )
                .await?,
        );
        if pending.len() >= 100 {
            broker::confirm_all(std::mem::take(&mut pending)).await?;
        }
        progress.set_position(i as u64);
    }
    broker::confirm_all(pending).await?;
    progress.finish_and_clear();
    workload::wait_for(
        pool,
        base,
        Some("completed"),
        n as i64,
        &ProgressBar::hidden(),
    )
    .await?;
    let ids: Vec<Uuid> = sent.iter().map(|(id, _)| *id).collect();
    type Times = (Uuid, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);
    let rows: Vec<Times> = sqlx::query_as(
        "SELECT id, created_at, started_at, finished_at FROM jobs WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let at: std::collections::HashMap<Uuid, DateTime<Utc>> = sent.into_iter().collect();
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let mut recorded: Vec<f64> = rows.iter().map(|(id, c, ..)| ms(*c - at[id])).collect();
    let mut start: Vec<f64> = rows.iter().map(|(id, _, s, _)| ms(*s - at[id])).collect();
    let mut done: Vec<f64> = rows.iter().map(|(id, .., f)| ms(*f - at[id])).collect();
    Ok(Latency {
        recorded: percentiles(&mut recorded),
        start: percentiles(&mut start),
        done: percentiles(&mut done),
    })
}

/// p50, p99 and max.
fn percentiles(v: &mut [f64]) -> [f64; 3] {
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let round = |x: f64| (x * 100.0).round() / 100.0;
    [round(at(0.5)), round(at(0.99)), round(v[v.len() - 1])]
}
