//! `hpctl describe NAME`: one process as one JSON object: `process` (as `list` prints it), `spec`
//! (in the JSON spec format of `start`, secret references only) and `history` (oldest first).

use hydroplane::grpc::convert::stored_spec_from_proto;
use hydroplane::spec::ProcessSpec;
use hydroplane_client::{Client, proto};
use serde::Serialize;

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

/// Describes and prints.
pub async fn run(client: &Client, args: DescribeArgs) -> Result<(), RunError> {
    let detail = client.describe(args.process_name).await?;
    print_pretty(&DetailJson {
        process: detail.process.map(ProcessJson::from),
        spec: detail.spec.map(stored_spec_from_proto),
        history: detail.history.into_iter().map(TransitionJson::from).collect(),
    })
}
