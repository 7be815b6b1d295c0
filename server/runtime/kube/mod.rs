//! The Kubernetes runtime: each process is one Pod and one Service (see [`manifests`]); List and
//! Watch are served from an index of the cluster fed by watches.

pub mod manifests;
pub mod status;
