//! What every listener shares below the gRPC layer: connection limits and admission, with the
//! [`connections::Peer`] a connection came from ([`connections`]), and TLS: certificates, their
//! reload, and the handshake ([`tls`]). The gRPC service and the metrics listener both build
//! on it; it knows neither.

pub mod connections;
pub mod tls;
