//! Request builders: specs in Hydroplane's JSON form (read by the real parser, as `hpctl start`
//! reads a file), and the gRPC requests made of them.

use hydroplane::grpc::convert::spec_to_proto;
use hydroplane::proto::{self, stop_request::Target};
use serde_json::{Value, json};

/// The gRPC spec of a JSON spec; panics when the JSON is not a valid spec's shape.
#[track_caller]
pub fn spec(json: Value) -> proto::ProcessSpec {
    spec_to_proto(serde_json::from_value(json).expect("a valid test spec"))
}

/// Start, answered at once (the process may still be STARTING).
#[track_caller]
pub fn start_request(json: Value) -> proto::StartRequest {
    proto::StartRequest { spec: Some(spec(json)), wait: false, wait_timeout: None }
}

/// Start, answered once the process runs (or failed), within the server's default wait.
#[track_caller]
pub fn start_waiting(json: Value) -> proto::StartRequest {
    proto::StartRequest { wait: true, ..start_request(json) }
}

/// Stop one process by name.
pub fn stop_process(name: &str) -> proto::StopRequest {
    proto::StopRequest { target: Some(Target::ProcessName(name.to_owned())) }
}

/// Stop every process of a group.
pub fn stop_group(group: &str) -> proto::StopRequest {
    proto::StopRequest { target: Some(Target::Group(group.to_owned())) }
}

/// A process that sleeps for five minutes.
pub fn sleeper(name: &str) -> Value {
    json!({"process_name": name, "container": {"image_uri": "busybox", "command": ["sleep", "300"]}})
}

/// [`sleeper`] in a group, as a gRPC spec.
pub fn sleeper_spec(name: &str, group: Option<&str>) -> proto::ProcessSpec {
    let mut json = sleeper(name);
    if let Some(group) = group {
        json["group"] = group.into();
    }
    spec(json)
}

/// A process that serves HTTP on `port` with Python's http.server.
pub fn http_server_spec(name: &str, port: u16) -> Value {
    json!({
        "process_name": name,
        "container": {
            "image_uri": "python:3.11",
            "command": ["python3", "-m", "http.server", port.to_string(), "--bind", "127.0.0.1"],
            "ports": [{"container_port": port, "protocol": "tcp"}]
        }
    })
}
