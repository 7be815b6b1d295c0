//! What Hydroplane's server, its clients (`hydroplane-client`, `hpctl`) and its Kubernetes
//! simulator share. Pure: no I/O, no runtime, no Kubernetes or AWS types.
//!
//! # Layout
//! - [`spec`]: the domain model (process specs and their validation, process info, status), and
//!   [`spec::labels`], label rules and the one parser of Kubernetes label selectors.
//! - [`proto`]: the code generated from `proto/hydroplane/v1` (messages, the client, the server
//!   trait) and its descriptor set; the contract is compiled here, once for the workspace.
//! - [`convert`]: wire types to domain types and back.
//!
//! Architecture invariant: [`spec`] knows no protobuf; only [`convert`] sees both sides.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod convert;
pub mod spec;

/// The code generated from `proto/hydroplane/v1`: the messages, the client
/// (`process_service_client`) and the server trait (`process_service_server`).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("hydroplane.v1");

    /// The encoded descriptor set of the contract, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hydroplane_descriptor");
}
