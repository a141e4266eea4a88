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
use tracing::{error, info};

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
    let tokens = load_tokens(cfg)?;
    let state = ApiState::new(
        server.store(),
        broker.clone(),
        cfg.clone(),
        server.tasks(),
        server.active(),
        server.trust(),
        tokens,
    );
    if let Some(path) = cfg.tokens_file.clone() {
        actix::spawn(reload_tokens_on_hangup(
            path,
            cfg.api_token.clone(),
            state.tokens(),
        ));
    }
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let https = tls.is_some();
    let http = api::serve(state, &cfg.http_addr, tls).map_err(|source| ServerError::Http {
        addr: cfg.http_addr.clone(),
        source,
    })?;
    let http_handle = http.handle();
    actix::spawn(http);
    info!(addr = %cfg.http_addr, https, "HTTP API listening");
    server.run(shutdown).await;
    http_handle.stop(true).await;
    info!("server stopped");
    Ok(())
}

/// The API's tokens: the tokens file's and `LANES_API_TOKEN` as `admin`.
fn load_tokens(cfg: &config::ServerConfig) -> Result<api::tokens::Tokens, ServerError> {
    let tokens = match &cfg.tokens_file {
        Some(path) => api::tokens::Tokens::load(path)?,
        None => api::tokens::Tokens::default(),
    };
    let tokens = tokens.with_admin(cfg.api_token.as_deref());
    if !tokens.is_empty() {
        info!(tokens = tokens.len(), "API tokens loaded");
    }
    Ok(tokens)
}

/// Reads the tokens file again on every SIGHUP; a file that does not parse keeps the tokens
/// loaded before (and says why).
async fn reload_tokens_on_hangup(
    path: std::path::PathBuf,
    admin: Option<String>,
    tokens: Arc<std::sync::RwLock<api::tokens::Tokens>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        match api::tokens::Tokens::load(&path) {
            Ok(fresh) => {
                let fresh = fresh.with_admin(admin.as_deref());
                info!(tokens = fresh.len(), "API tokens reloaded");
                *tokens.write().expect("tokens lock") = fresh;
            }
            Err(e) => error!(error = %e, "API tokens not reloaded; the ones loaded before stay"),
        }
    }
}

/// `lanes worker`: `workers` workers in this process (one, unless asked for more).
pub async fn run_worker(
    broker: config::BrokerConfig,
    worker: config::WorkerConfig,
    workers: usize,
) -> anyhow::Result<()> {
    let registry = Arc::new(tasks::Registry::for_worker(&worker, &broker.trust()?));
    let signals = shutdown_on_signals();
    run_workers(&broker, &worker, registry, workers, signals).await
}

/// Runs `count` workers, each with its own id and broker connection, until `shutdown` fires
/// (then they drain) or each has ended. The process serves one metrics endpoint for all of
/// them. A worker that fails stops the others, as a process with fewer workers than its
/// operator started would quietly run less work: the first failure is returned.
async fn run_workers(
    broker: &config::BrokerConfig,
    cfg: &config::WorkerConfig,
    registry: Arc<tasks::Registry>,
    count: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = cfg.metrics_addr.as_deref().filter(|a| !a.is_empty()) {
        worker::serve_metrics(addr);
    }
    let mut running: futures::stream::FuturesUnordered<_> = (0..count)
        .map(|_| {
            let (broker, cfg, registry, stop) = (
                broker.clone(),
                cfg.clone(),
                registry.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move { worker::run(&broker, &cfg, registry, stop).await })
        })
        .collect();
    let mut failed: Option<anyhow::Error> = None;
    while let Some(ended) = futures::StreamExt::next(&mut running).await {
        let why = match ended {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => anyhow::Error::new(e).context("a worker failed"),
            Err(e) => anyhow::anyhow!("a worker panicked: {e}"),
        };
        error!(error = %format!("{why:#}"), "stopping this process's workers: one of them ended");
        shutdown.cancel();
        failed.get_or_insert(why);
    }
    failed.map_or(Ok(()), Err)
}

/// `lanes up`: the server and `workers` workers in one process. On shutdown the workers drain
/// first, so their last events are recorded by the still-running server.
pub async fn run_up(
    broker: config::BrokerConfig,
    server: config::ServerConfig,
    worker: config::WorkerConfig,
    workers: usize,
) -> anyhow::Result<()> {
    let registry = Arc::new(tasks::Registry::for_worker(&worker, &broker.trust()?));
    let signals = shutdown_on_signals();
    let server_stop = CancellationToken::new();
    let mut srv = {
        let (broker, registry, stop) = (broker.clone(), registry.clone(), server_stop.clone());
        actix_rt::spawn(async move { serve(&broker, &server, &registry, stop).await })
    };
    // A worker that fails (its first connection refused, say) stops the whole process, as the
    // server's failure does: a `lanes up` left without workers would take submits that never
    // run.
    let workers_done = run_workers(&broker, &worker, registry, workers, signals.clone());
    let failed = tokio::select! {
        // The server could not start (e.g. no database): stop the workers and say why.
        res = &mut srv => {
            signals.cancel();
            res??;
            return Ok(());
        }
        ended = workers_done => ended,
    };
    if let Err(why) = failed {
        server_stop.cancel();
        let _ = srv.await;
        return Err(why);
    }
    signals.cancelled().await;
    server_stop.cancel();
    srv.await??;
    Ok(())
}
