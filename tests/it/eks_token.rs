//! Our EKS bearer token against botocore's (`aws eks get-token`), for fixed keys, cluster and
//! clock: they must be equal, byte for byte. botocore runs from the test venv.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use hydroplane::aws::token::eks_token;

use crate::common::moto;

#[track_caller]
fn check(session: Option<&str>, region: &str, cluster: &str, seconds: u64, timestamp: &str) {
    let (key, secret) = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    let credentials = Credentials::new(key, secret, session.map(str::to_owned), None, "test");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    let ours = eks_token(&credentials, region, cluster, now).expect("our token");
    let keys = moto::Credentials {
        session_token: session.map(str::to_owned),
        ..moto::Credentials::keys(key, secret)
    };
    let theirs = moto::botocore_token(&keys, region, cluster, timestamp);
    assert_eq!(ours.as_str(), theirs, "tokens differ for {region} {cluster} session={session:?}");
}

#[test]
fn our_token_equals_botocores_byte_for_byte() {
    check(None, "us-west-2", "hydro-eks", 1_735_787_045, "2025-01-02T03:04:05Z");
    check(None, "eu-central-1", "my-cool-cluster", 1_764_028_800, "2025-11-25T00:00:00Z");
    check(
        Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLXdlc3QtMiJHMEUCIQD+session/token=="),
        "us-west-2",
        "hydro-eks",
        1_735_787_045,
        "2025-01-02T03:04:05Z",
    );
}
