//! `hpctl watch [-g GROUP] [-l SELECTOR] [--process NAME] [--since REVISION] [--reconnect]`: one
//! JSON object per change.
//!
//! The server never ends a watch of its own accord, so a stream that ends or breaks means the
//! server went away: hpctl says so in one line on stderr. Without `--reconnect` that ends the
//! watch (exit code 1); with it, the client crate's [`Watch`](hydroplane_client::Watch) reconnects
//! with backoff and resumes after the last revision seen, and the server replays what was missed
//! or, when it cannot (a restarted server has a new history), answers RESET and a fresh snapshot,
//! which is printed like any event and named on stderr.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::anyhow;
use hydroplane_client::{Client, Notice, Resume, Target, proto};
use serde::Serialize;
use tokio_stream::StreamExt;

use crate::format::{Format, header, line, print_names, print_text, print_yaml, row};
use crate::list::images;
use crate::output::{ProcessJson, RunError, print_line, stdout_closed, warn};

/// Arguments of `hpctl watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only the processes of this group.
    #[arg(short, long, alias = "group_name")]
    group: Option<String>,
    /// Only the processes whose labels match, in Kubernetes syntax
    /// (`tier=web,env in (dev,test),!canary`).
    // allow_hyphen_values: a selector starting with `-` (never a valid one) goes to the server,
    // which names the position of the mistake, rather than being taken for an unknown flag.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR", allow_hyphen_values = true)]
    selector: Option<String>,
    /// Only the process of this name.
    #[arg(long = "process", value_name = "NAME")]
    process_name: Option<String>,
    /// Resume after this revision (the `revision` of the last line seen).
    // allow_hyphen_values: `--since -1` is then refused as a value of --since, quoted, rather
    // than as an unknown flag `-1`.
    #[arg(long, value_name = "REVISION", allow_hyphen_values = true)]
    since: Option<u64>,
    /// When the server goes away, wait for it (retrying with backoff, up to 5 s apart) and resume
    /// after the last revision seen, instead of ending.
    #[arg(long)]
    reconnect: bool,
}

/// One line of output.
#[derive(Serialize)]
struct EventJson {
    r#type: &'static str,
    revision: u64,
    process: Option<ProcessJson>,
}

/// How `--reconnect` retries: soon at first, then every 5 s at most, until interrupted.
fn reconnecting() -> Resume {
    Resume {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
        max_attempts: u32::MAX,
    }
}

/// What `after` means in a message.
fn resume_point(after: Option<u64>) -> String {
    match after {
        Some(revision) => format!("resuming after revision {revision}"),
        None => "starting afresh".to_owned(),
    }
}

