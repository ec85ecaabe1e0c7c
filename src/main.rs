//! The `pgshift` binary: parse arguments, set up logging, run the command,
//! print the error chain and map the outcome to the documented exit code.

use std::process::ExitCode as ProcessExit;

use clap::Parser;
use pgshift::cli::Cli;
use pgshift::output::Printer;
use tracing_subscriber::EnvFilter;

fn main() -> ProcessExit {
    let cli = Cli::parse();
    let default_level = if cli.global.verbose {
        "pgshift=debug"
    } else if cli.global.quiet {
        "error"
    } else {
        "pgshift=info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();

    let printer = Printer::new(cli.global.format, cli.global.quiet, cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ProcessExit::from(3);
        }
    };
    match runtime.block_on(pgshift::commands::run(cli, printer)) {
        Ok(()) => ProcessExit::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  Caused by: {cause}");
                source = cause.source();
            }
            ProcessExit::from(error.exit_code() as u8)
        }
    }
}
