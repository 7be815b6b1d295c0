//! `hpctl`: the command-line client of a Hydroplane server, built on the `hydroplane-client` crate
//! (`client/rust/`), which connects, calls and resumes watches.
//!
//! Each subcommand has its own file; `connect.rs` turns the connection flags into the crate's
//! options (a plain, TLS (`https://`, optionally with a client certificate) or Unix-socket
//! (`unix:PATH`) server, and a bearer token sent with every call) and its errors into one line
//! with hints that name the flags. Output is JSON on stdout (one object per line for
//! `watch`); errors are one clear line on stderr and a non-zero exit code, and never show the
//! token.

mod connect;
mod list;
mod output;
mod start;
mod stop;
mod watch;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Controls the processes of a Hydroplane server.
#[derive(Debug, Parser)]
#[command(name = "hpctl", version, about)]
struct Cli {
    /// Where the server is, what to trust there and the token to send.
    #[command(flatten)]
    connection: connect::ConnectArgs,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Lists processes as a JSON array.
    List(list::ListArgs),
    /// Starts a process from a Hydroplane JSON spec and prints it.
    Start(start::StartArgs),
    /// Stops a process, or every process of a group, and prints the names stopped.
    Stop(stop::StopArgs),
    /// Follows process changes, one JSON object per line, until interrupted.
    Watch(watch::WatchArgs),
}

/// Parses the flags, runs the subcommand and prints any failure as one line.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Connects and runs the subcommand.
async fn run(cli: Cli) -> anyhow::Result<()> {
    // Mistakes in the flags or the spec file are reported before any connection is tried.
    let plan = cli.connection.plan()?;
    let start_request = match &cli.command {
        Command::Start(args) => Some(start::read_request(args)?),
        _ => None,
    };
    let client = plan.connect().await?;
    let result = match cli.command {
        Command::List(args) => list::run(&client, args).await,
        Command::Start(_) => start::run(&client, start_request.context("start request was read")?).await,
        Command::Stop(args) => stop::run(&client, args).await,
        Command::Watch(args) => watch::run(&client, args).await,
    };
    result.map_err(|status| plan.explain(status).into())
}
