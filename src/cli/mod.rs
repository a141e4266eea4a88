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
use client::{ApiConfig, Client, JobsArgs, Output, SubmitArgs};

pub use error::CliError;
use lanes::config::{BrokerConfig, ServerConfig, WorkerConfig};

// No doc comments on `Cli`, `Command` or the action enums themselves: clap can read them as
// help text, which must stay as it is. The variants' and fields' doc comments are the help text.
#[derive(Parser)]
#[command(
    name = "lanes",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LANES_COMMIT"), ")"),
    about = "A task system over RabbitMQ and PostgreSQL with per-resource order",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = concat!(
    "Ids: wherever a job or worker id is taken, a unique prefix of it will do (at least 4 hex \
     digits of a job id).\n\
     Older spellings still work: `lanes submit`, `lanes job ID`, `lanes cancel ID`, \
     `lanes retry ID`, `lanes token new`, and `lanes jobs|workers|queues` alone list.\n\n",
    "Exit codes: 0 done; 1 any other failure; 2 bad input (usage, invalid arguments, or the \
     API refused the request: 400, 404, 409, 413); 3 the server cannot be reached or cannot \
     serve now (503); 4 the API token is missing, wrong (401) or lacks the scope (403); \
     5 `--wait`: the job ended \
     failed or canceled; 6 `--wait-timeout` passed before the job ended (it goes on)."
);

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
    /// Anonymous workers: one per process unless `--workers` asks for more.
    Worker {
        /// Workers to run in this process, each with its own id and broker connection.
        #[arg(long, env = "LANES_WORKERS", default_value_t = 1)]
        workers: usize,
        #[command(flatten)]
        broker: BrokerConfig,
        #[command(flatten)]
        worker: WorkerConfig,
    },
    /// Jobs: submit, list, show, cancel, retry (alone: list).
    #[command(args_conflicts_with_subcommands = true)]
    Jobs {
        #[command(subcommand)]
        action: Option<JobsAction>,
        #[command(flatten)]
        filter: JobsArgs,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Workers: list, drain (alone: list).
    #[command(args_conflicts_with_subcommands = true)]
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Lanes: list them with their owners and load (alone: list).
    #[command(args_conflicts_with_subcommands = true)]
    Queues {
        #[command(subcommand)]
        action: Option<QueuesAction>,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Recurring schedules: add, list, show, pause, resume, rm (alone: list).
    #[command(args_conflicts_with_subcommands = true)]
    Schedules {
        #[command(subcommand)]
        action: Option<SchedulesAction>,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Resource limits: how many `slot:` holders at once, how many starts per period: list,
    /// show, set, rm (alone: list).
    #[command(args_conflicts_with_subcommands = true)]
    Limits {
        #[command(subcommand)]
        action: Option<LimitsAction>,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// API tokens: `new` makes one and prints the line for `LANES_TOKENS_FILE`.
    #[command(alias = "token")]
    Tokens {
        #[command(subcommand)]
        action: TokensAction,
    },
    /// Measure throughput, latency and memory against the raw broker round trip.
    Bench {
        #[command(flatten)]
        args: crate::bench::BenchArgs,
    },
    /// Print a shell completion script (e.g. `lanes completions bash > /etc/bash_completion.d/lanes`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Same as `lanes jobs submit`.
    #[command(hide = true)]
    Submit {
        #[command(flatten)]
        submit: SubmitArgs,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Same as `lanes jobs show`.
    #[command(hide = true)]
    Job {
        #[command(flatten)]
        id: JobId,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Same as `lanes jobs cancel`.
    #[command(hide = true)]
    Cancel {
        #[command(flatten)]
        id: JobId,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Same as `lanes jobs retry`.
    #[command(hide = true)]
    Retry {
        #[command(flatten)]
        id: JobId,
        #[command(flatten)]
        api: ApiConfig,
    },
}

#[derive(Subcommand)]
pub enum JobsAction {
    /// Submit a task.
    Submit {
        #[command(flatten)]
        submit: SubmitArgs,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        filter: JobsArgs,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Show one job, and why it waits if it does.
    Show {
        #[command(flatten)]
        id: JobId,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Cancel a job: a waiting one at once; a queued or running one is stopped by its worker.
    Cancel {
        #[command(flatten)]
        id: JobId,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Run a failed or canceled job again (same id, new attempts, behind newer submits).
    Retry {
        #[command(flatten)]
        id: JobId,
        #[command(flatten)]
        api: ApiConfig,
    },
}

/// The job a command is about.
#[derive(clap::Args)]
pub struct JobId {
    /// The job's id, or a unique prefix of it (at least 4 hex digits).
    pub id: String,
}

#[derive(Subcommand)]
pub enum WorkersAction {
    /// List the live workers, their lanes and what they run.
    List {
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Ask a worker to finish what it runs, hand back its lanes and leave.
    Drain {
        /// The worker's id, or a unique prefix of it.
        id: String,
        #[command(flatten)]
        api: ApiConfig,
    },
}

#[derive(Subcommand)]
pub enum SchedulesAction {
    /// A schedule: each tick of CRON (in TZ) submits TASK once.
    Add {
        #[command(flatten)]
        schedule: client::ScheduleArgs,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Every schedule with its next tick.
    List {
        #[command(flatten)]
        api: ApiConfig,
    },
    /// One schedule: its coming ticks and its latest jobs.
    Show {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Stop making jobs (the one made for the coming tick is left out).
    Pause {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Make jobs again, from the first tick after now.
    Resume {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Delete a schedule (the job made for its coming tick is left out).
    #[command(alias = "delete")]
    Rm {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        api: ApiConfig,
    },
}

#[derive(Subcommand)]
pub enum LimitsAction {
    /// Every limited resource.
    List {
        #[command(flatten)]
        api: ApiConfig,
    },
    /// One resource's limit.
    Show {
        /// The resource's name (without `slot:`).
        resource: String,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Sets a resource's slots or rate (what is not given stays as it was); tasks already
    /// waiting are held to it.
    Set {
        /// The resource's name (without `slot:`).
        resource: String,
        /// How many tasks naming `slot:RESOURCE` run at once.
        #[arg(long)]
        slots: Option<u32>,
        /// At most this many starts per period, e.g. `10/s`, `100/1m`, `5/500ms`.
        #[arg(long, conflicts_with = "no_rate")]
        rate: Option<lanes::limit::Rate>,
        /// Remove its rate.
        #[arg(long)]
        no_rate: bool,
        #[command(flatten)]
        api: ApiConfig,
    },
    /// Removes a resource's limit: one slot, no rate.
    #[command(alias = "delete")]
    Rm {
        /// The resource's name.
        resource: String,
        #[command(flatten)]
        api: ApiConfig,
    },
}

#[derive(Subcommand)]
pub enum QueuesAction {
    /// List the open lanes, their owners and unfinished tasks, and the waiting line.
    List {
        #[command(flatten)]
        api: ApiConfig,
    },
}

#[derive(Subcommand)]
pub enum TokensAction {
    /// A fresh token for NAME with these scopes (submit, read, operate, execute, admin): the
    /// token is shown once; the file keeps only its hash.
    New {
        /// The token's name (one word): logged with what its holder does.
        name: String,
        /// Its scopes, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Output: text for a person, json for a program.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Prints a fresh token and its line for the tokens file.
fn new_token(name: &str, scopes: &[String], output: Output) -> Result<(), CliError> {
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
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"name": name, "token": token, "line": line})
        ),
        Output::Text => {
            println!("token (shown once; give it to its holder): {token}");
            println!("line for LANES_TOKENS_FILE (then SIGHUP the server): {line}");
        }
    }
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
        Command::Worker {
            workers,
            broker,
            worker,
        } => lanes::run_worker(broker, worker, workers)
            .await
            .context("lanes worker")?,
        Command::Jobs {
            action: None,
            filter,
            api,
        }
        | Command::Jobs {
            action: Some(JobsAction::List { filter, api }),
            ..
        } => Client::new(api)?.jobs(&filter).await?,
        Command::Jobs {
            action: Some(JobsAction::Submit { submit, api }),
            ..
        }
        | Command::Submit { submit, api } => Client::new(api)?.submit(&submit).await?,
        Command::Jobs {
            action: Some(JobsAction::Show { id, api }),
            ..
        }
        | Command::Job { id, api } => Client::new(api)?.job(&id.id).await?,
        Command::Jobs {
            action: Some(JobsAction::Cancel { id, api }),
            ..
        }
        | Command::Cancel { id, api } => Client::new(api)?.steer(&id.id, "cancel").await?,
        Command::Jobs {
            action: Some(JobsAction::Retry { id, api }),
            ..
        }
        | Command::Retry { id, api } => Client::new(api)?.steer(&id.id, "retry").await?,
        Command::Workers { action: None, api }
        | Command::Workers {
            action: Some(WorkersAction::List { api }),
            ..
        } => Client::new(api)?.workers().await?,
        Command::Workers {
            action: Some(WorkersAction::Drain { id, api }),
            ..
        } => Client::new(api)?.drain(&id).await?,
        Command::Schedules { action: None, api }
        | Command::Schedules {
            action: Some(SchedulesAction::List { api }),
            ..
        } => Client::new(api)?.schedules().await?,
        Command::Schedules {
            action: Some(action),
            ..
        } => match action {
            SchedulesAction::Add { schedule, api } => {
                Client::new(api)?.add_schedule(&schedule).await?
            }
            SchedulesAction::Show { name, api } => Client::new(api)?.schedule(&name).await?,
            SchedulesAction::Pause { name, api } => {
                Client::new(api)?.pause_schedule(&name, true).await?
            }
            SchedulesAction::Resume { name, api } => {
                Client::new(api)?.pause_schedule(&name, false).await?
            }
            SchedulesAction::Rm { name, api } => Client::new(api)?.remove_schedule(&name).await?,
            SchedulesAction::List { .. } => unreachable!("listed above"),
        },
        Command::Limits { action: None, api }
        | Command::Limits {
            action: Some(LimitsAction::List { api }),
            ..
        } => Client::new(api)?.limits().await?,
        Command::Limits {
            action: Some(action),
            ..
        } => match action {
            LimitsAction::Show { resource, api } => Client::new(api)?.limit(&resource).await?,
            LimitsAction::Set {
                resource,
                slots,
                rate,
                no_rate,
                api,
            } => {
                let change = client::LimitChange {
                    slots,
                    rate,
                    no_rate,
                };
                Client::new(api)?.set_limit(&resource, change).await?
            }
            LimitsAction::Rm { resource, api } => Client::new(api)?.remove_limit(&resource).await?,
            LimitsAction::List { .. } => unreachable!("listed above"),
        },
        Command::Queues { action: None, api }
        | Command::Queues {
            action: Some(QueuesAction::List { api }),
            ..
        } => Client::new(api)?.queues().await?,
        Command::Bench { args } => crate::bench::run(args).await?,
        Command::Tokens {
            action:
                TokensAction::New {
                    name,
                    scopes,
                    output,
                },
        } => new_token(&name, &scopes, output)?,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lanes", &mut std::io::stdout())
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every argument of every command, with the command's path.
    fn arguments(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_flag_has_help() {
        fn commands(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(path.clone());
                }
                commands(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        commands(&Cli::command(), "lanes", &mut missing);
        let mut args = Vec::new();
        arguments(&Cli::command(), "lanes", &mut args);
        for (path, arg) in args {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }

    /// The variables the code reads outside clap (`"LANES_…"` literals in `src/`), except
    /// those lanes sets for others (the commit at build time, the job for `exec` programs).
    fn variables_in_the_code() -> BTreeMap<String, String> {
        fn walk(dir: &std::path::Path, found: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for piece in text.split("\"LANES_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty() && piece[name.len()..].starts_with('"') {
                        found.insert(format!("LANES_{name}"), path.display().to_string());
                    }
                }
            }
        }
        let mut found = BTreeMap::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        for set_for_others in ["LANES_COMMIT", "LANES_JOB_ID", "LANES_ATTEMPT"] {
            found.remove(set_for_others);
        }
        found
    }

    /// The README's configuration reference: variable → (flag cell, default cell).
    fn reference() -> BTreeMap<String, (String, String)> {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("### Configuration reference")
            .nth(1)
            .expect("README has a `### Configuration reference`");
        let table = table.split("\n#").next().unwrap_or(table);
        let cell = |c: &str| c.trim().trim_matches('`').to_owned();
        table
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                assert!(cells.len() >= 6, "a row of five cells: {l}");
                (cell(cells[1]), (cells[2].to_owned(), cell(cells[3])))
            })
            .collect()
    }

    #[test]
    fn the_readme_configuration_reference_matches_the_code() {
        let rows = reference();
        let mut args = Vec::new();
        arguments(&Cli::command(), "lanes", &mut args);
        let mut problems = Vec::new();
        let mut known = variables_in_the_code();
        known.insert("RUST_LOG".into(), "the log filter".into());
        for (path, arg) in &args {
            let Some(var) = arg.get_env().map(|v| v.to_string_lossy().into_owned()) else {
                continue;
            };
            known.insert(var.clone(), path.clone());
            let Some((flags, default)) = rows.get(&var) else {
                problems.push(format!("{var} ({path}) has no row"));
                continue;
            };
            if let Some(long) = arg.get_long() {
                if !flags.contains(&format!("`--{long}`")) {
                    problems.push(format!("{var}: the flag cell lacks `--{long}` ({path})"));
                }
            }
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            let want = match defaults.is_empty() {
                true => "unset".to_owned(),
                false => defaults.join(","),
            };
            if *default != want {
                problems.push(format!(
                    "{var}: the default is `{want}`, the README says `{default}`"
                ));
            }
        }
        for var in known.keys() {
            if !rows.contains_key(var) {
                problems.push(format!("{var} ({}) has no row", known[var]));
            }
        }
        for var in rows.keys() {
            if !known.contains_key(var) {
                problems.push(format!("{var} is in the README but nothing reads it"));
            }
        }
        problems.sort();
        problems.dedup();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
