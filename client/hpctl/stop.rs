//! `hpctl stop NAME` or `hpctl stop -g GROUP`: stops, and prints the names stopped.

use hydroplane_client::Client;

use crate::output::print_pretty;

/// Arguments of `hpctl stop`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct StopArgs {
    /// The process to stop.
    process_name: Option<String>,
    /// Stop every process of this group instead.
    #[arg(short, long)]
    group: Option<String>,
}

/// Stops and prints.
pub async fn run(client: &Client, args: StopArgs) -> Result<(), tonic::Status> {
    let stopped = match (args.process_name, args.group) {
        (Some(name), _) => client.stop_process(name).await?,
        (None, Some(group)) => client.stop_group(group).await?,
        (None, None) => return Err(tonic::Status::invalid_argument("give a process name or -g GROUP")),
    };
    print_pretty(&stopped).map_err(|error| tonic::Status::internal(error.to_string()))
}
