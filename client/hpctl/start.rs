//! `hpctl start FILE`: starts a process from a Hydroplane JSON spec (`-` reads stdin).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use hydroplane::grpc::convert::spec_to_proto;
use hydroplane::proto;
use hydroplane::spec::ProcessSpec;

use crate::connect::Client;
use crate::output::{ProcessJson, print_pretty};

/// Arguments of `hpctl start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The JSON spec file, or `-` for stdin.
    file: PathBuf,
    /// Answer once the process is RUNNING or FAILED, not as soon as it is accepted.
    #[arg(short, long)]
    wait: bool,
    /// How long --wait may take, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, requires = "wait")]
    timeout: f64,
}

/// Reads and checks the spec file into a request.
pub fn read_request(args: &StartArgs) -> anyhow::Result<proto::StartRequest> {
    let (name, text) = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the spec from stdin")?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        (args.file.display().to_string(), text)
    };
    let spec = parse_spec(&name, &text)?;
    if !(args.timeout.is_finite() && args.timeout >= 0.0) {
        bail!("--timeout must be a number of seconds, got {}", args.timeout);
    }
    let wait_timeout = Duration::from_secs_f64(args.timeout);
    Ok(proto::StartRequest {
        spec: Some(spec_to_proto(spec)),
        wait: args.wait,
        wait_timeout: args.wait.then(|| wait_timeout.try_into().unwrap_or_default()),
    })
}

/// Parses a JSON spec, naming the file, line, column and field path of the first problem.
fn parse_spec(name: &str, text: &str) -> anyhow::Result<ProcessSpec> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.inner();
        let message = inner.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(message, _)| message);
        let location = format!("{name}:{}:{}", inner.line(), inner.column());
        if path.is_empty() || path == "." {
            anyhow::anyhow!("{location}: {message}")
        } else {
            anyhow::anyhow!("{location}: {path}: {message}")
        }
    })
}

/// Starts and prints the process.
pub async fn run(client: &mut Client, request: proto::StartRequest) -> Result<(), tonic::Status> {
    let response = client.start(request).await?.into_inner();
    let process = response.process.unwrap_or_default();
    if !response.created {
        eprintln!("process `{}` already exists with this spec; nothing started", process.process_name);
    }
    print_pretty(&ProcessJson::from(process)).map_err(|error| tonic::Status::internal(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: &str) {
        let error = parse_spec("spec.json", text).unwrap_err().to_string();
        assert_eq!(error, expected);
    }

    #[test]
    fn problems_name_the_file_line_and_field() {
        check(
            "{\n  \"process_name\": \"p\",\n  \"container\": {\"image_uri\": \"i\",\n \"nodeselector\": {}}}",
            "spec.json:4:15: container.nodeselector: unknown field `nodeselector`, expected one of `image_uri`, `command`, `env`, `ports`, `resource_request`, `resource_limit`, `node_selector`, `username`, `password`",
        );
        check("{\"process_name\": \"p\",\n\"container\": }", "spec.json:2:14: container: expected value");
        check(
            "{\"process_name\": 5}",
            "spec.json:1:18: process_name: invalid type: integer `5`, expected a string",
        );
    }
}