/// Follows changes until the user interrupts, stdout closes, or (without --reconnect) the server
/// goes away.
pub async fn run(client: &Client, args: WatchArgs, format: Format) -> Result<(), RunError> {
    let request = proto::WatchRequest {
        group: args.group,
        process_name: args.process_name,
        since_revision: args.since,
        label_selector: args.selector,
    };
    let server = client.target().to_string();
    let mut events = if args.reconnect {
        let server = server.clone();
        client.watch_with(request, reconnecting()).on_notice(move |notice| match notice {
            Notice::Broken { reason, attempt: 1, resume_after, .. } => warn(&format!(
                "warning: the Hydroplane server at {server} went away ({reason}); reconnecting, {}",
                resume_point(resume_after)
            )),
            Notice::Resumed { after } => warn(&format!(
                "warning: reconnected to the Hydroplane server at {server}, {}",
                resume_point(after)
            )),
            _ => {}
        })
    } else {
        client.watch_with(request, Resume { max_attempts: 0, ..Resume::default() })
    };
    let mut last_revision = args.since;
    let mut received = false;
    let mut table_started = false;
    let mut images = Images::default();
    let mut stdout_closed = std::pin::pin!(stdout_closed());
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut stdout_closed => return Err(RunError::StdoutClosed),
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(status) if received && gone(client.target(), &status) => {
                return Err(went_away(&server, last_revision, &describe(&status)));
            }
            Err(status) => return Err(status.into()),
        };
        let r#type = match event.r#type() {
            proto::WatchEventType::Unspecified => "UNSPECIFIED",
            proto::WatchEventType::Added => "ADDED",
            proto::WatchEventType::Modified => "MODIFIED",
            proto::WatchEventType::Deleted => "DELETED",
            proto::WatchEventType::Synced => "SYNCED",
            proto::WatchEventType::Reset => "RESET",
        };
        if event.r#type() == proto::WatchEventType::Reset {
            warn(&format!(
                "warning: the Hydroplane server at {server} cannot replay what changed after revision {}: \
                 RESET, then a fresh snapshot (drop what you knew)",
                last_revision.map_or("(none)".to_owned(), |revision| revision.to_string())
            ));
        }
        received = true;
        last_revision = Some(event.revision);
        match format {
            Format::Json | Format::Yaml => {
                let line = EventJson {
                    r#type,
                    revision: event.revision,
                    process: event.process.map(ProcessJson::from),
                };
                if format == Format::Json { print_line(&line)? } else { print_yaml_document(&line)? }
            }
            Format::Name => {
                if let Some(process) = &event.process {
                    print_names([process.process_name.as_str()])?;
                }
            }
            Format::Table | Format::Wide => {
                let Some(process) = &event.process else { continue };
                let image = match format {
                    Format::Wide => images.image(client, &process.process_name).await,
                    _ => None,
                };
                let mut text = String::new();
                if !table_started {
                    table_started = true;
                    text.push_str(&line(&header(format, &["EVENT"]), &ROW_WIDTHS));
                    text.push('\n');
                }
                let mut cells = vec![r#type.to_owned()];
                cells.extend(row(format, process, image.as_deref(), jiff::Timestamp::now()));
                text.push_str(&line(&cells, &ROW_WIDTHS));
                text.push('\n');
                print_text(&text)?;
            }
        }
    }
    Err(went_away(&server, last_revision, "it ended the stream"))
}

/// The widths of a watch's table columns (EVENT, then those of `list`): a stream cannot measure
/// its rows before printing them, so these fit usual names and addresses, and longer cells push
/// their line's next columns right.
const ROW_WIDTHS: [usize; 10] = [8, 20, 12, 8, 21, 8, 6, 20, 20, 12];

/// The image of each process seen, described once (for `-o wide`).
#[derive(Default)]
struct Images(HashMap<String, Option<String>>);

impl Images {
    /// The image of `name`'s spec, described the first time it is asked for.
    async fn image(&mut self, client: &Client, name: &str) -> Option<String> {
        if let Some(image) = self.0.get(name) {
            return image.clone();
        }
        let image = images(client, std::iter::once(name.to_owned())).await.remove(name);
        self.0.insert(name.to_owned(), image.clone());
        image
    }
}

/// A value as one YAML document (`---` first), so that a stream of them parses.
fn print_yaml_document(value: &impl Serialize) -> Result<(), RunError> {
    print_text("---\n")?;
    print_yaml(value)
}

/// Whether a failed stream means the server went away, rather than that it refused the watch.
fn gone(target: &Target, status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        || hydroplane_client::Unreachable::from_status(target, status).is_some()
        || std::error::Error::source(status).is_some()
}

/// The root cause of a broken stream, in a few words.
fn describe(status: &tonic::Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut last = status.message().to_owned();
    while let Some(error) = cause {
        last = error.to_string();
        cause = error.source();
    }
    last
}

/// The one line for a server that went away during a watch without --reconnect.
fn went_away(server: &str, last_revision: Option<u64>, reason: &str) -> RunError {
    let resume = match last_revision {
        Some(revision) => format!(" or `--since {revision}` to resume"),
        None => String::new(),
    };
    RunError::Other(anyhow!(
        "the Hydroplane server at {server} went away ({reason}); give --reconnect to wait for it{resume}"
    ))
}
