//! The JSON shapes hpctl prints, as in the Hydroplane guide (`process_name`, `group`,
//! `socket_addresses`, `created`), plus the status and its detail.

use hydroplane_client::proto;
use serde::Serialize;

/// A process, as printed.
#[derive(Serialize)]
pub struct ProcessJson {
    process_name: String,
    group: Option<String>,
    socket_addresses: Vec<AddressJson>,
    created: Option<String>,
    status: &'static str,
    reason: Option<String>,
    message: Option<String>,
    restart_count: u32,
    exit_code: Option<i32>,
    node: Option<String>,
}

/// A socket address, as printed.
#[derive(Serialize)]
struct AddressJson {
    host: String,
    port: u32,
    is_public: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_name: Option<String>,
}

impl From<proto::ProcessInfo> for ProcessJson {
    fn from(info: proto::ProcessInfo) -> ProcessJson {
        let status = match info.status() {
            proto::ProcessStatus::Unspecified => "UNSPECIFIED",
            proto::ProcessStatus::Starting => "STARTING",
            proto::ProcessStatus::Running => "RUNNING",
            proto::ProcessStatus::Failed => "FAILED",
            proto::ProcessStatus::Exited => "EXITED",
            proto::ProcessStatus::Stopping => "STOPPING",
        };
        ProcessJson {
            process_name: info.process_name,
            group: info.group,
            socket_addresses: info
                .socket_addresses
                .into_iter()
                .map(|address| AddressJson {
                    host: address.host,
                    port: address.port,
                    is_public: address.is_public,
                    dns_name: address.dns_name,
                })
                .collect(),
            created: info.created.and_then(format_timestamp),
            status,
            reason: info.reason,
            message: info.message,
            restart_count: info.restart_count,
            exit_code: info.exit_code,
            node: info.node,
        }
    }
}

/// Formats a timestamp as Hydroplane did: `2022-12-01T22:40:33+00:00`.
fn format_timestamp(timestamp: prost_types::Timestamp) -> Option<String> {
    let timestamp = jiff::Timestamp::new(timestamp.seconds, 0).ok()?;
    Some(timestamp.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_pretty(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
