//! The one place where domain errors become gRPC status codes. Errors nobody expected become
//! `INTERNAL` with no detail for the caller, and are logged in full.

use tonic::{Code, Status};

use crate::runtime::RuntimeError;

impl From<RuntimeError> for Status {
    fn from(error: RuntimeError) -> Status {
        let code = match &error {
            RuntimeError::InvalidSpec(_) | RuntimeError::Unsupported { .. } => Code::InvalidArgument,
            RuntimeError::AlreadyExists { .. } => Code::AlreadyExists,
            RuntimeError::NotFound { .. } => Code::NotFound,
            // A secret that is missing or unreadable is the server's setup, not the request.
            RuntimeError::Secret(_) => Code::FailedPrecondition,
            RuntimeError::WaitTimedOut { .. } => Code::DeadlineExceeded,
            RuntimeError::Unavailable { .. } => Code::Unavailable,
            RuntimeError::Unauthenticated { .. } => Code::Unauthenticated,
            RuntimeError::PermissionDenied { .. } | RuntimeError::Denied(_) => Code::PermissionDenied,
            RuntimeError::Rejected { .. } => Code::InvalidArgument,
            RuntimeError::Conflict { .. } => Code::Aborted,
            RuntimeError::Internal(_) => {
                tracing::error!(%error, "request failed unexpectedly");
                return Status::internal("internal error; the server's log has the details");
            }
        };
        Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretError;
    use crate::spec::SecretReference;

    #[track_caller]
    fn check(error: RuntimeError, code: Code, message: &str) {
        let status = Status::from(error);
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(message), "`{}` lacks `{message}`", status.message());
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
            RuntimeError::WaitTimedOut {
                name: "x".into(),
                status: "STARTING".into(),
                waited: std::time::Duration::from_secs(1),
            },
            Code::DeadlineExceeded,
            "still STARTING",
        );
        check(RuntimeError::Internal("boom at 0xdead".into()), Code::Internal, "server's log");
        assert!(!Status::from(RuntimeError::Internal("boom".into())).message().contains("boom"));
    }
}
