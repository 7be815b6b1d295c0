//! `hpctl list [-g GROUP]`: the server's processes as a JSON array.

use hydroplane_client::Client;

use crate::output::{ProcessJson, print_pretty};

/// Arguments of `hpctl list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only the processes of this group.
    #[arg(short, long)]
    group: Option<String>,
}

/// Lists and prints.
pub async fn run(client: &Client, args: ListArgs) -> Result<(), tonic::Status> {
    let response = client.list(args.group.as_deref()).await?;
    if let Some(reason) = &response.stale_reason {
        eprintln!("warning: this list may be out of date: {reason}");
    }
    let processes: Vec<ProcessJson> = response.processes.into_iter().map(ProcessJson::from).collect();
    print_pretty(&processes).map_err(|error| tonic::Status::internal(error.to_string()))
}
