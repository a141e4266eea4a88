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

/// `lanes worker`.
pub async fn run_worker(
    broker: config::BrokerConfig,
    worker: config::WorkerConfig,
) -> Result<(), worker::WorkerError> {
    let registry = Arc::new(tasks::Registry::for_worker(&worker, &broker.trust()?));
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
    let registry = Arc::new(tasks::Registry::for_worker(&worker, &broker.trust()?));
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
    // A worker that fails (its first connection refused, say) stops the whole process, as the
    // server's failure does: a `lanes up` left without workers would take submits that never
    // run.
    let signals_on_failure = signals.clone();
    let workers_done = async move {
        let mut running: futures::stream::FuturesUnordered<_> = handles.into_iter().collect();
        let mut failed: Option<anyhow::Error> = None;
        while let Some(ended) = futures::StreamExt::next(&mut running).await {
            let why = match ended {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => anyhow::Error::new(e).context("a worker failed"),
                Err(e) => anyhow::anyhow!("a worker panicked: {e}"),
            };
            tracing::error!(error = %format!("{why:#}"), "stopping: a worker of `lanes up` ended");
            signals_on_failure.cancel();
            failed.get_or_insert(why);
        }
        failed
    };
    let failed = tokio::select! {
        // The server could not start (e.g. no database): stop the workers and say why.
        res = &mut srv => {
            signals.cancel();
            res??;
            return Ok(());
        }
        failed = workers_done => failed,
    };
    if let Some(why) = failed {
        server_stop.cancel();
        let _ = srv.await;
        return Err(why);
    }
    signals.cancelled().await;
    server_stop.cancel();
    srv.await??;
    Ok(())
}
