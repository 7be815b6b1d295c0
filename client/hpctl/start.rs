//! `hpctl start FILE`: starts a process from a Hydroplane JSON spec (`-` reads stdin).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::output::{ProcessJson, print_pretty};
use anyhow::{Context, bail};
use hydroplane::grpc::convert::spec_to_proto;
use hydroplane::spec::ProcessSpec;
use hydroplane_client::{Client, Wait, proto};

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

/// What to start, and when the server should answer.
pub struct StartRequest {
    /// The spec, checked by the server library's parser.
    spec: proto::ProcessSpec,
    /// `--wait` and `--timeout`.
    wait: Wait,
}

/// Reads and checks the spec file into a request.
pub fn read_request(args: &StartArgs) -> anyhow::Result<StartRequest> {
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
    let wait =
        if args.wait { Wait::UntilStartedWithin(Duration::from_secs_f64(args.timeout)) } else { Wait::No };
    Ok(StartRequest { spec: spec_to_proto(spec), wait })
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
pub async fn run(client: &Client, request: StartRequest) -> Result<(), tonic::Status> {
    let response = client.start(request.spec, request.wait).await?;
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
            "spec.json:4:15: container.nodeselector: unknown field `nodeselector`, expected one of `image_uri`, `command`, `env`, `ports`, `resource_request`, `resource_limit`, `node_selector`, `username`, `password`, `working_dir`",
        );
        check("{\"process_name\": \"p\",\n\"container\": }", "spec.json:2:14: container: expected value");
        check(
            "{\"process_name\": 5}",
            "spec.json:1:18: process_name: invalid type: integer `5`, expected a string",
        );
    }

    #[test]
    fn a_spec_reaches_the_client_message_whole() {
        let text = r#"{"process_name": "web", "group": "site", "has_public_ip": true,
            "container": {"image_uri": "python:3.11", "command": ["python3", "-m", "http.server"],
              "env": [{"name": "A", "value": "1"}, {"name": "B", "value": {"secret_name": "s", "key": "k"}}],
              "ports": [{"container_port": 8000, "host_port": 8080, "protocol": "tcp"}],
              "resource_request": {"cpu_vcpu": 0.25, "memory_mib": 128},
              "node_selector": {"zone": "a"}, "username": "u"}}"#;
        let client = spec_to_proto(parse_spec("spec.json", text).expect("a valid spec"));
        let container = client.container.expect("a container");
        assert_eq!((client.process_name.as_str(), client.group.as_deref()), ("web", Some("site")));
        assert!(client.has_public_ip);
        assert_eq!(container.command, ["python3", "-m", "http.server"]);
        assert_eq!(
            container.env[1].source,
            Some(proto::environment_variable::Source::Secret(proto::SecretReference {
                secret_name: "s".to_owned(),
                key: Some("k".to_owned()),
            }))
        );
        assert_eq!(container.ports[0].host_port, Some(8080));
        assert_eq!(container.resource_request.expect("a request").memory_mib, Some(128));
        assert_eq!(container.node_selector["zone"], "a");
    }
}
