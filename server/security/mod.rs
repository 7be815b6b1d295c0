//! Who may call the server: bearer tokens with scopes and group restrictions (TLS on the wire is
//! [`crate::transport::tls`]).
//!
//! Authentication and scope checks happen in one tower layer ([`crate::grpc::guard`]); it hands
//! the handlers a [`access::Caller`] (a token's name, scopes and groups), never the token itself,
//! and runtimes see neither.

pub mod access;
pub mod tokens;
