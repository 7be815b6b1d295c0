//! Who may call the server, and how much: TLS on the wire, bearer tokens with scopes and group
//! restrictions, and the listeners that decide what is safe to expose.
//!
//! Authentication and scope checks happen in one tower layer ([`crate::grpc::guard`]); it hands
//! the handlers a [`access::Caller`] (a token's name, scopes and groups), never the token itself,
//! and runtimes see neither.

pub mod access;
pub mod tls;
pub mod tokens;
