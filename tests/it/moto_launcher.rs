//! The AWS fixtures of the EKS runtime tests work: `tests/aws/moto_launcher.py` (moto with our
//! fixes for presigned STS, EKS endpoint/CA, bad keys, missing roles and call counters) and
//! `tests/aws/botocore_token.py` (the token `aws eks get-token` makes, with a frozen clock).
//! The EKS runtime's own tests build on both, so a regression must show up here first.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::common::moto::{self, Credentials, Moto};

const REGION: &str = "us-west-2";
const CLUSTER: &str = "hydro-eks";
const EKS_ENDPOINT: &str = "https://127.0.0.1:6443";
const TIMESTAMP: &str = "2025-01-02T03:04:05Z";
const TOKEN_PREFIX: &str = "k8s-aws-v1.";
const USER_ARN: &str = "arn:aws:iam::123456789012:user/hydroplane";
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBhydroplanetestca\n-----END CERTIFICATE-----\n";

/// `botocore_token.py`'s token for these credentials, the test's cluster and its fixed clock.
fn botocore_token(credentials: &Credentials, region: &str) -> String {
    moto::botocore_token(credentials, region, CLUSTER, TIMESTAMP)
}

fn presigned_url(token: &str) -> String {
    let encoded = token.strip_prefix(TOKEN_PREFIX).unwrap_or_else(|| panic!("no {TOKEN_PREFIX} in {token}"));
    assert!(!encoded.contains('='), "the token keeps base64 padding: {token}");
    String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).expect("URL-safe base64 without padding"))
        .expect("utf-8 URL")
}

/// The launcher with the test's EKS endpoint and CA: (the launcher, the CA's directory).
fn start_launcher() -> (Moto, tempfile::TempDir) {
    let ca_directory = tempfile::tempdir().expect("tempdir");
    let ca_file = ca_directory.path().join("ca.pem");
    std::fs::write(&ca_file, CA_PEM).expect("write CA");
    let launcher = Moto::start(0, REGION, EKS_ENDPOINT, &ca_file);
    assert_eq!(launcher.account, "123456789012");
    assert_eq!(launcher.role_arn, "arn:aws:iam::123456789012:role/EKSAdmin");
    (launcher, ca_directory)
}

/// Sends a token's presigned URL to the launcher with the cluster header, as STS receives it.
fn send_token(launcher: &Moto, token: &str, cluster_header: Option<&str>) -> (u16, String) {
    let url = presigned_url(token);
    let path_and_query = url
        .strip_prefix(&format!("https://sts.{REGION}.amazonaws.com"))
        .unwrap_or_else(|| panic!("not the regional STS endpoint: {url}"));
    let headers: Vec<(&str, &str)> =
        cluster_header.map(|cluster| ("x-k8s-aws-id", cluster)).into_iter().collect();
    launcher.http("GET", path_and_query, &headers)
}

fn error_code(outcome: &Value) -> &str {
    assert_eq!(outcome["ok"], false, "expected a refusal: {outcome}");
    outcome["code"].as_str().unwrap_or_default()
}

fn response<'a>(outcome: &'a Value, what: &str) -> &'a Value {
    assert_eq!(outcome["ok"], true, "{what} failed: {outcome}");
    &outcome["response"]
}

