//! The `lanes` binary: parse the command line, set up logging, run the chosen role.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lanes::{
    cli::{ApiConfig, Client, SubmitArgs},
    config::{BrokerConfig, ServerConfig, WorkerConfig},
};

#[derive(Parser)]
#[command(
    name = "lanes",
    version,
    about = "A task system over RabbitMQ and PostgreSQL with per-resource order"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Server and workers in one process: the one-machine default.
    Up {
        /// Workers to run in this process.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        #[command(flatten)]
        broker: BrokerConfig,
        #[command(flatten)]
        server: ServerConfig,
        #[command(flatten)]
        worker: WorkerConfig,
    },
    /// The control plane: dispatcher, supervisor, callback and HTTP API.
    Server {
        #[command(flatten)]
        broker: BrokerConfig,
        #[command(flatten)]
        server: ServerConfig,
    },
    /// An anonymous worker.
    Worker {
        #[command(flatten)]
        broker: BrokerConfig,
        #[command(flatten)]
        worker: WorkerConfig,
    },
    /// Submit a task.
    Submit {
        #[command(flatten)]
        submit: SubmitArgs,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// List jobs, newest first.
    Jobs {
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Show one job.
    Job {
        id: String,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// List workers, or drain one (`lanes workers drain ID`).
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Measure throughput, latency and memory against the raw broker round trip.
    Bench {
        #[command(flatten)]
        args: lanes::bench::BenchArgs,
    },
    /// Show the lanes, their owners and load.
    Queues {
        #[command(flatten)]
        api: ApiConfig,
    },
}

#[derive(Subcommand)]
enum WorkersAction {
    /// Ask a worker to finish what it runs and leave.
    Drain { id: String },
}

fn main() {
    let cli = Cli::parse();
    lanes::telemetry::init();
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let code = match system.block_on(run(cli.command)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    // Everything that had to be durable was awaited inside `run`. Exit now rather than in the
    // runtime's teardown, which would wait for any blocking task still running.
    std::process::exit(code);
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            workers,
            broker,
            server,
            worker,
        } => lanes::run_up(broker, server, worker, workers)
            .await
            .context("lanes up")?,
        Command::Server { broker, server } => lanes::run_server(broker, server)
            .await
            .context("lanes server")?,
        Command::Worker { broker, worker } => lanes::run_worker(broker, worker)
            .await
            .context("lanes worker")?,
        Command::Submit { submit, api } => Client::new(api).submit(&submit).await?,
        Command::Jobs { state, limit, api } => Client::new(api).jobs(state, limit).await?,
        Command::Job { id, api } => Client::new(api).job(&id).await?,
        Command::Workers { action: None, api } => Client::new(api).workers().await?,
        Command::Workers {
            action: Some(WorkersAction::Drain { id }),
            api,
        } => Client::new(api).drain(&id).await?,
        Command::Queues { api } => Client::new(api).queues().await?,
        Command::Bench { args } => lanes::bench::run(args).await?,
    }
    Ok(())
}
