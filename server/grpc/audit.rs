//! The audit log: one structured line (tracing target `audit`) per Start, per Stop, per Describe
//! (it shows a process's spec), per Logs (its output) and per refused call, with the token's name, the peer, the target and the outcome. Never the token: callers
//! are known here by name only.

use tonic::Status;

use crate::app::AppError;
use crate::proto;
use crate::proto::stop_request::Target;
use crate::security::access::Caller;
use crate::transport::connections::Peer;

/// The longest target text logged: names come from callers, so a huge one is cut.
const MAX_TARGET_CHARS: usize = 200;

/// What a Start call is about, for its audit line.
pub fn start_target(request: &proto::StartRequest) -> String {
    match &request.spec {
        None => "no spec".to_owned(),
        Some(spec) => match &spec.group {
            Some(group) => format!("process {} in group {}", spec.process_name, group),
            None => format!("process {}", spec.process_name),
        },
    }
}

/// What a Stop call is about, for its audit line.
pub fn stop_target(request: &proto::StopRequest) -> String {
    match &request.target {
        Some(Target::ProcessName(name)) => format!("process {name}"),
        Some(Target::Group(group)) => format!("group {group}"),
        // The selector is the caller's text: quoted and cut, so it can neither forge nor flood
        // the line.
        Some(Target::LabelSelector(selector)) => {
            let shown: String = selector.chars().take(200).collect();
            let cut = if shown.len() < selector.len() { "…" } else { "" };
            format!("processes matching {shown:?}{cut}")
        }
        None => "no target".to_owned(),
    }
}

/// What a Describe call is about, for its audit line.
pub fn describe_target(request: &proto::DescribeRequest) -> String {
    format!("process {}", request.process_name)
}

/// What a Logs call is about, for its audit line.
pub fn logs_target(request: &proto::LogsRequest) -> String {
    let follow = if request.follow { ", following" } else { "" };
    format!("output of process {}{follow}", request.process_name)
}

/// Turns a call's outcome into its answer, and logs it: a process out of the caller's reach is
/// answered as unknown, and logged as refused.
pub fn answer<T>(
    call: &str,
    caller: &Caller,
    peer: &Peer,
    target: &str,
    result: Result<T, AppError>,
) -> Result<T, Status> {
    let out_of_reach = matches!(result, Err(AppError::OutOfReach { .. }));
    let result = result.map_err(Status::from);
    if out_of_reach {
        tracing::info!(
            target: "audit",
            call = %call,
            caller = %caller.name,
            peer = %peer,
            target = cut(target).as_str(),
            outcome = "refused",
            code = ?tonic::Code::NotFound,
            reason = "out of the caller's reach (answered as not found)",
            "call refused"
        );
    } else {
        record(call, caller, peer, target, &result);
    }
    result
}

/// Logs the outcome of a mutating call, or of a Describe or Logs.
pub fn record<T>(call: &str, caller: &Caller, peer: &Peer, target: &str, result: &Result<T, Status>) {
    let target = cut(target);
    match result {
        Ok(_) => tracing::info!(
            target: "audit",
            call = %call,
            caller = %caller.name,
            peer = %peer,
            target = target.as_str(),
            outcome = "ok",
            "call done"
        ),
        Err(status) => tracing::info!(
            target: "audit",
            call = %call,
            caller = %caller.name,
            peer = %peer,
            target = target.as_str(),
            outcome = outcome_of(status),
            code = ?status.code(),
            reason = cut(status.message()).as_str(),
            "call {}", outcome_of(status)
        ),
    }
}

/// Logs a call the guard refused before it reached a handler.
pub fn refused(call: &str, caller: Option<&str>, peer: &Peer, status: &Status) {
    tracing::info!(
        target: "audit",
        call = %cut(call),
        caller = %caller.unwrap_or("-"),
        peer = %peer,
        outcome = "refused",
        code = ?status.code(),
        reason = status.message(),
        "call refused"
    );
}

/// `refused` for what the caller was not allowed, `failed` for everything else.
fn outcome_of(status: &Status) -> &'static str {
    match status.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted => {
            "refused"
        }
        _ => "failed",
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_TARGET_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_TARGET_CHARS).collect();
    cut.push('…');
    cut
}
