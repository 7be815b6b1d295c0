//! The server's AWS identity in the cluster, with no `credentials` in its settings: EKS Pod
//! Identity (a stand-in container credentials endpoint, on loopback, in this test) and IRSA (a
//! web identity token file exchanged at moto's STS through `runtime.sts_endpoint`). Either way
//! the credentials must work (GetCallerIdentity at start-up; the simulator, in EKS token-review
//! mode, replays every presigned token against moto's STS) and be renewed as they expire, with
//! the rotated token file.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::moto::{Credentials, Moto};
use crate::common::{KubeSim, Server, free_port, hpctl, wait_until};

const REGION: &str = "us-west-2";
const CLUSTER: &str = "hydro-eks";

/// The simulator in EKS token-review mode (letting in the role EKSAdmin) and moto, with the
/// cluster created, and a directory for the settings and token files.
struct World {
    _sim: KubeSim,
    aws: Moto,
    directory: tempfile::TempDir,
}

impl World {
    fn start(moto_flags: &[&str]) -> World {
        let aws_port = free_port();
        let directory = tempfile::tempdir().expect("tempdir");
        let ca_file = directory.path().join("ca.pem");
        let sim = KubeSim::start(&[
            "--tls",
            "--token",
            "kubectl-admin-token",
            "--ca-out",
            ca_file.to_str().expect("path"),
            "--eks-cluster-name",
            CLUSTER,
            "--eks-region",
            REGION,
            "--eks-sts-endpoint",
            &format!("http://127.0.0.1:{aws_port}"),
            "--eks-allowed-arn",
            "arn:aws:iam::123456789012:role/EKSAdmin",
        ]);
        let aws = Moto::start_with(aws_port, REGION, &sim.url, &ca_file, moto_flags);
        let created = aws.call(
            &aws.user,
            "eks",
            "create_cluster",
            serde_json::json!({"name": CLUSTER, "roleArn": "arn:aws:iam::123456789012:role/eks-service",
                "resourcesVpcConfig": {"subnetIds": ["subnet-1"]}}),
        );
        assert_eq!(created["ok"], true, "{created}");
        World { _sim: sim, aws, directory }
    }

    /// Settings with no `credentials` and no secret store: the identity comes from the
    /// environment. Tokens are made afresh every second.
    fn settings(&self) -> PathBuf {
        let path = self.directory.path().join("eks.yml");
        let yaml = format!(
            "secret_store:\n  secret_store_type: none\nruntime:\n  runtime_type: eks\n  cluster_name: {CLUSTER}\n  \
             region: {REGION}\n  sts_endpoint: {url}\n  eks_endpoint: {url}\n  token_refresh_seconds: 1\n",
            url = self.aws.url
        );
        std::fs::write(&path, yaml).expect("write eks.yml");
        path
    }

    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.directory.path().join(name);
        replace_file(&path, token);
        path
    }

    fn stats(&self, group: &str, key: &str) -> u64 {
        self.aws.stats()[group][key].as_u64().unwrap_or(0)
    }
}

