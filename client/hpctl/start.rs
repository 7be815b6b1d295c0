//! `hpctl start FILE`: starts a process from a Hydroplane JSON spec (`-` reads stdin).
//!
//! The spec is checked here before anything is sent, with the server library's own parser and
//! [`ProcessSpec::validate`], so that a mistake is reported with the file, line and column and the
//! value as the user wrote it, rather than as the server sees it after the wire conversion (a
//! negative `memory_mib` cannot travel as a `uint64`).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use crate::connect::Seconds;
use crate::format::{Format, header, layout, print_names, print_text, print_yaml, row};
use crate::output::{ProcessJson, RunError, print_pretty, status_name};
use anyhow::{Context, bail};
use hydroplane_client::{Client, Resume, Wait, proto};
use hydroplane_core::convert::spec_to_proto;
use hydroplane_core::spec::ProcessSpec;
use hydroplane_core::spec::validation::limits::MAX_WAIT;
use tokio_stream::StreamExt;

/// Arguments of `hpctl start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The JSON spec file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Answer once the process is RUNNING or FAILED (waiting at most --timeout), not as soon as
    /// it is accepted.
    #[arg(short, long)]
    wait: bool,
}

/// What to start, and when the server should answer.
pub struct StartRequest {
    /// The spec, checked by the server library's parser and rules.
    spec: proto::ProcessSpec,
    /// `--wait`, limited by `--timeout`.
    wait: Wait,
}

/// Reads and checks the spec file into a request; `timeout` is the global `--timeout`, which
/// limits the wait too.
pub fn read_request(args: &StartArgs, timeout: &Seconds) -> anyhow::Result<StartRequest> {
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
    let spec = spec.validate().map_err(|invalid| {
        let violations: Vec<String> = invalid.0.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{name}: invalid process spec: {}", violations.join("; "))
    })?;
    if args.wait && timeout.duration() > MAX_WAIT {
        bail!("--timeout {}: a --wait may last at most {} seconds", timeout.text(), MAX_WAIT.as_secs());
    }
    let wait = if args.wait { Wait::UntilStartedWithin(timeout.duration()) } else { Wait::No };
    Ok(StartRequest { spec: spec_to_proto(spec.into_inner()), wait })
}

/// Where each field of the spec belongs, for the hint on a misplaced one. The Python Hydroplane
/// ignored unknown fields, so its files can hold a field one level off (its own
/// `examples/nginx-advanced.json` has `node_selector` at the top level); a test checks this table
/// against the parser's own lists.
const FIELD_PLACES: &[(&str, &[&str])] = &[
    (
        "the top level",
        &[
            "process_name",
            "group",
            "container",
            "has_public_ip",
            "labels",
            "restart_policy",
            "readiness",
            "liveness",
            "max_run_seconds",
        ],
    ),
    (
        "`container`",
        &[
            "image_uri",
            "command",
            "env",
            "ports",
            "resource_request",
            "resource_limit",
            "node_selector",
            "username",
            "password",
            "working_dir",
        ],
    ),
    ("each of `container.ports`", &["container_port", "host_port", "protocol", "name"]),
    ("each of `container.env`", &["name", "value", "secret"]),
    ("`container.resource_request` and `container.resource_limit`", &["cpu_vcpu", "memory_mib"]),
    (
        "`readiness` and `liveness`",
        &["http_get", "tcp_socket", "exec", "period_seconds", "timeout_seconds", "failure_threshold"],
    ),
];

/// Where `field` belongs, other than `here` (the place of the parent path it was found at).
fn belongs(field: &str, here: &str) -> Option<String> {
    let places: Vec<&str> = FIELD_PLACES
        .iter()
        .filter(|(place, fields)| fields.contains(&field) && *place != here)
        .map(|(place, _)| *place)
        .collect();
    if places.is_empty() {
        return None;
    }
    let place = places.join(" or ");
    let place =
        if place == "the top level" { "at the top level".to_owned() } else { format!("inside {place}") };
    Some(format!("`{field}` belongs {place}"))
}

