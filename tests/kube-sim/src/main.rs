//! A Kubernetes API simulator for Hydroplane's tests (under construction).

fn main() {}