#[test]
fn launcher_emulates_sts_and_eks_for_the_eks_runtime() {
    let (mut launcher, _ca_directory) = start_launcher();
    let user = launcher.user.clone();
    let context = || launcher.stderr();
    assert_eq!(
        launcher.stats(),
        json!({"eks": {}, "sts": {}, "sts_presigned": {}, "web_identity_tokens": {}}),
        "{}",
        context()
    );

    // EKS: the cluster reports the endpoint and CA given on the command line, CA as base64 of the PEM.
    let vpc = json!({"subnetIds": ["subnet-0123"], "securityGroupIds": ["sg-0123"]});
    let create = json!({"name": CLUSTER, "roleArn": "arn:aws:iam::123456789012:role/eks-cluster", "resourcesVpcConfig": vpc});
    let created = launcher.call(&user, "eks", "create_cluster", create);
    assert_eq!(response(&created, "CreateCluster")["cluster"]["endpoint"], EKS_ENDPOINT);
    let described = launcher.call(&user, "eks", "describe_cluster", json!({"name": CLUSTER}));
    let cluster = &response(&described, "DescribeCluster")["cluster"];
    assert_eq!(cluster["endpoint"], EKS_ENDPOINT);
    assert_eq!(cluster["status"], "ACTIVE");
    let ca = cluster["certificateAuthority"]["data"].as_str().expect("CA data");
    assert_eq!(STANDARD.decode(ca).expect("base64 CA"), CA_PEM.as_bytes());

    // A presigned GetCallerIdentity with the user's keys answers with the user's identity.
    let token = botocore_token(&user, REGION);
    let (status, body) = send_token(&launcher, &token, Some(CLUSTER));
    assert_eq!(status, 200, "{body}\n{}", context());
    assert!(body.contains("<GetCallerIdentityResult>"), "not a GetCallerIdentity answer: {body}");
    assert!(body.contains(&format!("<Arn>{USER_ARN}</Arn>")), "{body}");

    // Refusals of presigned requests, as real STS: unknown key, wrong secret, header missing or changed.
    let stranger = Credentials {
        access_key_id: "AKIAIOSFODNN7UNKNOWN".to_owned(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
        session_token: None,
    };
    let (status, body) = send_token(&launcher, &botocore_token(&stranger, REGION), Some(CLUSTER));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>InvalidClientTokenId</Code>"), "{body}");
    let wrong_secret = Credentials { secret_access_key: stranger.secret_access_key.clone(), ..user.clone() };
    let (status, body) = send_token(&launcher, &botocore_token(&wrong_secret, REGION), Some(CLUSTER));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>SignatureDoesNotMatch</Code>"), "{body}");
    let (status, body) = send_token(&launcher, &token, None);
    assert_eq!(status, 403, "a signed header went missing, yet: {body}");
    let (status, body) = send_token(&launcher, &token, Some("another-cluster"));
    assert_eq!(status, 403, "a signed header changed, yet: {body}");

    // Header-signed calls: moto's IAM authentication refuses unknown keys and wrong secrets.
    let refused = launcher.call(&stranger, "sts", "get_caller_identity", json!({}));
    assert_eq!(error_code(&refused), "InvalidClientTokenId");
    let refused = launcher.call(&wrong_secret, "eks", "describe_cluster", json!({"name": CLUSTER}));
    assert_eq!(refused["status"], 403, "{refused}");

    // AssumeRole of EKSAdmin gives credentials that work for EKS and for tokens.
    let assume = json!({"RoleArn": launcher.role_arn, "RoleSessionName": "hydroplane-test"});
    let assumed = launcher.call(&user, "sts", "assume_role", assume);
    let assumed = response(&assumed, "AssumeRole");
    let assumed_arn = "arn:aws:sts::123456789012:assumed-role/EKSAdmin/hydroplane-test";
    assert_eq!(assumed["AssumedRoleUser"]["Arn"], assumed_arn);
    let field = |name: &str| assumed["Credentials"][name].as_str().expect("credential field").to_owned();
    let role = Credentials {
        access_key_id: field("AccessKeyId"),
        secret_access_key: field("SecretAccessKey"),
        session_token: Some(field("SessionToken")),
    };
    let described = launcher.call(&role, "eks", "describe_cluster", json!({"name": CLUSTER}));
    assert_eq!(response(&described, "DescribeCluster as EKSAdmin")["cluster"]["endpoint"], EKS_ENDPOINT);
    let (status, body) = send_token(&launcher, &botocore_token(&role, REGION), Some(CLUSTER));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("<Arn>{assumed_arn}</Arn>")), "{body}");
    let forged = Credentials { session_token: Some("forged".to_owned()), ..role.clone() };
    let (status, body) = send_token(&launcher, &botocore_token(&forged, REGION), Some(CLUSTER));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>InvalidClientTokenId</Code>"), "{body}");

    // AssumeRole of a role that does not exist fails, naming it.
    let missing_role = "arn:aws:iam::123456789012:role/NoSuchRole";
    let refused = launcher.call(
        &user,
        "sts",
        "assume_role",
        json!({"RoleArn": missing_role, "RoleSessionName": "probe"}),
    );
    assert_eq!(error_code(&refused), "AccessDenied");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains(missing_role) && message.contains(USER_ARN), "{message}");

    // Every call counted, presigned ones also on their own; and the counters can be reset.
    let expected = json!({
        "eks": {"CreateCluster": 1, "DescribeCluster": 3},
        "sts": {"AssumeRole": 2, "GetCallerIdentity": 8},
        "sts_presigned": {"GetCallerIdentity": 7},
        "web_identity_tokens": {},
    });
    assert_eq!(launcher.stats(), expected, "{}", context());
    let (status, _) = launcher.http("POST", "/_launcher/reset-stats", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        launcher.stats(),
        json!({"eks": {}, "sts": {}, "sts_presigned": {}, "web_identity_tokens": {}})
    );

    let status = launcher.close_stdin_and_wait();
    assert!(
        status.success(),
        "the launcher ended with {status} when its stdin closed:\n{}",
        launcher.stderr()
    );
}

#[test]
fn botocore_token_is_stable_and_shaped_like_aws_eks_get_token() {
    let credentials = Credentials {
        access_key_id: "AKIDEXAMPLE".to_owned(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
        session_token: None,
    };
    let token = botocore_token(&credentials, REGION);
    assert_eq!(botocore_token(&credentials, REGION), token, "the same inputs gave another token");
    let url = presigned_url(&token);
    let (endpoint, query) = url.split_once('?').expect("a query");
    assert_eq!(endpoint, "https://sts.us-west-2.amazonaws.com/");
    let parameters: Vec<&str> = query.split('&').collect();
    // botocore's order; a Rust token equal to botocore's must reproduce it byte for byte.
    let names: Vec<&str> =
        parameters.iter().map(|parameter| parameter.split('=').next().unwrap_or("")).collect();
    assert_eq!(
        names,
        [
            "Action",
            "Version",
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature"
        ]
    );
    for expected in [
        "Action=GetCallerIdentity",
        "Version=2011-06-15",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Credential=AKIDEXAMPLE%2F20250102%2Fus-west-2%2Fsts%2Faws4_request",
        "X-Amz-Date=20250102T030405Z",
        "X-Amz-Expires=60",
        "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
    ] {
        assert!(parameters.contains(&expected), "{expected} missing from {url}");
    }
    // A golden value: botocore's signature for these inputs; it changes only if botocore's
    // signing does, and then the Rust token's tests must be looked at again.
    assert!(
        url.ends_with("X-Amz-Signature=4956a8a7f8dc12539e42e62dc5bf23a4258c4ab273ca3696c9e2400bdcfd25a9"),
        "{url}"
    );

    // A session token is signed too, as X-Amz-Security-Token before the signature.
    let with_session = Credentials { session_token: Some("session/token+=".to_owned()), ..credentials };
    let url = presigned_url(&botocore_token(&with_session, "eu-central-1"));
    assert!(url.starts_with("https://sts.eu-central-1.amazonaws.com/?Action=GetCallerIdentity&"), "{url}");
    assert!(url.contains("&X-Amz-Security-Token=session%2Ftoken%2B%3D&X-Amz-Signature="), "{url}");
}