/// Replaces a file as the kubelet does: a new file renamed over the old one.
fn replace_file(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

/// A Start, List and Stop through hpctl: each goes to the cluster with a presigned token.
#[track_caller]
fn round_trip(server: &Server, name: &str) {
    let spec = serde_json::json!({"process_name": name, "container": {"image_uri": "nginx"}});
    let file = std::env::temp_dir().join(format!("eks-identity-{}-{name}.json", std::process::id()));
    std::fs::write(&file, spec.to_string()).expect("write spec");
    for args in [vec!["start", file.to_str().expect("path")], vec!["list"], vec!["stop", name]] {
        let output = hpctl(server, &args);
        assert!(
            output.status.success(),
            "hpctl {args:?}: {}\nserver:\n{}",
            String::from_utf8_lossy(&output.stderr),
            server.stderr()
        );
    }
    let _ = std::fs::remove_file(file);
}

// === EKS Pod Identity ===

/// A stand-in for the EKS Pod Identity agent: answers `GET` with the next credentials of its
/// list, expiring `lifetime` from now, when the Authorization header is one of the accepted
/// tokens (401 otherwise). Counts what it served and refused.
struct PodIdentityAgent {
    url: String,
    accepted: Arc<Mutex<Vec<String>>>,
    /// The Authorization value of each call served, in order.
    served: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    address: String,
}

impl PodIdentityAgent {
    fn start(credentials: Vec<Credentials>, lifetime: Duration, token: &str) -> PodIdentityAgent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let address = listener.local_addr().expect("address").to_string();
        let agent = PodIdentityAgent {
            url: format!("http://{address}/v1/credentials"),
            accepted: Arc::new(Mutex::new(vec![token.to_owned()])),
            served: Arc::default(),
            refused: Arc::default(),
            stop: Arc::default(),
            address,
        };
        let (accepted, served, refused, stop) =
            (agent.accepted.clone(), agent.served.clone(), agent.refused.clone(), agent.stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let authorization = read_authorization(&stream);
                let ok = authorization
                    .as_ref()
                    .is_some_and(|value| accepted.lock().expect("lock").contains(value));
                let (status, body) = if ok {
                    let mut served = served.lock().expect("lock");
                    let keys = &credentials[served.len() % credentials.len()];
                    served.push(authorization.unwrap_or_default());
                    let expiration = aws_smithy_types::DateTime::from(SystemTime::now() + lifetime)
                        .fmt(aws_smithy_types::date_time::Format::DateTime)
                        .expect("a date");
                    let body = serde_json::json!({
                        "AccessKeyId": keys.access_key_id,
                        "SecretAccessKey": keys.secret_access_key,
                        "Token": keys.session_token,
                        "AccountId": "123456789012",
                        "Expiration": expiration,
                    });
                    ("200 OK", body.to_string())
                } else {
                    refused.fetch_add(1, Ordering::SeqCst);
                    ("401 Unauthorized", r#"{"Code":"AccessDenied","Message":"bad token"}"#.to_owned())
                };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        agent
    }

    fn served(&self) -> Vec<String> {
        self.served.lock().expect("lock").clone()
    }
}

impl Drop for PodIdentityAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.address);
    }
}

/// The Authorization header of the HTTP request on `stream` (headers only: a GET has no body).
fn read_authorization(stream: &TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" {
            return authorization;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
}

/// Temporary credentials of the role EKSAdmin from moto, as the Pod Identity agent hands out.
fn role_credentials(aws: &Moto, session: &str) -> Credentials {
    let assumed = aws.call(
        &aws.user,
        "sts",
        "assume_role",
        serde_json::json!({"RoleArn": aws.role_arn, "RoleSessionName": session}),
    );
    let keys = &assumed["response"]["Credentials"];
    let field = |name: &str| keys[name].as_str().unwrap_or_else(|| panic!("no {name}: {assumed}")).to_owned();
    Credentials {
        access_key_id: field("AccessKeyId"),
        secret_access_key: field("SecretAccessKey"),
        session_token: Some(field("SessionToken")),
    }
}

fn pod_identity_environment<'a>(
    agent: &'a PodIdentityAgent,
    token_file: &'a Path,
) -> [(&'a str, &'a str); 2] {
    [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file.to_str().expect("path")),
    ]
}

#[test]
fn pod_identity_credentials_work_and_are_renewed_as_they_expire_with_the_rotated_token() {
    let world = World::start(&[]);
    let credentials =
        vec![role_credentials(&world.aws, "pod-identity-1"), role_credentials(&world.aws, "pod-identity-2")];
    // Credentials that expire 3 s after they are served: renewed half-way, every 1.5 s.
    let agent = PodIdentityAgent::start(credentials.clone(), Duration::from_secs(3), "pod-token-1");
    let token_file = world.token_file("eks-pod-identity-token", "pod-token-1");
    let settings = world.settings();
    let server = Server::start_with_env(
        &["-c", settings.to_str().expect("path")],
        &pod_identity_environment(&agent, &token_file),
    );
    let logs = server.stderr();
    assert!(logs.contains("EKS Pod Identity (the container credentials endpoint"), "{logs}");
    // GetCallerIdentity at start-up, through moto, with the served credentials.
    assert!(
        logs.contains("authenticated with AWS") && logs.contains("assumed-role/EKSAdmin/pod-identity-"),
        "{logs}"
    );
    round_trip(&server, "first");

    // The kubelet rotates the token; the agent takes the new one only (both while it is swapped).
    agent.accepted.lock().expect("lock").push("pod-token-2".to_owned());
    replace_file(&token_file, "pod-token-2");
    *agent.accepted.lock().expect("lock") = vec!["pod-token-2".to_owned()];
    let reviewed_before = world.stats("sts_presigned", "GetCallerIdentity");
    wait_until(
        "the server renewed its credentials twice with the rotated token",
        Duration::from_secs(20),
        || agent.served().iter().filter(|token| *token == "pod-token-2").count() >= 2,
    );
    round_trip(&server, "second");
    let served = agent.served();
    assert!(served.len() >= 3, "renewed as they expired: {served:?}\n{}", server.stderr());
    assert_eq!(agent.refused.load(Ordering::SeqCst), 0, "never a stale token");
    // Every renewal's credentials signed tokens the cluster accepted (both sets were served).
    assert!(world.stats("sts_presigned", "GetCallerIdentity") > reviewed_before);
    let everything = format!("{}{}", server.stderr(), server.stdout());
    for secret in ["pod-token-1", "pod-token-2"]
        .into_iter()
        .chain(credentials.iter().map(|keys| keys.secret_access_key.as_str()))
    {
        assert!(!everything.contains(secret), "{secret} in the server's output:\n{everything}");
    }
}

