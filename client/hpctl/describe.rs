//! `hpctl describe NAME`: one process as one JSON object: `process` (as `list` prints it), `spec`
//! (in the JSON spec format of `start`, secret references only) and `history` (oldest first).

use hydroplane_client::{Client, proto};
use hydroplane_core::convert::stored_spec_from_proto;
use hydroplane_core::spec::ProcessSpec;
use serde::Serialize;

use crate::format::{Format, header, layout, print_names, print_text, print_yaml, row};
use crate::output::{ProcessJson, RunError, print_pretty, status_name};

/// Arguments of `hpctl describe`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The process to describe.
    #[arg(value_name = "NAME")]
    process_name: String,
}

/// A process's detail, as printed.
#[derive(Serialize)]
struct DetailJson {
    process: Option<ProcessJson>,
    spec: Option<ProcessSpec>,
    history: Vec<TransitionJson>,
}

/// One entry of the history, as printed.
#[derive(Serialize)]
struct TransitionJson {
    /// RFC 3339, to the server's precision.
    time: Option<String>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl From<proto::Transition> for TransitionJson {
    fn from(transition: proto::Transition) -> TransitionJson {
        let time = transition.time.and_then(|time| {
            jiff::Timestamp::new(time.seconds, time.nanos).ok().map(|time| time.to_string())
        });
        TransitionJson {
            time,
            status: status_name(transition.status()),
            reason: transition.reason,
            message: transition.message,
        }
    }
}

/// Describes and prints: JSON or YAML as one object; a table as the process's row, then its
/// history (TIME STATUS REASON MESSAGE); `name` as its name.
pub async fn run(client: &Client, args: DescribeArgs, format: Format) -> Result<(), RunError> {
    let detail = client.describe(args.process_name.clone()).await?;
    if format == Format::Name {
        return print_names([args.process_name.as_str()]);
    }
    let process = detail.process;
    let image = detail
        .spec
        .as_ref()
        .and_then(|spec| spec.container.as_ref())
        .map(|container| container.image_uri.clone());
    let history: Vec<TransitionJson> = detail.history.into_iter().map(TransitionJson::from).collect();
    if format.is_table() {
        let row = row(format, &process.unwrap_or_default(), image.as_deref(), jiff::Timestamp::now());
        let mut text = layout(&header(format, &[]), &[row]);
        let history: Vec<Vec<String>> = history
            .into_iter()
            .map(|transition| {
                let cell = |value: Option<String>| value.unwrap_or_else(|| "<none>".to_owned());
                vec![
                    cell(transition.time),
                    transition.status.to_owned(),
                    cell(transition.reason),
                    cell(transition.message),
                ]
            })
            .collect();
        let columns = ["TIME", "STATUS", "REASON", "MESSAGE"].map(str::to_owned);
        text.push_str("\nHISTORY\n");
        text.push_str(&layout(&columns, &history));
        return print_text(&text);
    }
    let detail = DetailJson {
        process: process.map(ProcessJson::from),
        spec: detail.spec.map(stored_spec_from_proto),
        history,
    };
    if format == Format::Yaml { print_yaml(&detail) } else { print_pretty(&detail) }
}
