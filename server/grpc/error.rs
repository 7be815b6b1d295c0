//! The one place where domain errors become gRPC status codes. Errors nobody expected become
//! `INTERNAL` with no detail for the caller, and are logged in full.

use tonic::{Code, Status};

use crate::app::AppError;
use crate::runtime::RuntimeError;
use crate::table::listing::PageError;

impl From<AppError> for Status {
    fn from(error: AppError) -> Status {
        let code = match &error {
            AppError::InvalidRequest(_) | AppError::InvalidFields(_) => Code::InvalidArgument,
            AppError::Denied(_) => Code::PermissionDenied,
            // The same answer as for a process that does not exist; the message is the same too.
            AppError::OutOfReach { .. } => Code::NotFound,
            AppError::WaitTimedOut { .. } => Code::DeadlineExceeded,
            // As Kubernetes' 410 Gone on an expired `continue`: list again.
            AppError::Page(PageError::Expired { .. }) => Code::FailedPrecondition,
            AppError::Page(PageError::Malformed | PageError::OtherFilter { .. }) => Code::InvalidArgument,
            AppError::Runtime(runtime) => match runtime_code(runtime) {
                Some(code) => code,
                None => {
                    tracing::error!(error = %crate::report::error_chain(&error), "request failed unexpectedly");
                    return Status::internal("internal error; the server's log has the details");
                }
            },
        };
        Status::new(code, printable(&error.to_string()))
    }
}

/// A message as it may reach a caller's terminal: messages quote what the caller sent (names,
/// selectors, values that break a rule), so control characters (NUL, CR, terminal escapes, C1
/// codes) and the characters that reorder text on screen are written as `\u{..}` escapes. A
/// newline is kept only where it starts an item of a list of violations (`\n  - `); any other
/// is escaped too, so that no quoted text can start a line of its own.
pub fn printable(message: &str) -> String {
    let mut shown = String::with_capacity(message.len());
    for (index, character) in message.char_indices() {
        let list_item = character == '\n' && message[index + 1..].starts_with("  - ");
        let reorders = matches!(character, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (character.is_control() && !list_item) || reorders {
            shown.extend(character.escape_unicode());
        } else {
            shown.push(character);
        }
    }
    shown
}

/// The code of a runtime failure; `None` for the unexpected, which callers are not told about.
fn runtime_code(error: &RuntimeError) -> Option<Code> {
    Some(match error {
        RuntimeError::Unsupported { .. } | RuntimeError::Rejected { .. } => Code::InvalidArgument,
        RuntimeError::AlreadyExists { .. } => Code::AlreadyExists,
        RuntimeError::NotFound { .. } => Code::NotFound,
        // A secret that is missing or unreadable is the server's setup, not the request.
        RuntimeError::Secret(_) => Code::FailedPrecondition,
        // Not UNAVAILABLE: retrying cannot help until someone creates the namespace.
        RuntimeError::NamespaceMissing { .. } => Code::FailedPrecondition,
        RuntimeError::NotServable { .. } => Code::FailedPrecondition,
        RuntimeError::Unavailable { .. } => Code::Unavailable,
        RuntimeError::Exhausted { .. } => Code::ResourceExhausted,
        RuntimeError::Unauthenticated { .. } => Code::Unauthenticated,
        RuntimeError::PermissionDenied { .. } => Code::PermissionDenied,
        RuntimeError::Conflict { .. } => Code::Aborted,
        RuntimeError::Internal(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretError;
    use crate::spec::SecretReference;

    #[track_caller]
    fn check(error: impl Into<AppError>, code: Code, message: &str) {
        let status = Status::from(error.into());
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(message), "`{}` lacks `{message}`", status.message());
    }

    #[test]
    fn a_callers_text_reaches_it_escaped() {
        let invalid = AppError::from(crate::spec::InvalidFields(vec![
            crate::spec::Violation {
                field: "label_selector".into(),
                rule: "bad `a\u{1b}[2J\0\r\nb\u{202e}`".into(),
            },
            crate::spec::Violation { field: "since_time".into(), rule: "out of range".into() },
        ]));
        let message = Status::from(invalid).message().to_owned();
        assert!(message.contains("a\\u{1b}[2J\\u{0}\\u{d}\\u{a}b\\u{202e}"), "{message}");
        assert!(message.contains("\n  - since_time"), "the list of violations keeps its lines: {message}");
        assert!(!message.chars().any(|c| c.is_control() && c != '\n'), "{message:?}");
    }

    #[test]
    fn errors_map_to_the_codes_of_the_contract() {
        check(RuntimeError::NotFound { name: "x".into() }, Code::NotFound, "`x` does not exist");
        check(
            RuntimeError::AlreadyExists { name: "x".into(), detail: "with a different spec".into() },
            Code::AlreadyExists,
            "different spec",
        );
        check(
            RuntimeError::Secret(SecretError::NoStore {
                reference: SecretReference { secret_name: "db".into(), key: None },
            }),
            Code::FailedPrecondition,
            "secret `db`",
        );
        check(
            AppError::WaitTimedOut {
                name: "x".into(),
                status: "STARTING".into(),
                waited: std::time::Duration::from_secs(1),
            },
            Code::DeadlineExceeded,
            "still STARTING",
        );
        check(
            RuntimeError::NamespaceMissing { namespace: "procs".into() },
            Code::FailedPrecondition,
            "namespace `procs` does not exist",
        );
        check(RuntimeError::Internal("boom at 0xdead".into()), Code::Internal, "server's log");
        assert!(
            !Status::from(AppError::from(RuntimeError::Internal("boom".into()))).message().contains("boom")
        );
        let unknown = Status::from(AppError::from(RuntimeError::NotFound { name: "x".into() }));
        let out_of_reach = Status::from(AppError::OutOfReach { name: "x".into() });
        assert_eq!((unknown.code(), unknown.message()), (out_of_reach.code(), out_of_reach.message()));
    }
}
