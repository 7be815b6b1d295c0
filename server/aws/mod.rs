//! AWS: the SDK configuration, the credentials Hydroplane authenticates with (static keys from the
//! secret store, optionally used to assume a role whose temporary credentials are renewed ahead of
//! expiry), and the EKS bearer token made from them.

pub mod cluster;
pub mod credentials;
pub mod token;
