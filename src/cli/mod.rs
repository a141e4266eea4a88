//! The command line of the `lanes` binary: the clap definitions of every subcommand and the one
//! `run` that dispatches them. It lives in the binary, not the library: parsing arguments and
//! choosing a role is the program's concern, while the roles themselves (`lanes::run_up`,
//! `lanes::run_server`, `lanes::run_worker`) stay in the library.

mod client;
mod error;
mod print;
mod wait;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use client::{ApiConfig, Client, JobsArgs, SubmitArgs};

pub use error::CliError;
use lanes::config::{BrokerConfig, ServerConfig, WorkerConfig};

// No doc comments on `Cli`, `Command` or `WorkersAction` themselves: clap can read them as help
// text, which must stay as it is. The variants' and fields' doc comments are the help text.
#[derive(Parser)]
#[command(
    name = "lanes",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LANES_COMMIT"), ")"),
    about = "A task system over RabbitMQ and PostgreSQL with per-resource order",
    after_help = error::EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
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
        #[command(flatten)]
        filter: JobsArgs,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Show one job.
    Job {
        id: String,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Cancel a job: a waiting one at once; a queued or running one is stopped by its worker.
    Cancel {
        id: String,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Run a failed or canceled job again (same id, new attempts, behind newer submits).
    Retry {
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
        args: crate::bench::BenchArgs,
    },
    /// Show the lanes, their owners and load.
    Queues {
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Print a shell completion script (e.g. `lanes completions bash > /etc/bash_completion.d/lanes`).
    Completions { shell: clap_complete::Shell },
    /// API tokens: `new` makes one and prints the line for `LANES_TOKENS_FILE`.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// A fresh token for NAME with these scopes (submit, read, operate, execute, admin): the
    /// token is shown once; the file keeps only its hash.
    New {
        name: String,
        /// Comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum WorkersAction {
    /// Ask a worker to finish what it runs and leave.
    Drain { id: String },
}

/// Prints a fresh token and its line for the tokens file.
fn new_token(name: &str, scopes: &[String]) -> Result<(), CliError> {
    use lanes::tokens::{hash_line, new_token, Scope, Tokens};
    let bad = |why: String| CliError::Api {
        status: 400,
        message: why,
    };
    for scope in scopes {
        scope.parse::<Scope>().map_err(bad)?;
    }
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(bad(format!("a token's name is one word: `{name}`")));
    }
    let token = new_token();
    let line = format!("{name} {} {}", scopes.join(","), hash_line(&token));
    Tokens::parse(&line).map_err(|e| bad(e.to_string()))?;
    println!("token (shown once; give it to its holder): {token}");
    println!("line for LANES_TOKENS_FILE (then SIGHUP the server): {line}");
    Ok(())
}

/// Runs one parsed command to its end.
pub async fn run(command: Command) -> anyhow::Result<()> {
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
        Command::Submit { submit, api } => Client::new(api)?.submit(&submit).await?,
        Command::Jobs { filter, api } => Client::new(api)?.jobs(&filter).await?,
        Command::Job { id, api } => Client::new(api)?.job(&id).await?,
        Command::Cancel { id, api } => Client::new(api)?.steer(&id, "cancel").await?,
        Command::Retry { id, api } => Client::new(api)?.steer(&id, "retry").await?,
        Command::Workers { action: None, api } => Client::new(api)?.workers().await?,
        Command::Workers {
            action: Some(WorkersAction::Drain { id }),
            api,
        } => Client::new(api)?.drain(&id).await?,
        Command::Queues { api } => Client::new(api)?.queues().await?,
        Command::Bench { args } => crate::bench::run(args).await?,
        Command::Token {
            action: TokenAction::New { name, scopes },
        } => new_token(&name, &scopes)?,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lanes", &mut std::io::stdout())
        }
    }
    Ok(())
}
