//! kube-sim: a Kubernetes API simulator for Hydroplane's integration tests.
//!
//! # Layout
//! - [`config`]: command-line flags.
//! - [`server`]: the listener (HTTP or HTTPS), connection handling and refusing connections.
//! - [`api`]: the Kubernetes REST API, by job:
//!   - `api/mod.rs`: the shared state, responses, and routing (faults, authentication, then
//!     discovery or a resource path);
//!   - `api/request.rs`: request parsing (query parameters, the resource path, selectors, JSON
//!     bodies, continue tokens, the verb, delete options);
//!   - `api/resources.rs`: the handlers of resource paths (each verb, the `status`, `scale` and
//!     `log` subresources, dry runs, lists and tables);
//!   - `api/admin.rs`: the `/_sim/` endpoints (faults, logs, a container's exit and probe
//!     results, a node's readiness).
//!
//!   [`watch`] streams events; [`discovery`] answers `/api`, `/apis`, `/version` and OpenAPI;
//!   [`table`] renders kubectl tables; [`logs`] serves `pods/{name}/log` from lines tests append
//!   (and keeps the previous run of a container tests restart).
//! - [`store`]: the objects, by job:
//!   - `store/mod.rs`: the state (objects, the owner index, allocations) behind one lock, and
//!     the seed namespaces and nodes;
//!   - `store/reads.rs`: get, list pages, and the controllers' queries;
//!   - `store/writes.rs`: create, update, patch, and controllers' writes;
//!   - `store/deletes.rs`: delete, deletecollection, finalizers, and garbage collection by
//!     ownerReference;
//!   - `store/history.rs`: the global resourceVersion, the event history, and what watches
//!     replay or find expired (410 Gone).
//!
//!   [`admission`] applies defaults and allocations ([`alloc`]) as objects are written;
//!   [`validation`] checks them; [`patch`] and [`selector`] implement those API features.
//! - [`controllers`]: the simulated kubelet (`controllers/kubelet.rs`: container exits under
//!   the restart policy and back-off, probe results, pod deadlines), the garbage collector, the
//!   Deployment, StatefulSet (`statefulset.rs`) and Job (`job.rs`) controllers, and node loss
//!   (`nodes.rs`: pod GC, NotReady taints and eviction, the Eviction subresource).
//! - [`rbac`]: ServiceAccounts, Roles and bindings (stored and checked, not enforced).
//! - [`auth`]: bearer tokens (and the slot for EKS token review); [`faults`]: fault injection.
//! - [`tls`] and [`kubeconfig`]: the generated CA and the kubeconfig file.
//!
//! Architecture invariant: clients see the simulator only through the Kubernetes REST API and
//! the `/_sim/` admin endpoints; tests drive pod phases by writing `pods/{name}/status`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod alloc;
pub mod api;
pub mod auth;
pub mod config;
pub mod controllers;
pub mod discovery;
pub mod error;
pub mod faults;
pub mod kubeconfig;
pub mod logs;
pub mod meta;
pub mod patch;
pub mod rbac;
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch;
