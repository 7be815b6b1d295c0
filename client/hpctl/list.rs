//! `hpctl list [-g GROUP] [-l SELECTOR] [--page-size N]`: the server's processes as one JSON
//! array (or in the `-o` format), however many pages the server answers in.
//!
//! The client crate follows the pages of one listing (and lists again from the first page when
//! the server no longer keeps it), so the array shows the processes at one revision.

use std::collections::HashMap;

use futures::StreamExt;
use hydroplane_client::{Client, proto};

use crate::format::{Format, header, layout, print_names, print_text, print_yaml, row};
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
pub async fn run(client: &Client, args: ListArgs, format: Format) -> Result<(), RunError> {
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
    print_processes(client, listing.processes, format).await
}

/// Prints processes in `format`: a JSON or YAML array, a table, or their names. `wide` shows each
/// one's image, which only its spec holds: it is described, a few at a time.
pub async fn print_processes(
    client: &Client,
    processes: Vec<proto::ProcessInfo>,
    format: Format,
) -> Result<(), RunError> {
    match format {
        Format::Json | Format::Yaml => {
            let processes: Vec<ProcessJson> = processes.into_iter().map(ProcessJson::from).collect();
            if format == Format::Json { print_pretty(&processes) } else { print_yaml(&processes) }
        }
        Format::Name => print_names(processes.iter().map(|process| process.process_name.as_str())),
        Format::Table | Format::Wide => {
            let images = if format == Format::Wide {
                images(client, processes.iter().map(|process| process.process_name.clone())).await
            } else {
                HashMap::new()
            };
            let now = jiff::Timestamp::now();
            let rows: Vec<Vec<String>> = processes
                .iter()
                .map(|process| {
                    let image = images.get(&process.process_name).map(String::as_str);
                    row(format, process, image, now)
                })
                .collect();
            print_text(&layout(&header(format, &[]), &rows))
        }
    }
}

/// How many Describe calls `wide` makes at once.
const DESCRIBES_AT_ONCE: usize = 8;

/// The image of each named process, from its spec (Describe); a process that cannot be described
/// (gone meanwhile) is left out.
pub async fn images(client: &Client, names: impl Iterator<Item = String>) -> HashMap<String, String> {
    futures::stream::iter(names)
        .map(|name| async move {
            let detail = client.describe(name.clone()).await.ok()?;
            let image = detail.spec?.container?.image_uri;
            Some((name, image))
        })
        .buffer_unordered(DESCRIBES_AT_ONCE)
        .filter_map(|entry| async move { entry })
        .collect()
        .await
}
