//! Shared test harness: starts the real `kube-sim` binary on 127.0.0.1 port 0, reads the
//! `listening on <url>` line (within 30 s), and kills the process when the guard is dropped,
//! even when the test panics.

#![allow(dead_code)]

/// Spawning with a first line, following lines, and `$KUBECTL`: the same file as the
/// integration tests' (std only).
#[path = "../../../it/common/child.rs"]
pub mod child;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running simulator, killed on drop.
pub struct Simulator {
    child: Child,
    /// The base URL from the first stdout line.
    pub url: String,
    /// The kubeconfig the simulator wrote.
    pub kubeconfig: PathBuf,
    directory: tempfile::TempDir,
}

impl Simulator {
    /// Starts `kube-sim` with `extra` flags besides `--listen` and `--kubeconfig-out`.
    pub fn start(extra: &[&str]) -> Simulator {
        let directory = tempfile::tempdir().expect("creating a temporary directory");
        let kubeconfig = directory.path().join("kubeconfig");
        let spawned = child::spawn_with_first_line(
            "kube-sim",
            Command::new(env!("CARGO_BIN_EXE_kube-sim"))
                .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
                .arg(&kubeconfig)
                .args(extra)
                .stderr(Stdio::inherit()),
            Duration::from_secs(30),
        );
        let mut simulator = Simulator { child: spawned.child, url: String::new(), kubeconfig, directory };
        let line = spawned.first_line;
        simulator.url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        simulator
    }

    /// The port the simulator listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the URL")
    }

    /// A private scratch directory for this simulator.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// A `kubectl` command using the simulator's kubeconfig and a private discovery cache.
    pub fn kubectl(&self) -> Command {
        child::kubectl(&self.kubeconfig, self.directory.path())
    }

    /// Runs kubectl with `args`, asserting success, and returns stdout.
    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl().args(args).output().expect("running kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs kubectl with `args`, asserting failure, and returns stderr.
    #[track_caller]
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let output = self.kubectl().args(args).output().expect("running kubectl");
        assert!(
            !output.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// A kube-rs client from the written kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig accepted by kube-rs");
        kube::Client::try_from(config).expect("building a kube client")
    }

    /// Sends a JSON request to a `/_sim/` admin endpoint through `client`.
    pub async fn admin(
        &self,
        client: &kube::Client,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("/_sim/{path}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).expect("serialising"))
            .expect("building an admin request");
        let text = client.request_text(request).await.expect("admin request");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kube-rs Pod with one container, labelled `app=<app>`.
pub fn pod(name: &str, app: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
    }))
    .expect("a valid pod")
}

/// A plain HTTP/1.1 GET over a fresh connection, bypassing client retries: (status, headers
/// and body as text).
pub fn raw_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("setting a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .expect("writing");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, response)
}

/// A plain HTTP/1.1 POST of `body` over a fresh connection: (status, whole response).
pub fn raw_post(port: u16, path: &str, content_type: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("setting a timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writing");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, response)
}

/// How long a test waits for the simulator's controllers to act. Generous for a loaded machine;
/// a hang still fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` until it answers `Some`, failing after [`WAIT`] with `what`.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
