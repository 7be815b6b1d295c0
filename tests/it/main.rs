//! The integration tests, one test binary (`cargo nextest run` shows them as
//! `hydroplane::it <module>::<test>`): each module starts the real binaries (`hydroplane`,
//! `hpctl`, `local-secret-store`, `kube-sim`, moto) on free loopback ports, and `common` holds
//! the helpers they share. One binary links the library (and the AWS SDK) once, not once per
//! file.

// Blocking test code that waits on real processes measures real time with the std clock.
#![allow(clippy::disallowed_types)]

mod common;

mod config_errors;
mod deploy;
mod doc_links;
mod docker_restarts;
mod docker_runtime;
mod eks_guide;
mod eks_identity;
mod eks_token;
mod fuzz;
mod harness;
mod hostile_network;
mod hpctl;
mod hpctl_hardening;
mod hpctl_labels;
mod hpctl_logs;
mod hpctl_output;
mod hpctl_ready;
mod kube_controllers;
mod kube_exposure;
mod kube_faults;
mod kube_history;
mod kube_logs;
mod kube_node_ports;
mod kube_repair;
mod kube_runtime;
mod kube_throttle;
mod labels;
mod list_watch;
mod local_containment;
mod local_lifecycle;
mod local_logs;
mod local_runtime;
mod metrics;
mod module_graph;
mod moto_launcher;
mod process_tree;
mod python_client;
mod readme_blocks;
mod seams;
mod secret_store;
mod secrets_server;
mod secure_api;
mod telemetry;
mod tls_setup;
