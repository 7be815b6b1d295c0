//! Hydroplane: a gRPC control plane that starts, stops, lists and watches named, containerised
//! processes on a runtime (host processes, Kubernetes, Amazon EKS).
//!
//! # Layout
//! - [`spec`]: the domain model (process specs, their validation, process info). No I/O.
//! - [`config`]: the YAML settings, in the Python Hydroplane's format.
//! - [`secrets`]: secret stores, which resolve the secret references of specs and settings.
//! - [`security`]: who may call: scopes and callers, the tokens file.
//! - [`transport`]: what every listener shares: connection limits, the peer, TLS.
//! - [`table`]: the revisioned process table List and Watch are served from.
//! - [`app`]: the operations (start with wait, stop, list, watch, describe, logs) for a caller,
//!   over a runtime.
//! - [`grpc`]: the tonic service, the guard layer every call passes, listeners and the audit log.
//! - [`runtime`]: the `Runtime` trait and the local, Kubernetes and EKS runtimes.
//! - [`aws`]: AWS credentials and the EKS token.
//! - [`culler`]: stops processes older than a maximum age.
//! - [`metrics`]: Prometheus metrics and their listener.
//! - [`telemetry`]: log formats, a span per gRPC call, the caller's trace, OTLP export.
//! - [`backoff`] and [`report`]: the one backoff, and how error chains are told to people.
//!
//! Architecture invariants: the domain model knows no I/O and no protobuf; runtimes never see
//! protobuf types; domain errors become gRPC status codes in exactly one place.

#![warn(missing_docs)]

pub mod app;
pub mod aws;
pub mod backoff;
pub mod config;
pub mod culler;
pub mod grpc;
pub mod metrics;
pub mod report;
pub mod runtime;
pub mod secrets;
pub mod security;
pub use hydroplane_core::spec;
pub mod table;
pub mod telemetry;
pub mod transport;

/// The code generated from `proto/hydroplane/v1` (messages, the server trait, the client and the
/// descriptor set for reflection), compiled once in `hydroplane-core`, so that the server and its
/// clients share one set of types.
pub use hydroplane_core::proto;
