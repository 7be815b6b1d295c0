//! `hpctl`: the command-line client of a Hydroplane server, built on the generated gRPC client.
//!
//! Each subcommand has its own file. Output is JSON on stdout (one object per line for `watch`);
//! errors are one clear line on stderr and a non-zero exit code.

mod list;
mod output;
mod start;
mod stop;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hydroplane::proto::process_service_client::ProcessServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Controls the processes of a Hydroplane server.
#[derive(Debug, Parser)]
#[command(name = "hpctl", version, about)]
struct Cli {
    /// The server's URL.
    #[arg(
        short,
        long,
        global = true,
        env = "HYDROPLANE_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    server: String,
    #[command(subcommand)]
    command: Command,
}

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

/// A failure to report: one line on stderr.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// The server answered with an error.
    #[error("{}", .0.message())]
    Server(tonic::Status),
    /// The server could not be reached.
    #[error(
        "cannot reach the Hydroplane server at {server}: {reason} (is `hydroplane` running? choose another server with -s/--server or HYDROPLANE_SERVER)"
    )]
    Unreachable { server: String, reason: String },
}

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

async fn run(cli: Cli) -> anyhow::Result<()> {
    // A spec file with a mistake is reported before any connection is tried.
    let start_request = match &cli.command {
        Command::Start(args) => Some(start::read_request(args)?),
        _ => None,
    };
    let mut client = connect(&cli.server).await?;
    let result = match cli.command {
        Command::List(args) => list::run(&mut client, args).await,
        Command::Start(_) => start::run(&mut client, start_request.context("start request was read")?).await,
        Command::Stop(args) => stop::run(&mut client, args).await,
        Command::Watch(args) => watch::run(&mut client, args).await,
    };
    result.map_err(|status| classify(status, &cli.server).into())
}

/// Connects to the server, accepting `host:port` without a scheme.
async fn connect(server: &str) -> Result<ProcessServiceClient<Channel>, CliError> {
    let url = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
    let unreachable = |reason: String| CliError::Unreachable { server: url.clone(), reason };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|error| unreachable(format!("invalid URL ({error})")))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|error| unreachable(root_cause(&error)))?;
    Ok(ProcessServiceClient::new(channel))
}

/// Turns transport failures into the same one clear line as a failed connection.
fn classify(status: tonic::Status, server: &str) -> CliError {
    if status.code() == tonic::Code::Unavailable && status.message().contains("transport") {
        CliError::Unreachable { server: server.to_owned(), reason: root_cause(&status) }
    } else {
        CliError::Server(status)
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
