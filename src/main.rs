//! The `lanes` binary: parse the command line, set up logging, run the chosen role. The command
//! line (`cli`) and `lanes bench` (`bench`) are the binary's own modules; everything they run
//! comes from the `lanes` library.

mod bench;
mod cli;

use clap::Parser as _;

fn main() {
    // Still one thread: the allocator's settings can change here.
    lanes::allocator::cap_arenas();
    // Still one thread: setting the environment is sound here.
    if let Err(e) = lanes::config::secrets_from_files() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let cli = cli::Cli::parse();
    lanes::telemetry::init();
    lanes::tls::install_provider();
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let code = match system.block_on(cli::run(cli.command)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            // The client commands' failures have codes of their own (`lanes --help`).
            e.downcast_ref::<cli::CliError>()
                .map_or(1, cli::CliError::exit_code)
        }
    };
    // Everything that had to be durable was awaited inside `run`. Exit now rather than in the
    // runtime's teardown, which would wait for any blocking task still running.
    std::process::exit(code);
}
