//! `lanes bench --http-clients N`: how `POST /jobs` scales with concurrent clients. One client,
//! then N at once, each submitting no-op tasks one request after another for `--http-secs`. The
//! API answers a submit only once the broker has confirmed its message, so the rate with N
//! clients shows whether concurrent requests share the broker's round trips or queue behind
//! each other's.

use super::{BenchArgs, BenchError, Workload};
use std::time::{Duration, Instant};

/// Submits per second through `POST /jobs`: one client, and `clients` at once.
pub struct HttpSubmits {
    pub clients: usize,
    pub one: f64,
    pub many: f64,
}

pub async fn submits(http: &str, args: &BenchArgs) -> Result<HttpSubmits, BenchError> {
    let one = rate(http, 1, args).await?;
    let many = rate(http, args.http_clients, args).await?;
    Ok(HttpSubmits {
        clients: args.http_clients,
        one,
        many,
    })
}

/// Submits per second of `clients` clients over `--http-secs`.
async fn rate(http: &str, clients: usize, args: &BenchArgs) -> Result<f64, BenchError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let url = format!("http://{http}/jobs");
    let started = Instant::now();
    let until = started + Duration::from_secs(args.http_secs.max(1));
    let one_client = |c: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut sent = 0usize;
            while Instant::now() < until {
                let body = Workload::Single.task(c * 1_000_000 + sent, args.resources);
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| BenchError::Stalled(format!("POST /jobs: {e}")))?;
                if resp.status().as_u16() != 202 {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    return Err(BenchError::Stalled(format!(
                        "POST /jobs answered {status}: {text}"
                    )));
                }
                sent += 1;
            }
            Ok::<_, BenchError>(sent)
        }
    };
    let sent = futures::future::try_join_all((0..clients).map(one_client)).await?;
    Ok(sent.iter().sum::<usize>() as f64 / started.elapsed().as_secs_f64())
}
