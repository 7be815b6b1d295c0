//! The EKS guide's quickstart, step by step, with the real binaries: AWS is moto behind our
//! launcher (`tests/aws/moto_launcher.py`), the cluster is the Kubernetes API simulator over TLS
//! in token-review mode, so every request is authenticated by a real presigned URL that the
//! simulator replays against moto's STS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::moto::Moto;
use crate::common::requests::{start_request, stop_process};
use crate::common::{KubeSim, Server, free_port, hpctl, local_secret_store, repo_root};

const PASSWORD: &str = "guide password 42";
const REGION: &str = "us-west-2";
const CLUSTER: &str = "hydro-eks";

/// The simulator in EKS token-review mode and moto, wired to each other, with the guide's
/// cluster created through the real EKS API.
struct World {
    sim: KubeSim,
    aws: Moto,
    home: tempfile::TempDir,
    ca_directory: tempfile::TempDir,
    transcript: String,
}

impl World {
    fn start() -> World {
        let aws_port = free_port();
        let ca_directory = tempfile::tempdir().expect("tempdir");
        let ca_file = ca_directory.path().join("ca.pem");
        let sts_endpoint = format!("http://127.0.0.1:{aws_port}");
        // kubectl, which checks what Hydroplane made, uses a static admin token; Hydroplane has
        // only its EKS tokens.
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
            &sts_endpoint,
            "--eks-allowed-arn",
            "arn:aws:iam::123456789012:user/hydroplane",
            "--eks-allowed-arn",
            "arn:aws:iam::123456789012:role/EKSAdmin",
        ]);
        let aws = Moto::start(aws_port, REGION, &sim.url, &ca_file);
        let created = aws.call(
            &aws.user,
            "eks",
            "create_cluster",
            serde_json::json!({"name": CLUSTER, "roleArn": "arn:aws:iam::123456789012:role/eks-service",
                "resourcesVpcConfig": {"subnetIds": ["subnet-1"]}}),
        );
        assert_eq!(created["ok"], true, "{created}");
        World {
            sim,
            aws,
            home: tempfile::tempdir().expect("tempdir"),
            ca_directory,
            transcript: String::new(),
        }
    }

    fn record(&mut self, output: &Output) {
        self.transcript.push_str(&String::from_utf8_lossy(&output.stdout));
        self.transcript.push_str(&String::from_utf8_lossy(&output.stderr));
    }

    /// `local-secret-store` as the guide runs it, with HOME in the test's home.
    fn secret_store(&mut self, args: &[&str]) -> Output {
        let output = local_secret_store(PASSWORD)
            .args(args)
            .current_dir(self.home.path())
            .env("HOME", self.home.path())
            .output()
            .expect("run local-secret-store");
        self.record(&output);
        assert!(
            output.status.success(),
            "local-secret-store {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Steps 2 of the guide: the store, creds.json, and the secret.
    fn store_credentials(&mut self, access_key_id: &str, secret_access_key: &str) {
        self.secret_store(&["init"]);
        let creds = self.home.path().join("creds.json");
        std::fs::write(
            &creds,
            format!(r#"{{"AccessKeyId":"{access_key_id}","SecretAccessKey":"{secret_access_key}"}}"#),
        )
        .expect("write creds.json");
        self.secret_store(&["add", "-f", "creds.json", "aws-credentials"]);
        std::fs::remove_file(creds).expect("rm creds.json");
    }

    /// Replaces the stored keys (the store exists already).
    fn store_credentials_again(&mut self, access_key_id: &str, secret_access_key: &str) {
        let creds = self.home.path().join("creds.json");
        std::fs::write(
            &creds,
            format!(r#"{{"AccessKeyId":"{access_key_id}","SecretAccessKey":"{secret_access_key}"}}"#),
        )
        .expect("write creds.json");
        self.secret_store(&["add", "-f", "creds.json", "aws-credentials"]);
        std::fs::remove_file(creds).expect("rm creds.json");
    }

    /// The guide's `eks.yml`, verbatim, plus the test's endpoint overrides and `extra` lines.
    fn eks_yml(&self, extra: &str) -> PathBuf {
        let guide = "---\nsecret_store:\n  secret_store_type: local\n  store_location: ~/.hydro_secrets\n\n\
                     runtime:\n  runtime_type: eks\n  cluster_name: hydro-eks\n  region: us-west-2\n  \
                     credentials:\n    access_key:\n      access_key_id:\n        secret_name: aws-credentials\n        \
                     key: AccessKeyId\n      secret_access_key:\n        secret_name: aws-credentials\n        \
                     key: SecretAccessKey\n";
        let overrides = format!("  sts_endpoint: {url}\n  eks_endpoint: {url}\n{extra}", url = self.aws.url);
        let path = self.home.path().join("eks.yml");
        std::fs::write(&path, format!("{guide}{overrides}")).expect("write eks.yml");
        path
    }

    /// `hydroplane -c eks.yml`, with the password from the environment.
    fn server(&self, config: &Path) -> Server {
        Server::start_with_env(
            &["-c", config.to_str().expect("path")],
            &[
                ("HOME", self.home.path().to_str().expect("path")),
                ("HYDROPLANE_SECRET_STORE_PASSWORD", PASSWORD),
            ],
        )
    }

    /// `hydroplane -c eks.yml` that must fail at start-up; returns its stderr.
    fn failed_server(&mut self, config: &Path) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
            .args(["-p", "0", "-c", config.to_str().expect("path")])
            .env("HOME", self.home.path())
            .env("HYDROPLANE_SECRET_STORE_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("run hydroplane");
        self.record(&output);
        assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"), "it never served");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn hpctl(&mut self, server: &Server, args: &[&str]) -> serde_json::Value {
        let output = hpctl(server, args);
        self.record(&output);
        assert!(output.status.success(), "hpctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("hpctl prints JSON")
    }

    #[track_caller]
    fn assert_no_secret_anywhere(&self, server: &Server) {
        let everything = format!("{}{}{}", self.transcript, server.stdout(), server.stderr());
        for secret in [PASSWORD, self.aws.user.secret_access_key.as_str()] {
            assert!(!everything.contains(secret), "a secret appears in the output:\n{everything}");
        }
    }
}

#[test]
fn the_guides_quickstart_works_as_written() {
    let mut world = World::start();
    let (key, secret) = (world.aws.user.access_key_id.clone(), world.aws.user.secret_access_key.clone());
    world.store_credentials(&key, &secret);
    let config = world.eks_yml("");
    let server = world.server(&config);
    assert_eq!(world.hpctl(&server, &["list"]), serde_json::json!([]));

    let nginx = repo_root().join("examples/nginx.json");
    world.hpctl(&server, &["start", nginx.to_str().expect("path")]);
    let listed = world.hpctl(&server, &["list"]);
    let process = &listed[0];
    assert_eq!(process["process_name"], "nginx");
    assert_eq!(process["group"], serde_json::Value::Null);
    let address = &process["socket_addresses"][0];
    assert!(address["host"].as_str().is_some_and(|host| host.starts_with("203.0.113.")), "{listed}");
    assert!(address["port"].as_u64().is_some_and(|port| (30000..=32767).contains(&port)), "{listed}");
    assert_eq!(address["is_public"], true);
    assert!(process["created"].as_str().is_some_and(|created| created.ends_with("+00:00")));
    assert_eq!(world.sim.names("statefulsets"), ["nginx"]);
    assert_eq!(world.sim.names("pods"), ["nginx-0"]);

    assert_eq!(world.hpctl(&server, &["stop", "nginx"]), serde_json::json!(["nginx"]));
    world.sim.wait_deleted(&["pod/nginx"]);
    assert!(world.sim.names("pods").is_empty(), "nginx is gone");

    let stats = world.aws.stats();
    assert!(stats["eks"]["DescribeCluster"].as_u64() >= Some(1), "{stats}");
    assert!(
        stats["sts_presigned"]["GetCallerIdentity"].as_u64() >= Some(1),
        "the simulator asked STS: {stats}"
    );
    world.assert_no_secret_anywhere(&server);
}

#[tokio::test(flavor = "multi_thread")]
async fn assumed_role_credentials_and_tokens_are_renewed_without_failed_requests() {
    let mut world = World::start();
    let (key, secret) = (world.aws.user.access_key_id.clone(), world.aws.user.secret_access_key.clone());
    world.store_credentials(&key, &secret);
    let config = world.eks_yml(&format!(
        "  token_refresh_seconds: 1\n  credentials_renew_before_seconds: 898\n  credentials:\n    access_key:\n      \
         access_key_id:\n        secret_name: aws-credentials\n        key: AccessKeyId\n      secret_access_key:\n        \
         secret_name: aws-credentials\n        key: SecretAccessKey\n    assume_role:\n      role_arn: \"{}\"\n      \
         session_duration_seconds: 900\n",
        world.aws.role_arn
    ));
    // The guide's credentials block is replaced by the one with assume_role.
    let text = std::fs::read_to_string(&config).expect("read");
    let (head, tail) = text.split_once("  credentials:\n").expect("credentials block");
    let rest = tail
        .split_once("  sts_endpoint:")
        .map(|(_, rest)| format!("  sts_endpoint:{rest}"))
        .expect("overrides");
    std::fs::write(&config, format!("{head}{rest}")).expect("write");

    let server = world.server(&config);
    let mut client = server.client().await;
    let before = world.aws.stats();
    // Several renewal periods (credentials every ~2 s, tokens every 1 s) of steady traffic.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    while tokio::time::Instant::now() < deadline {
        let name = format!("p{calls}");
        let spec = serde_json::json!({"process_name": name, "container": {"image_uri": "nginx"}});
        client
            .start(start_request(spec))
            .await
            .unwrap_or_else(|status| panic!("start {name} failed: {status:?}"));
        client
            .list(hydroplane::proto::ListRequest::default())
            .await
            .unwrap_or_else(|status| panic!("list failed: {status:?}"));
        client
            .stop(stop_process(&name))
            .await
            .unwrap_or_else(|status| panic!("stop {name} failed: {status:?}"));
        calls += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = world.aws.stats();
    let count =
        |stats: &serde_json::Value, group: &str, action: &str| stats[group][action].as_u64().unwrap_or(0);
    let assumed = count(&after, "sts", "AssumeRole") - count(&before, "sts", "AssumeRole");
    let reviewed = count(&after, "sts_presigned", "GetCallerIdentity")
        - count(&before, "sts_presigned", "GetCallerIdentity");
    assert!(calls >= 3, "{calls} rounds of calls");
    assert!(assumed >= 3, "credentials were renewed: {assumed} AssumeRole calls in 10 s ({after})");
    assert!(reviewed >= 5, "tokens were renewed: {reviewed} new tokens reviewed in 10 s ({after})");
    assert!(server.stderr().contains("authenticated with AWS"), "{}", server.stderr());
    world.assert_no_secret_anywhere(&server);
}

#[test]
fn mistakes_are_reported_at_start_up_with_what_to_fix() {
    let mut world = World::start();
    // Keys AWS does not know: named by their id, never by their secret.
    world.store_credentials("AKIAUNKNOWNKEY000001", "not-a-real-secret-key-0000000000000000000");
    let config = world.eks_yml("");
    let stderr = world.failed_server(&config);
    assert!(stderr.contains("AWS refused the access key AKIAUNKNOWNKEY000001"), "{stderr}");
    assert!(stderr.contains("InvalidClientTokenId"), "{stderr}");
    assert!(!stderr.contains("not-a-real-secret-key"), "{stderr}");

    // Good keys, a role that cannot be assumed: the ARN and STS's message.
    let (key, secret) = (world.aws.user.access_key_id.clone(), world.aws.user.secret_access_key.clone());
    world.secret_store(&["remove", "aws-credentials"]);
    let creds = world.home.path().join("creds.json");
    std::fs::write(&creds, format!(r#"{{"AccessKeyId":"{key}","SecretAccessKey":"{secret}"}}"#))
        .expect("write");
    world.secret_store(&["add", "-f", "creds.json", "aws-credentials"]);
    std::fs::remove_file(creds).expect("rm");
    let text = std::fs::read_to_string(&config).expect("read");
    let with_role = text.replace(
        "        key: SecretAccessKey\n",
        "        key: SecretAccessKey\n    assume_role:\n      role_arn: arn:aws:iam::123456789012:role/NoSuchRole\n",
    );
    std::fs::write(&config, with_role).expect("write");
    let stderr = world.failed_server(&config);
    assert!(stderr.contains("cannot assume the role arn:aws:iam::123456789012:role/NoSuchRole"), "{stderr}");
    assert!(stderr.contains("AccessDenied") || stderr.contains("not authorized"), "{stderr}");

    // An unknown cluster: its name and region.
    std::fs::write(&config, text.replace("cluster_name: hydro-eks", "cluster_name: no-such-cluster"))
        .expect("write");
    let stderr = world.failed_server(&config);
    assert!(stderr.contains("there is no EKS cluster `no-such-cluster` in region us-west-2"), "{stderr}");

    // A missing secret key: its name.
    std::fs::write(&config, text.replace("key: AccessKeyId", "key: AccessKeyID")).expect("write");
    let stderr = world.failed_server(&config);
    assert!(stderr.contains("secret `aws-credentials` has no key `AccessKeyID`"), "{stderr}");

    // Keys of a user the cluster does not let in (no access entry): the cluster's 401 names the
    // principal Hydroplane authenticated as, and how to let it in.
    let user =
        world.aws.call(&world.aws.user, "iam", "create_user", serde_json::json!({"UserName": "intruder"}));
    assert_eq!(user["ok"], true, "{user}");
    // It may describe the cluster (IAM), which is not the same as being let into it (Kubernetes).
    let policy = serde_json::json!({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "eks:DescribeCluster", "Resource": "*"}]});
    let allowed = world.aws.call(
        &world.aws.user,
        "iam",
        "put_user_policy",
        serde_json::json!({"UserName": "intruder", "PolicyName": "describe", "PolicyDocument": policy.to_string()}),
    );
    assert_eq!(allowed["ok"], true, "{allowed}");
    let keys = world.aws.call(
        &world.aws.user,
        "iam",
        "create_access_key",
        serde_json::json!({"UserName": "intruder"}),
    );
    let key = keys["response"]["AccessKey"]["AccessKeyId"].as_str().expect("a key id").to_owned();
    let secret = keys["response"]["AccessKey"]["SecretAccessKey"].as_str().expect("a secret").to_owned();
    world.secret_store(&["remove", "aws-credentials"]);
    world.store_credentials_again(&key, &secret);
    std::fs::write(&config, &text).expect("write");
    let stderr = world.failed_server(&config);
    let intruder = "arn:aws:iam::123456789012:user/intruder";
    assert!(stderr.contains(&format!("authenticated with AWS as {intruder}")), "{stderr}");
    assert!(stderr.contains(&format!("--principal-arn {intruder}")), "{stderr}");
    assert!(stderr.contains("aws-auth"), "{stderr}");
    assert!(!stderr.contains(&secret), "{stderr}");

    for secret in [PASSWORD, world.aws.user.secret_access_key.as_str()] {
        assert!(!world.transcript.contains(secret), "a secret appears in the output:\n{}", world.transcript);
    }
}

#[test]
fn a_configured_endpoint_and_ca_skip_describe_cluster() {
    use base64::Engine as _;
    let mut world = World::start();
    let (key, secret) = (world.aws.user.access_key_id.clone(), world.aws.user.secret_access_key.clone());
    world.store_credentials(&key, &secret);
    let ca = std::fs::read(world.ca_directory.path().join("ca.pem")).expect("the simulator's CA");
    let config = world.eks_yml(&format!(
        "  endpoint: {}\n  certificate_authority: {}\n",
        world.sim.url,
        base64::engine::general_purpose::STANDARD.encode(ca)
    ));
    let before = world.aws.stats();
    let server = world.server(&config);
    assert_eq!(world.hpctl(&server, &["list"]), serde_json::json!([]));
    let after = world.aws.stats();
    assert_eq!(
        after["eks"]["DescribeCluster"], before["eks"]["DescribeCluster"],
        "no DescribeCluster: {after}"
    );

    // The CA of another cluster: TLS verification fails (nothing is ever trusted blindly), and
    // the server says so at start-up.
    let other_ca_file = world.ca_directory.path().join("other-ca.pem");
    let _other = KubeSim::start(&["--tls", "--ca-out", other_ca_file.to_str().expect("path")]);
    let other_ca = std::fs::read(&other_ca_file).expect("the other simulator's CA");
    let config = world.eks_yml(&format!(
        "  endpoint: {}\n  certificate_authority: {}\n",
        world.sim.url,
        base64::engine::general_purpose::STANDARD.encode(other_ca)
    ));
    let stderr = world.failed_server(&config);
    assert!(
        stderr.contains("cannot use the EKS cluster") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
}