#[test]
fn a_pod_identity_endpoint_that_refuses_the_token_is_named_at_start_up() {
    let world = World::start(&[]);
    let credentials = vec![role_credentials(&world.aws, "pod-identity")];
    let agent = PodIdentityAgent::start(credentials, Duration::from_secs(600), "the-right-token");
    let token_file = world.token_file("eks-pod-identity-token", "a-wrong-token");
    let settings = world.settings();
    // The server as the Pod starts it: it must end at start-up, naming what is wrong.
    let run_server = || {
        Command::new(env!("CARGO_BIN_EXE_hydroplane"))
            .args(["-p", "0", "-c", settings.to_str().expect("path")])
            .envs(pod_identity_environment(&agent, &token_file))
            .stdin(Stdio::null())
            .output()
            .expect("run hydroplane")
    };
    let output = run_server();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("the Pod Identity endpoint {} gave no credentials", agent.url)),
        "{stderr}"
    );
    assert!(!stderr.contains("a-wrong-token") && !stderr.contains("the-right-token"), "{stderr}");
    assert_eq!(agent.refused.load(Ordering::SeqCst), 1, "asked once, not in a loop");

    // A token file with a line break cannot be a header: refused by name, the token unsaid.
    replace_file(&token_file, "the-right-token\n");
    let output = run_server();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be sent as a header"), "{stderr}");
    assert!(!stderr.contains("the-right-token"), "{stderr}");
}

// === IRSA ===

#[test]
fn irsa_credentials_come_through_the_configured_sts_endpoint_and_follow_the_rotated_token() {
    // moto's web identity credentials last 4 s: renewed half-way, every 2 s.
    let world = World::start(&["--web-identity-duration-seconds", "4"]);
    let token_file = world.token_file("irsa-token", "irsa-token-1");
    let settings = world.settings();
    let server = Server::start_with_env(
        &["-c", settings.to_str().expect("path")],
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().expect("path")),
            ("AWS_ROLE_ARN", world.aws.role_arn.as_str()),
        ],
    );
    let logs = server.stderr();
    assert!(logs.contains("IRSA (the web identity token"), "{logs}");
    // GetCallerIdentity through moto with the exchanged credentials: the role's session.
    assert!(logs.contains("arn:aws:sts::123456789012:assumed-role/EKSAdmin/hydroplane"), "{logs}");
    assert!(world.stats("web_identity_tokens", "irsa-token-1") >= 1, "{}", world.aws.stats());
    round_trip(&server, "first");

    replace_file(&token_file, "irsa-token-2");
    wait_until("two renewals with the rotated token", Duration::from_secs(20), || {
        world.stats("web_identity_tokens", "irsa-token-2") >= 2
    });
    round_trip(&server, "second");
    let stats: Value = world.aws.stats();
    assert!(stats["sts"]["AssumeRoleWithWebIdentity"].as_u64() >= Some(3), "{stats}");
    let everything = format!("{}{}", server.stderr(), server.stdout());
    assert!(!everything.contains("irsa-token-1") && !everything.contains("irsa-token-2"), "{everything}");
}

#[test]
fn an_irsa_role_sts_refuses_is_named_at_start_up() {
    let world = World::start(&[]);
    let token_file = world.token_file("irsa-token", "irsa-token");
    let settings = world.settings();
    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-p", "0", "-c", settings.to_str().expect("path")])
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file)
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/NoSuchRole")
        .stdin(Stdio::null())
        .output()
        .expect("run hydroplane");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("STS refused AssumeRoleWithWebIdentity of arn:aws:iam::123456789012:role/NoSuchRole")
            && stderr.contains("AccessDenied"),
        "{stderr}"
    );
    // The exchange went to the configured endpoint (moto), not to AWS.
    assert_eq!(world.stats("sts", "AssumeRoleWithWebIdentity"), 1, "{}", world.aws.stats());
}
