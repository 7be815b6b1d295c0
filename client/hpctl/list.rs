//! `hpctl list [-g GROUP] [-l SELECTOR] [--page-size N]`: the server's processes as one JSON
//! array, however many pages the server answers in.
//!
//! The client crate follows the pages of one listing (and lists again from the first page when
//! the server no longer keeps it), so the array shows the processes at one revision.

use hydroplane_client::{Client, proto};

use crate::output::{ProcessJson, RunError, print_pretty, warn};

/// Arguments of `hpctl list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only the processes of this group.
    // `--group_name` is the Python hpctl's spelling, kept so that its scripts keep working.
    #[arg(short, long, alias = "group_name")]
    group: Option<String>,
    /// Only the processes whose labels match, in Kubernetes syntax
    /// (`tier=web,env in (dev,test),!canary`).
    // allow_hyphen_values: a selector starting with `-` (never a valid one) goes to the server,
    // which names the position of the mistake, rather than being taken for an unknown flag.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR", allow_hyphen_values = true)]
    selector: Option<String>,
    /// Ask the server for pages of at most this many processes (it answers 1,000 by default, and
    /// at most 5,000); the output is the same one array.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    page_size: Option<u32>,
}

/// Lists every page and prints.
pub async fn run(client: &Client, args: ListArgs) -> Result<(), RunError> {
    let request = proto::ListRequest {
        group: args.group,
        label_selector: args.selector,
        page_size: args.page_size.unwrap_or(0),
        page_token: None,
    };
    let listing = client.list(request).await?;
    if let Some(reason) = &listing.stale_reason {
        warn(&format!("warning: this list may be out of date: {reason}"));
    }
    let processes: Vec<ProcessJson> = listing.processes.into_iter().map(ProcessJson::from).collect();
    print_pretty(&processes)
}
