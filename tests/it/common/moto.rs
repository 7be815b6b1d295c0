//! AWS for the tests, from the test venv: moto behind our launcher (`tests/aws/moto_launcher.py`),
//! one boto3 call (`tests/aws/aws_call.py`) and botocore's EKS token (`tests/aws/botocore_token.py`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{child, repo_root, test_python};

/// A script of `tests/aws/`.
pub fn script(name: &str) -> PathBuf {
    repo_root().join("tests/aws").join(name)
}

/// Runs the venv's Python with `args`; asserts success.
#[track_caller]
pub fn run_python(args: &[String]) -> Output {
    let output = Command::new(test_python()).args(args).stdin(Stdio::null()).output().expect("run python");
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
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl Credentials {
    /// Long-term keys (no session token).
    pub fn keys(access_key_id: &str, secret_access_key: &str) -> Credentials {
        Credentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            session_token: None,
        }
    }

    /// The scripts' command-line flags for these credentials.
    pub fn arguments(&self) -> Vec<String> {
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

/// The token `aws eks get-token` makes (`botocore_token.py`) for these credentials, region,
/// cluster and signing time (such as `2025-01-02T03:04:05Z`); asserts it is one line.
#[track_caller]
pub fn botocore_token(credentials: &Credentials, region: &str, cluster: &str, timestamp: &str) -> String {
    let mut args = vec![script("botocore_token.py").display().to_string()];
    args.extend(credentials.arguments());
    args.extend(["--region", region, "--cluster-name", cluster, "--timestamp", timestamp].map(str::to_owned));
    let output = run_python(&args);
    let stdout = String::from_utf8(output.stdout).expect("utf-8 token");
    assert!(stdout.ends_with('\n') && stdout.lines().count() == 1, "not one line: {stdout:?}");
    stdout.trim_end().to_owned()
}

/// A running `moto_launcher.py`, killed when dropped (also when the test panics).
pub struct Moto {
    child: Child,
    /// The launcher ends when its stdin closes: the pipe ties its life to ours.
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The IAM user's keys.
    pub user: Credentials,
    /// The role the user may assume (EKSAdmin).
    pub role_arn: String,
    /// The account id.
    pub account: String,
    /// The region of [`Moto::call`]s.
    pub region: String,
}

impl Moto {
    /// Starts the launcher on `port` (0: a free one) for `region`; every EKS cluster reports
    /// `eks_endpoint` and the PEM of `eks_ca_file` as its CA.
    pub fn start(port: u16, region: &str, eks_endpoint: &str, eks_ca_file: &Path) -> Moto {
        Moto::start_with(port, region, eks_endpoint, eks_ca_file, &[])
    }

    /// [`Moto::start`] with more of the launcher's flags, such as
    /// `--web-identity-duration-seconds`.
    pub fn start_with(
        port: u16,
        region: &str,
        eks_endpoint: &str,
        eks_ca_file: &Path,
        extra: &[&str],
    ) -> Moto {
        let mut spawned = child::spawn_with_first_line(
            "the moto launcher",
            Command::new(test_python())
                .arg(script("moto_launcher.py"))
                .args(["--port", &port.to_string(), "--region", region, "--eks-endpoint", eks_endpoint])
                .arg("--eks-ca-file")
                .arg(eks_ca_file)
                .args(extra)
                .stdin(Stdio::piped())
                .stderr(Stdio::piped()),
            child::FIRST_LINE_TIMEOUT,
        );
        let stdin = spawned.child.stdin.take();
        let mut moto = Moto {
            child: spawned.child,
            stdin,
            stderr: spawned.stderr,
            url: String::new(),
            address: String::new(),
            user: Credentials::keys("", ""),
            role_arn: String::new(),
            account: String::new(),
            region: region.to_owned(),
        };
        let first_line = spawned.first_line;
        let started: Value = serde_json::from_str(&first_line).unwrap_or_else(|error| {
            panic!("the launcher's first line is not JSON ({error}): {first_line:?}\n{}", moto.stderr())
        });
        let field = |name: &str| {
            started[name].as_str().unwrap_or_else(|| panic!("no {name} in {started}")).to_owned()
        };
        moto.url = field("url");
        moto.address = moto.url.strip_prefix("http://").expect("an http URL").to_owned();
        assert!(moto.address.starts_with("127.0.0.1:"), "not on loopback: {}", moto.url);
        moto.user = Credentials::keys(&field("access_key_id"), &field("secret_access_key"));
        moto.role_arn = field("role_arn");
        moto.account = field("account");
        moto
    }

    /// Everything the launcher wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// One boto3 call through `aws_call.py`: `{"ok": true, "response": ..}` or the error's fields.
    pub fn call(&self, credentials: &Credentials, service: &str, operation: &str, params: Value) -> Value {
        let mut args = vec![
            script("aws_call.py").display().to_string(),
            "--endpoint".to_owned(),
            self.url.clone(),
            "--region".to_owned(),
            self.region.clone(),
        ];
        args.extend(credentials.arguments());
        args.extend([service.to_owned(), operation.to_owned(), params.to_string()]);
        let output = run_python(&args);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!("aws_call.py printed no JSON ({error}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    /// A raw HTTP request to the launcher, as the Kubernetes simulator forwards a token: a path
    /// and query sent to the launcher's address (so with its Host). Returns (status, body).
    pub fn http(&self, method: &str, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
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

    /// The launcher's call counters, by group (`eks`, `sts`, `sts_presigned`,
    /// `web_identity_tokens`) and action (or token).
    pub fn stats(&self) -> Value {
        let (status, body) = self.http("GET", "/_launcher/stats", &[]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("stats: {error}: {body}"))
    }

    /// Closes the launcher's stdin, as a dropped parent does, and waits for it to exit.
    pub fn close_stdin_and_wait(&mut self) -> std::process::ExitStatus {
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

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