/// The place in [`FIELD_PLACES`] of a parent path such as `container.ports[2]`.
fn place_of(parent: &str) -> String {
    let mut generic = String::new();
    let mut in_index = false;
    for character in parent.chars() {
        match character {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => generic.push(character),
            _ => {}
        }
    }
    match generic.as_str() {
        "" => "the top level".to_owned(),
        "container.ports" => "each of `container.ports`".to_owned(),
        "container.env" => "each of `container.env`".to_owned(),
        "container.resource_request" | "container.resource_limit" => {
            "`container.resource_request` and `container.resource_limit`".to_owned()
        }
        "readiness" | "liveness" => "`readiness` and `liveness`".to_owned(),
        other => format!("`{other}`"),
    }
}

/// Parses a JSON spec, naming the file, line, column and field path of the first problem; text
/// after the spec (a second spec, a stray brace) is refused rather than ignored.
fn parse_spec(name: &str, text: &str) -> anyhow::Result<ProcessSpec> {
    let deserializer = &mut serde_json::Deserializer::from_str(text);
    let spec: ProcessSpec = serde_path_to_error::deserialize(&mut *deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.inner();
        let message = inner.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(message, _)| message);
        let location = format!("{name}:{}:{}", inner.line(), inner.column());
        if path.is_empty() || path == "." {
            return anyhow::anyhow!("{location}: {message}");
        }
        let hint = message.strip_prefix("unknown field `").and_then(|rest| rest.split_once('`')).and_then(
            |(field, _)| {
                let parent = path.strip_suffix(field)?.trim_end_matches('.');
                belongs(field, &place_of(parent))
            },
        );
        match hint {
            // The parser's list of the fields expected here is long, and beside the point.
            Some(hint) => {
                let field = message.split_once(", expected").map_or(message, |(field, _)| field);
                anyhow::anyhow!("{location}: {path}: {field}: {hint}")
            }
            None => anyhow::anyhow!("{location}: {path}: {message}"),
        }
    })?;
    deserializer.end().map_err(|error| {
        anyhow::anyhow!(
            "{name}:{}:{}: unexpected text after the spec (a file holds one spec)",
            error.line(),
            error.column()
        )
    })?;
    Ok(spec)
}

/// Starts and prints the process. With `--wait`, a process that ended FAILED (or EXITED with a
/// non-zero code) is printed too, and then fails the command with [`RunError::ProcessFailed`], so
/// that a script can tell; while it waits, the process's status changes go to stderr when stderr
/// is a terminal.
pub async fn run(client: &Client, request: StartRequest, format: Format) -> Result<(), RunError> {
    let name = request.spec.process_name.clone();
    let image = request.spec.container.as_ref().map(|container| container.image_uri.clone());
    let waits = request.wait != Wait::No;
    let start = client.start(request.spec, request.wait);
    let response = if waits && std::io::stderr().is_terminal() {
        let mut start = std::pin::pin!(start);
        tokio::select! {
            response = &mut start => response,
            () = progress(client, &name) => start.await,
        }
    } else {
        start.await
    }?;
    let process = response.process.unwrap_or_default();
    if !response.created {
        crate::output::warn(&format!(
            "process `{}` already exists with this spec; nothing started",
            process.process_name
        ));
    }
    let failure = waits.then(|| failure(&process)).flatten();
    print_process(process, image.as_deref(), format)?;
    match failure {
        Some(failure) => Err(RunError::ProcessFailed(failure)),
        None => Ok(()),
    }
}

/// Prints one process in `format`; `image` is its spec's, for `wide`.
pub fn print_process(
    process: proto::ProcessInfo,
    image: Option<&str>,
    format: Format,
) -> Result<(), RunError> {
    match format {
        Format::Json => print_pretty(&ProcessJson::from(process)),
        Format::Yaml => print_yaml(&ProcessJson::from(process)),
        Format::Name => print_names([process.process_name.as_str()]),
        Format::Table | Format::Wide => {
            let row = row(format, &process, image, jiff::Timestamp::now());
            print_text(&layout(&header(format, &[]), &[row]))
        }
    }
}

