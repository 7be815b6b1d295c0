//! `hpctl stop NAME` or `hpctl stop -g GROUP`: stops, and prints the names stopped.

use hydroplane::proto::{self, stop_request::Target};

use crate::connect::Client;
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
pub async fn run(client: &mut Client, args: StopArgs) -> Result<(), tonic::Status> {
    let target = match (args.process_name, args.group) {
        (Some(name), _) => Target::ProcessName(name),
        (None, Some(group)) => Target::Group(group),
        (None, None) => return Err(tonic::Status::invalid_argument("give a process name or -g GROUP")),
    };
    let response = client.stop(proto::StopRequest { target: Some(target) }).await?.into_inner();
    print_pretty(&response.stopped).map_err(|error| tonic::Status::internal(error.to_string()))
}
