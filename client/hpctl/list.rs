//! `hpctl list [-g GROUP]`: the server's processes as a JSON array.

use hydroplane_client::Client;

use crate::output::{ProcessJson, RunError, print_pretty, warn};

/// Arguments of `hpctl list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only the processes of this group.
    // `--group_name` is the Python hpctl's spelling, kept so that its scripts keep working.
    #[arg(short, long, alias = "group_name")]
    group: Option<String>,
}

/// Lists and prints.
pub async fn run(client: &Client, args: ListArgs) -> Result<(), RunError> {
    let response = client.list(args.group.as_deref()).await?;
    if let Some(reason) = &response.stale_reason {
        warn(&format!("warning: this list may be out of date: {reason}"));
    }
    let processes: Vec<ProcessJson> = response.processes.into_iter().map(ProcessJson::from).collect();
    print_pretty(&processes)
}