/// Why a process a `--wait` waited for did not start, if it did not: FAILED, or EXITED with a
/// non-zero code.
fn failure(process: &proto::ProcessInfo) -> Option<String> {
    let failed = match process.status() {
        proto::ProcessStatus::Failed => true,
        proto::ProcessStatus::Exited => process.exit_code.is_some_and(|code| code != 0),
        _ => false,
    };
    failed.then(|| {
        let mut line = format!("process `{}` is {}", process.process_name, status_name(process.status()));
        if let Some(code) = process.exit_code {
            line.push_str(&format!(" (exit code {code})"));
        }
        for detail in [&process.reason, &process.message].into_iter().flatten() {
            line.push_str(&format!(": {detail}"));
        }
        line
    })
}

/// Prints the process's status on stderr each time it changes, until the watch ends (then waits
/// forever: the Start's answer ends the wait). A watch the token may not make shows nothing.
async fn progress(client: &Client, name: &str) {
    let request = proto::WatchRequest { process_name: Some(name.to_owned()), ..Default::default() };
    let mut events = client.watch_with(request, Resume { max_attempts: 0, ..Resume::default() });
    let mut last = String::new();
    while let Some(Ok(event)) = events.next().await {
        if event.r#type() == proto::WatchEventType::Deleted {
            continue;
        }
        let Some(process) = event.process else { continue };
        let mut line = format!("{}: {}", process.process_name, status_name(process.status()));
        match (&process.reason, &process.message) {
            (Some(reason), Some(message)) => line.push_str(&format!(" ({reason}: {message})")),
            (Some(detail), None) | (None, Some(detail)) => line.push_str(&format!(" ({detail})")),
            (None, None) => {}
        }
        if line != last {
            crate::output::warn(&line);
            last = line;
        }
    }
    std::future::pending().await
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

    const SPEC: &str = r#"{"process_name": "p", "container": {"image_uri": "i"}}"#;

    #[test]
    fn anything_after_the_spec_is_refused_with_its_place() {
        check(
            &format!("{SPEC}\n{SPEC}\n"),
            "spec.json:2:1: unexpected text after the spec (a file holds one spec)",
        );
        check(
            &format!("{SPEC} trailing"),
            "spec.json:1:56: unexpected text after the spec (a file holds one spec)",
        );
        check(
            &format!("{SPEC}\n}}"),
            "spec.json:2:1: unexpected text after the spec (a file holds one spec)",
        );
        check(&format!("{SPEC},"), "spec.json:1:55: unexpected text after the spec (a file holds one spec)");
        // Whitespace after the spec is no text.
        parse_spec("spec.json", &format!("\n{SPEC}\n\n  \t\n")).expect("a spec and whitespace");
    }

    #[test]
    fn a_misplaced_field_says_where_it_belongs() {
        // The Python Hydroplane's examples/nginx-advanced.json, which it silently ignored.
        let python = r#"{"process_name": "nginx", "container": {"image_uri": "nginxdemos/hello"},
"has_public_ip": true, "node_selector": {"kubernetes.io/hostname": "n"}}"#;
        check(
            python,
            "spec.json:2:38: node_selector: unknown field `node_selector`: `node_selector` belongs inside `container`",
        );
        check(
            r#"{"process_name": "p", "image_uri": "i", "container": {"image_uri": "i"}}"#,
            "spec.json:1:33: image_uri: unknown field `image_uri`: `image_uri` belongs inside `container`",
        );
        check(
            r#"{"process_name": "p", "container": {"image_uri": "i", "has_public_ip": true}}"#,
            "spec.json:1:69: container.has_public_ip: unknown field `has_public_ip`: `has_public_ip` belongs at the top level",
        );
        check(
            r#"{"process_name": "p", "container": {"image_uri": "i", "memory_mib": 1}}"#,
            "spec.json:1:66: container.memory_mib: unknown field `memory_mib`: `memory_mib` belongs inside `container.resource_request` and `container.resource_limit`",
        );
        check(
            r#"{"process_name": "p", "container": {"image_uri": "i", "ports": [{"container_port": 1, "env": []}]}}"#,
            "spec.json:1:91: container.ports[0].env: unknown field `env`: `env` belongs inside `container`",
        );
        check(
            r#"{"process_name": "p", "container": {"image_uri": "i", "name": "x"}}"#,
            "spec.json:1:60: container.name: unknown field `name`: `name` belongs inside each of `container.ports` or each of `container.env`",
        );
    }

    /// The fields the parser itself expects at each place, from its error for an unknown one.
    #[test]
    fn the_table_of_places_matches_the_parser() {
        let probes = [
            ("the top level", r#"{"zzz": 1}"#),
            ("`container`", r#"{"process_name": "p", "container": {"zzz": 1}}"#),
            (
                "each of `container.ports`",
                r#"{"process_name": "p", "container": {"image_uri": "i", "ports": [{"zzz": 1}]}}"#,
            ),
            (
                "each of `container.env`",
                r#"{"process_name": "p", "container": {"image_uri": "i", "env": [{"zzz": 1}]}}"#,
            ),
            (
                "`container.resource_request` and `container.resource_limit`",
                r#"{"process_name": "p", "container": {"image_uri": "i", "resource_limit": {"zzz": 1}}}"#,
            ),
            (
                "`readiness` and `liveness`",
                r#"{"process_name": "p", "container": {"image_uri": "i"}, "liveness": {"zzz": 1}}"#,
            ),
        ];
        assert_eq!(probes.len(), FIELD_PLACES.len());
        for ((place, probe), (table_place, table_fields)) in probes.iter().zip(FIELD_PLACES) {
            assert_eq!(place, table_place);
            let error = parse_spec("spec.json", probe).unwrap_err().to_string();
            // serde lists three or more fields as "one of `a`, `b`, `c`", two as "`a` or `b`".
            let expected = error
                .split_once("expected one of ")
                .or_else(|| error.split_once("expected "))
                .map(|(_, list)| list)
                .unwrap_or_else(|| panic!("{error}"));
            let fields: Vec<&str> = expected
                .split(", ")
                .flat_map(|field| field.split(" or "))
                .map(|field| field.trim_matches('`'))
                .collect();
            assert_eq!(&fields, table_fields, "{place}");
        }
    }

    fn request(text: &str, wait: bool, timeout: &str) -> anyhow::Result<StartRequest> {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("spec.json");
        std::fs::write(&file, text).expect("write");
        let timeout: Seconds = timeout.parse().expect("seconds");
        read_request(&StartArgs { file, wait }, &timeout)
    }

    #[test]
    fn rule_violations_quote_the_value_given_in_one_line() {
        let text = r#"{"process_name": "Web", "container": {"image_uri": "i",
            "resource_request": {"memory_mib": -1}, "ports": [{"container_port": 70000}]}}"#;
        let error = request(text, false, "60").err().expect("invalid").to_string();
        let error = error.split_once(": invalid process spec: ").map(|(_, rest)| rest).expect("prefix");
        assert_eq!(
            error,
            "process_name: must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, got `Web`; \
             container.ports[0].container_port: must be between 1 and 65535, got 70000; \
             container.resource_request.memory_mib: must be between 1 and 1073741824, got -1"
        );
    }

    #[test]
    fn the_timeout_limits_the_wait() {
        let started = request(SPEC, true, "2.5").expect("a request");
        assert_eq!(started.wait, Wait::UntilStartedWithin(std::time::Duration::from_millis(2500)));
        assert_eq!(request(SPEC, false, "2.5").expect("a request").wait, Wait::No);
        let error = request(SPEC, true, "99999").err().expect("too long").to_string();
        assert_eq!(error, "--timeout 99999: a --wait may last at most 3600 seconds");
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
