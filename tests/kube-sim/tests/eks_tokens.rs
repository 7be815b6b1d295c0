//! EKS token review end to end: kubectl with a `k8s-aws-v1.` token made the way
//! `aws eks get-token` makes it is let in; one for another cluster or key is refused with 401.

mod common;

use common::Simulator;
use kube_sim::auth::eks::presign_token;

const KEY_ID: &str = "AKIDKUBESIM";
const SECRET: &str = "kube-sim/secret+key";

#[test]
fn kubectl_with_eks_tokens() {
    let key = format!("{KEY_ID}:{SECRET}");
    // kubectl sends credentials only over TLS (client-go drops them for plain http).
    let simulator = Simulator::start(&[
        "--tls",
        "--eks-cluster-name",
        "hydro",
        "--eks-region",
        "eu-west-1",
        "--eks-static-key",
        &key,
    ]);
    let now = jiff::Timestamp::now();

    let good = presign_token(KEY_ID, SECRET, None, "eu-west-1", "hydro", now);
    let nodes = simulator.kubectl_ok(&["--token", &good, "get", "nodes", "-o", "name"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");

    for bad in [
        presign_token(KEY_ID, SECRET, None, "eu-west-1", "other-cluster", now),
        presign_token(KEY_ID, "wrong-secret", None, "eu-west-1", "hydro", now),
        presign_token("AKIDUNKNOWN", SECRET, None, "eu-west-1", "hydro", now),
        presign_token(KEY_ID, SECRET, None, "us-east-1", "hydro", now),
        presign_token(KEY_ID, SECRET, None, "eu-west-1", "hydro", now - jiff::SignedDuration::from_mins(16)),
        "plain-token".to_string(),
    ] {
        let error = simulator.kubectl_err(&["--token", &bad, "get", "nodes"]);
        assert!(error.contains("provide credentials") || error.contains("Unauthorized"), "{error}");
    }
}
