//! Kubernetes `Status` errors: every failure the simulated API answers with, and its wire shape.
//!
//! Handlers return [`ApiError`]; [`ApiError::to_status`] is the one place that turns an error
//! into the JSON body a real API server would send, so clients (kubectl, kube-rs, the Python
//! client) can tell NotFound from Conflict exactly as they do against a cluster.

use serde_json::{Value, json};

use crate::resources::Kind;

/// One field-level problem, as listed in `details.causes` of a 422 Invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field path, e.g. `spec.ports[1].name`.
    pub field: String,
    /// What is wrong with it.
    pub problem: FieldProblem,
}

/// The kinds of field errors the API server reports, with their `reason` strings.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldProblem {
    /// `FieldValueInvalid`: the value breaks a rule.
    Invalid { value: Value, detail: String },
    /// `FieldValueRequired`: the field is missing.
    Required { detail: String },
    /// `FieldValueDuplicate`: the value repeats one given earlier.
    Duplicate { value: Value },
    /// `FieldValueNotSupported`: the value is not one of a fixed set.
    NotSupported { value: Value, supported: Vec<String> },
    /// `FieldValueForbidden`: the field may not be set or changed.
    Forbidden { detail: String },
}

impl FieldError {
    /// A `FieldValueInvalid` error.
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Invalid { value: value.into(), detail: detail.into() },
        }
    }

    /// A `FieldValueRequired` error.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), problem: FieldProblem::Required { detail: detail.into() } }
    }

    /// A `FieldValueDuplicate` error.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        FieldError { field: field.into(), problem: FieldProblem::Duplicate { value: value.into() } }
    }

    /// A `FieldValueNotSupported` error.
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&str]) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::NotSupported {
                value: value.into(),
                supported: supported.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    /// A `FieldValueForbidden` error.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { field: field.into(), problem: FieldProblem::Forbidden { detail: detail.into() } }
    }

    /// The `reason` string of the cause.
    pub fn reason(&self) -> &'static str {
        match self.problem {
            FieldProblem::Invalid { .. } => "FieldValueInvalid",
            FieldProblem::Required { .. } => "FieldValueRequired",
            FieldProblem::Duplicate { .. } => "FieldValueDuplicate",
            FieldProblem::NotSupported { .. } => "FieldValueNotSupported",
            FieldProblem::Forbidden { .. } => "FieldValueForbidden",
        }
    }

    /// The cause message without the field, as apimachinery's `field.Error.ErrorBody`.
    pub fn body(&self) -> String {
        fn with_detail(head: String, detail: &str) -> String {
            if detail.is_empty() { head } else { format!("{head}: {detail}") }
        }
        match &self.problem {
            FieldProblem::Invalid { value, detail } => with_detail(format!("Invalid value: {value}"), detail),
            FieldProblem::Required { detail } => with_detail("Required value".to_string(), detail),
            FieldProblem::Duplicate { value } => format!("Duplicate value: {value}"),
            FieldProblem::NotSupported { value, supported } => {
                let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
                format!("Unsupported value: {value}: supported values: {}", quoted.join(", "))
            }
            FieldProblem::Forbidden { detail } => with_detail("Forbidden".to_string(), detail),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Every error the simulated API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: the named object does not exist.
    #[error("{} \"{name}\" not found", kind.qualified_resource())]
    NotFound { kind: Kind, name: String },
    /// 404 for a path that names no resource at all.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 409: an object with that name exists.
    #[error("{} \"{name}\" already exists", kind.qualified_resource())]
    AlreadyExists { kind: Kind, name: String },
    /// 409: a stale `resourceVersion` or a failed precondition.
    #[error("Operation cannot be fulfilled on {} \"{name}\": {detail}", kind.qualified_resource())]
    Conflict { kind: Kind, name: String, detail: String },
    /// 422: the object breaks validation rules; the causes name the fields.
    #[error("{} \"{name}\" is invalid: {}", kind.info().kind, join_causes(causes))]
    Invalid { kind: Kind, name: String, causes: Vec<FieldError> },
    /// 400: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403: the caller may not do this.
    #[error("{message}")]
    Forbidden { kind: Option<Kind>, name: String, message: String },
    /// 405: the verb is not allowed on this path.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 410: the requested resourceVersion is older than the kept history.
    #[error("{0}")]
    Gone(String),
    /// 413: the body is too large.
    #[error("the request body is too large")]
    TooLarge,
    /// 415: a patch or body type we do not speak.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: injected throttling, to be retried after this many seconds (`Retry-After`).
    #[error("the server has received too many requests and has asked us to try again later")]
    TooManyRequests {
        /// The `Retry-After` header and `details.retryAfterSeconds`.
        retry_after_seconds: u64,
    },
    /// 500: an injected or unexpected server failure.
    #[error("{0}")]
    Internal(String),
    /// 503: injected unavailability.
    #[error("the server is currently unable to handle the request")]
    Unavailable,
}

fn join_causes(causes: &[FieldError]) -> String {
    if causes.len() == 1 {
        causes[0].to_string()
    } else {
        let parts: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
        format!("[{}]", parts.join(", "))
    }
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::MethodNotAllowed => 405,
            ApiError::Gone(_) => 410,
            ApiError::TooLarge => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable => 503,
        }
    }

    /// The `reason` field of the Status.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::Gone(_) => "Expired",
            ApiError::TooLarge => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
            ApiError::Unavailable => "ServiceUnavailable",
        }
    }

    /// The `Status` object a real API server sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound { kind, name }
            | ApiError::AlreadyExists { kind, name }
            | ApiError::Conflict { kind, name, .. } => Some(resource_details(*kind, name)),
            ApiError::Forbidden { kind: Some(kind), name, .. } => Some(resource_details(*kind, name)),
            ApiError::Invalid { kind, name, causes } => {
                let info = kind.info();
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason(), "message": c.body(), "field": c.field}))
                    .collect();
                let mut details = json!({"name": name, "kind": info.kind, "causes": causes});
                if !info.group.is_empty() {
                    details["group"] = json!(info.group);
                }
                Some(details)
            }
            ApiError::TooManyRequests { retry_after_seconds } => {
                Some(json!({"retryAfterSeconds": retry_after_seconds}))
            }
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

fn resource_details(kind: Kind, name: &str) -> Value {
    let info = kind.info();
    let mut details = json!({"name": name, "kind": info.plural});
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_the_field_in_causes() {
        let error = ApiError::Invalid {
            kind: Kind::Service,
            name: "web".into(),
            causes: vec![FieldError::required("spec.ports[1].name", "")],
        };
        let status = error.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.ports[1].name");
        assert_eq!(status["message"], "Service \"web\" is invalid: spec.ports[1].name: Required value");
    }

    #[test]
    fn not_found_uses_the_qualified_resource() {
        let status = ApiError::NotFound { kind: Kind::Deployment, name: "x".into() }.to_status();
        assert_eq!(status["message"], "deployments.apps \"x\" not found");
        assert_eq!(status["details"], json!({"name": "x", "kind": "deployments", "group": "apps"}));
    }
}
