//! One hot resource beside free ones (`lanes bench --hot N`): N slow tasks on one resource wait
//! in its lane while the latency run's tasks on other resources arrive at the offered rate.
//! Their submit → started should stay near the same run's idle figure: the hot lane holds its
//! own backlog and nothing else.

use super::{
    measure::{latency, Latency},
    submit::{bar, submit_all},
    workload::{last_seq, wait_for},
    BenchArgs, BenchError,
};
use lanes::broker::{Publisher, Topology};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The latency run beside a hot resource's backlog.
pub(super) struct Hot {
    pub latency: Latency,
    /// Hot tasks not finished when the latency run ended (the backlog was there throughout).
    pub still_waiting: i64,
}

/// How long each hot task runs: long enough that the backlog outlasts the latency run.
const HOT_MS: u64 = 1000;

pub(super) async fn latency_beside_hot(
    publisher: &Publisher,
    topo: &Topology,
    pool: &PgPool,
    args: &BenchArgs,
) -> Result<Hot, BenchError> {
    let n = args.hot;
    let base = last_seq(pool).await?;
    let progress = bar(n as u64, "hot resource", args.json);
    let body = serde_json::to_vec(&json!({"task": "sleep", "args": {"ms": HOT_MS},
                                          "resources": ["hot:0"]}))
    .expect("json");
    submit_all(
        publisher,
        topo,
        (0..n).map(|_| (Uuid::now_v7(), body.clone())),
    )
    .await?;
    wait_for(pool, base, None, n as i64, &progress).await?;
    progress.finish_and_clear();
    let latency = latency(publisher, topo, pool, args, args.json).await?;
    let (still_waiting,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM jobs WHERE seq > $1 AND $2 = ANY(resources)
                AND state NOT IN ('completed', 'failed', 'canceled')",
    )
    .bind(base)
    .bind("hot:0")
    .fetch_one(pool)
    .await?;
    Ok(Hot {
        latency,
        still_waiting,
    })
}
