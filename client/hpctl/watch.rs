//! `hpctl watch [-g GROUP] [--process NAME] [--since REVISION]`: one JSON object per change.

use std::io::Write;

use hydroplane_client::{Client, proto};
use serde::Serialize;
use tokio_stream::StreamExt;

use crate::output::ProcessJson;

/// Arguments of `hpctl watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only the processes of this group.
    #[arg(short, long)]
    group: Option<String>,
    /// Only the process of this name.
    #[arg(long = "process", value_name = "NAME")]
    process_name: Option<String>,
    /// Resume after this revision (the `revision` of the last line seen).
    #[arg(long, value_name = "REVISION")]
    since: Option<u64>,
}

/// One line of output.
#[derive(Serialize)]
struct EventJson {
    r#type: &'static str,
    revision: u64,
    process: Option<ProcessJson>,
}

/// Follows changes until the user interrupts (or stdout closes). A broken connection or a server
/// restart does not end it: the client crate resumes from the last revision (the server then
/// replays what was missed, or sends RESET and a fresh snapshot); an error that is no outage, or
/// an outage of about a minute, ends it with that error.
pub async fn run(client: &Client, args: WatchArgs) -> Result<(), tonic::Status> {
    let request = proto::WatchRequest {
        group: args.group,
        process_name: args.process_name,
        since_revision: args.since,
    };
    let mut events = client.watch(request);
    let mut stdout = std::io::stdout().lock();
    while let Some(event) = events.next().await {
        let event = event?;
        let r#type = match event.r#type() {
            proto::WatchEventType::Unspecified => "UNSPECIFIED",
            proto::WatchEventType::Added => "ADDED",
            proto::WatchEventType::Modified => "MODIFIED",
            proto::WatchEventType::Deleted => "DELETED",
            proto::WatchEventType::Synced => "SYNCED",
            proto::WatchEventType::Reset => "RESET",
        };
        let line =
            EventJson { r#type, revision: event.revision, process: event.process.map(ProcessJson::from) };
        let written = serde_json::to_writer(&mut stdout, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(stdout))
            .and_then(|()| stdout.flush());
        // A closed stdout (`hpctl watch | head`) ends the watch quietly.
        if written.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
