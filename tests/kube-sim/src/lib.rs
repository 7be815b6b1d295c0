//! kube-sim: a Kubernetes API simulator for Hydroplane's integration tests.
//!
//! # Layout
//! - [`config`]: command-line flags.
//! - [`server`]: the listener (HTTP or HTTPS), connection handling and refusing connections.
//! - [`api`]: routing of Kubernetes REST paths to store operations; [`watch`] streams events;
//!   [`discovery`] answers `/api`, `/apis`, `/version` and OpenAPI; [`table`] renders kubectl tables;
//!   [`logs`] serves `pods/{name}/log` from lines tests append.
//! - [`store`]: objects, the global resourceVersion, event history, watch subscriptions.
//!   [`admission`] applies defaults and allocations ([`alloc`]) as objects are written;
//!   [`validation`] checks them; [`patch`] and [`selector`] implement those API features.
//! - [`controllers`]: the simulated kubelet, garbage collector and Deployment controller.
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
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch;
