//! The AWS fixtures of the EKS runtime tests work: `tests/aws/moto_launcher.py` (moto with our
//! fixes for presigned STS, EKS endpoint/CA, bad keys, missing roles and call counters) and
//! `tests/aws/botocore_token.py` (the token `aws eks get-token` makes, with a frozen clock).
//! The EKS runtime's own tests build on both, so a regression must show up here first.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

const REGION: &str = "us-west-2";
const CLUSTER: &str = "hydro-eks";
const EKS_ENDPOINT: &str = "https://127.0.0.1:6443";
const TIMESTAMP: &str = "2025-01-02T03:04:05Z";
const TOKEN_PREFIX: &str = "k8s-aws-v1.";
const USER_ARN: &str = "arn:aws:iam::123456789012:user/hydroplane";
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBhydroplanetestca\n-----END CERTIFICATE-----\n";

fn script(name: &str) -> PathBuf {
    common::repo_root().join("tests/aws").join(name)
}

fn run_python(args: &[String]) -> Output {
    let output =
        Command::new(common::test_python()).args(args).stdin(Stdio::null()).output().expect("run python");
    assert!(
        output.status.success(),
        "python {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// AWS credentials, as the launcher prints them or AssumeRole returns them.
#[derive(Clone, Debug)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl Credentials {
    fn arguments(&self) -> Vec<String> {
        let mut arguments = vec![
            "--access-key-id".to_owned(),
            self.access_key_id.clone(),
            "--secret-access-key".to_owned(),
            self.secret_access_key.clone(),
        ];
        if let Some(token) = &self.session_token {
            arguments.extend(["--session-token".to_owned(), token.clone()]);
        }
        arguments
    }
}

/// `botocore_token.py`'s token for these credentials, the test's cluster and its fixed clock.
fn botocore_token(credentials: &Credentials, region: &str) -> String {
    let mut args = vec![script("botocore_token.py").display().to_string()];
    args.extend(credentials.arguments());
    args.extend(["--region", region, "--cluster-name", CLUSTER, "--timestamp", TIMESTAMP].map(str::to_owned));
    let output = run_python(&args);
    let stdout = String::from_utf8(output.stdout).expect("utf-8 token");
    assert!(stdout.ends_with('\n') && stdout.lines().count() == 1, "not one line: {stdout:?}");
    stdout.trim_end().to_owned()
}

fn presigned_url(token: &str) -> String {
    let encoded = token.strip_prefix(TOKEN_PREFIX).unwrap_or_else(|| panic!("no {TOKEN_PREFIX} in {token}"));
    assert!(!encoded.contains('='), "the token keeps base64 padding: {token}");
    String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).expect("URL-safe base64 without padding"))
        .expect("utf-8 URL")
}

/// A running `moto_launcher.py`, killed when dropped (also when the test panics).
struct Launcher {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    url: String,
    address: String,
    user: Credentials,
    role_arn: String,
    _ca_directory: tempfile::TempDir,
}

