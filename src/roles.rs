//! The roles a `lanes` process plays: `server`, `worker`, and `up` (both in one process),
//! each run until SIGTERM or Ctrl-C.

use crate::{
    api::{self, ApiState},
    config,
    server::{Server, ServerError},
    tasks, worker,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels the returned token on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
        }
        t.cancel();
    });
    token
}

/// `lanes server`.
pub async fn run_server(
    broker: config::BrokerConfig,
    server: config::ServerConfig,
) -> Result<(), ServerError> {
    let registry = tasks::Registry::with_builtins(Vec::new());
    serve(&broker, &server, &registry, shutdown_on_signals()).await
}

/// A server: the HTTP API, and the control plane whenever this server is the active one.
async fn serve(
    broker: &config::BrokerConfig,
    cfg: &config::ServerConfig,
    registry: &tasks::Registry,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let server = Server::build(broker, cfg, registry).await?;
    let state = ApiState::new(
        server.store(),
        broker.clone(),
        cfg.clone(),
        server.tasks(),
        server.active(),
    );
    let http = api::serve(state, &cfg.http_addr).map_err(|source| ServerError::Http {
        addr: cfg.http_addr.clone(),
        source,
    })?;
    let http_handle = http.handle();
    actix::spawn(http);
    info!(addr = %cfg.http_addr, "HTTP API listening");
    server.run(shutdown).await;
    http_handle.stop(true).await;
    info!("server stopped");
    Ok(())
}

/// `lanes worker`.
pub async fn run_worker(
    broker: config::BrokerConfig,
    worker: config::WorkerConfig,
) -> Result<(), worker::WorkerError> {
    let registry = Arc::new(tasks::Registry::for_worker(&worker));
    worker::run(&broker, &worker, registry, shutdown_on_signals()).await
}

/// `lanes up`: the server and `workers` workers in one process. On shutdown the workers drain
/// first, so their last events are recorded by the still-running server.
pub async fn run_up(
    broker: config::BrokerConfig,
    server: config::ServerConfig,
    worker: config::WorkerConfig,
    workers: usize,
) -> anyhow::Result<()> {
    let registry = Arc::new(tasks::Registry::for_worker(&worker));
    let signals = shutdown_on_signals();
    let server_stop = CancellationToken::new();
    let mut srv = {
        let (broker, registry, stop) = (broker.clone(), registry.clone(), server_stop.clone());
        actix_rt::spawn(async move { serve(&broker, &server, &registry, stop).await })
    };
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (broker, worker, registry, stop) = (
            broker.clone(),
            worker.clone(),
            registry.clone(),
            signals.clone(),
        );
        handles.push(tokio::spawn(async move {
            worker::run(&broker, &worker, registry, stop).await
        }));
    }
    let workers_done = async {
        for h in handles {
            match h.await {
                Ok(Err(e)) => tracing::error!(error = %e, "worker failed"),
                Err(e) => tracing::error!(error = %e, "worker panicked"),
                Ok(Ok(())) => {}
            }
        }
    };
    tokio::select! {
        // The server could not start (e.g. no database): stop the workers and say why.
        res = &mut srv => {
            signals.cancel();
            res??;
            return Ok(());
        }
        _ = workers_done => {}
    }
    signals.cancelled().await;
    server_stop.cancel();
    srv.await??;
    Ok(())
}