impl Launcher {
    fn start() -> Launcher {
        let ca_directory = tempfile::tempdir().expect("tempdir");
        let ca_file = ca_directory.path().join("ca.pem");
        std::fs::write(&ca_file, CA_PEM).expect("write CA");
        let mut child = Command::new(common::test_python())
            .arg(script("moto_launcher.py"))
            .args(["--region", REGION, "--eks-endpoint", EKS_ENDPOINT, "--eks-ca-file"])
            .arg(&ca_file)
            // The launcher ends when its stdin closes: the pipe ties its life to ours.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_launcher.py");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        // An undrained stderr pipe would fill up and stall the launcher.
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read @ 1..) = pipe.read(&mut buffer) {
                sink.lock().expect("lock").push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        let stdin = child.stdin.take();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first_line).expect("read stdout");
        let mut launcher = Launcher {
            child,
            stdin,
            stderr,
            url: String::new(),
            address: String::new(),
            user: Credentials {
                access_key_id: String::new(),
                secret_access_key: String::new(),
                session_token: None,
            },
            role_arn: String::new(),
            _ca_directory: ca_directory,
        };
        let Ok(started) = serde_json::from_str::<Value>(&first_line) else {
            let status = launcher.child.wait();
            panic!("the launcher did not start ({status:?}): {first_line:?}\n{}", launcher.stderr());
        };
        let field = |name: &str| {
            started[name].as_str().unwrap_or_else(|| panic!("no {name} in {started}")).to_owned()
        };
        launcher.url = field("url");
        launcher.address = launcher.url.strip_prefix("http://").expect("an http URL").to_owned();
        assert!(launcher.address.starts_with("127.0.0.1:"), "not on loopback: {}", launcher.url);
        launcher.user = Credentials {
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            session_token: None,
        };
        launcher.role_arn = field("role_arn");
        assert_eq!(field("account"), "123456789012");
        assert_eq!(launcher.role_arn, "arn:aws:iam::123456789012:role/EKSAdmin");
        launcher
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// One boto3 call through `aws_call.py`: `{"ok": true, "response": ..}` or the error's fields.
    fn call(&self, credentials: &Credentials, service: &str, operation: &str, params: Value) -> Value {
        let mut args = vec![
            script("aws_call.py").display().to_string(),
            "--endpoint".to_owned(),
            self.url.clone(),
            "--region".to_owned(),
            REGION.to_owned(),
        ];
        args.extend(credentials.arguments());
        args.extend([service.to_owned(), operation.to_owned(), params.to_string()]);
        let output = run_python(&args);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!("aws_call.py printed no JSON ({error}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    /// A raw HTTP request to the launcher, as the Kubernetes simulator forwards a token:
    /// the presigned URL's path and query, sent to the launcher's address (so with its Host).
    fn http(&self, method: &str, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).expect("connect to the launcher");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        // HTTP/1.0 so the answer is never chunked and ends with the connection.
        let mut request = format!("{method} {path_and_query} HTTP/1.0\r\nHost: {}\r\n", self.address);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("Content-Length: 0\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read the answer");
        let (head, body) =
            response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {response}"));
        let status =
            head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("a status code");
        (status, body.to_owned())
    }

    /// Sends a token's presigned URL to the launcher with the cluster header, as STS receives it.
    fn send_token(&self, token: &str, cluster_header: Option<&str>) -> (u16, String) {
        let url = presigned_url(token);
        let path_and_query = url
            .strip_prefix(&format!("https://sts.{REGION}.amazonaws.com"))
            .unwrap_or_else(|| panic!("not the regional STS endpoint: {url}"));
        let headers: Vec<(&str, &str)> =
            cluster_header.map(|cluster| ("x-k8s-aws-id", cluster)).into_iter().collect();
        self.http("GET", path_and_query, &headers)
    }

    fn stats(&self) -> Value {
        let (status, body) = self.http("GET", "/_launcher/stats", &[]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// Closes the launcher's stdin, as a dropped parent does, and waits for it to exit.
    fn close_stdin_and_wait(&mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the launcher outlived its stdin:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut launcher = Launcher::start();
    let user = launcher.user.clone();
    let context = || launcher.stderr();
    assert_eq!(launcher.stats(), json!({"eks": {}, "sts": {}, "sts_presigned": {}}), "{}", context());

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
    let (status, body) = launcher.send_token(&token, Some(CLUSTER));
    assert_eq!(status, 200, "{body}\n{}", context());
    assert!(body.contains("<GetCallerIdentityResult>"), "not a GetCallerIdentity answer: {body}");
    assert!(body.contains(&format!("<Arn>{USER_ARN}</Arn>")), "{body}");

    // Refusals of presigned requests, as real STS: unknown key, wrong secret, header missing or changed.
    let stranger = Credentials {
        access_key_id: "AKIAIOSFODNN7UNKNOWN".to_owned(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
        session_token: None,
    };
    let (status, body) = launcher.send_token(&botocore_token(&stranger, REGION), Some(CLUSTER));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>InvalidClientTokenId</Code>"), "{body}");
    let wrong_secret = Credentials { secret_access_key: stranger.secret_access_key.clone(), ..user.clone() };
    let (status, body) = launcher.send_token(&botocore_token(&wrong_secret, REGION), Some(CLUSTER));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>SignatureDoesNotMatch</Code>"), "{body}");
    let (status, body) = launcher.send_token(&token, None);
    assert_eq!(status, 403, "a signed header went missing, yet: {body}");
    let (status, body) = launcher.send_token(&token, Some("another-cluster"));
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
    let (status, body) = launcher.send_token(&botocore_token(&role, REGION), Some(CLUSTER));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("<Arn>{assumed_arn}</Arn>")), "{body}");
    let forged = Credentials { session_token: Some("forged".to_owned()), ..role.clone() };
    let (status, body) = launcher.send_token(&botocore_token(&forged, REGION), Some(CLUSTER));
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
    });
    assert_eq!(launcher.stats(), expected, "{}", context());
    let (status, _) = launcher.http("POST", "/_launcher/reset-stats", &[]);
    assert_eq!(status, 200);
    assert_eq!(launcher.stats(), json!({"eks": {}, "sts": {}, "sts_presigned": {}}));

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
