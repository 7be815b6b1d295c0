//! Shared helpers of the integration tests: the real `hydroplane` binary and the Kubernetes API
//! simulator on free loopback ports, stopped when the test ends (also when it fails), `hpctl`,
//! tokens, and small utilities. Beside them: [`eventually`] (every wait), [`child`] (a child's first line with a timeout,
//! followed lines, `$KUBECTL`), [`requests`] (specs and requests), [`watch`] (waiting on Watch
//! events), [`moto`] (the AWS fixtures) and [`certs`] (test CAs).

pub mod certs;
pub mod child;
pub mod docker;
pub mod eventually;
pub mod moto;
pub mod requests;
pub mod watch;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use eventually::eventually;

use hydroplane::proto::process_service_client::ProcessServiceClient;
use tonic::transport::Channel;

/// `local-secret-store`, answering both password prompts with `password` and with the test-only
/// PBKDF2 iteration count (the store's header records it), so that tests stay fast; the caller
/// adds `--store`, the arguments and how to run it.
pub fn local_secret_store(password: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_local-secret-store"));
    command
        .env("HYDROPLANE_SECRET_STORE_PASSWORD", password)
        .env("HYDROPLANE_SECRET_STORE_NEW_PASSWORD", password)
        .env("HYDROPLANE_SECRET_STORE_TEST_ITERATIONS", "1000")
        .stdin(Stdio::null());
    command
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the test venv (`HYDROPLANE_TEST_PYTHON`, else `.venv/bin/python`), which the
/// test command (`scripts/test`) creates; a clear failure when it is missing.
pub fn test_python() -> PathBuf {
    let python = std::env::var_os("HYDROPLANE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run the test command, scripts/test, which creates the Python test venv",
        python.display()
    );
    python
}

/// A running `hydroplane` server, killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// The address it listens on, `127.0.0.1:PORT`.
    pub address: String,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// The server's state directory (`XDG_STATE_HOME`: the local runtime's default `log_dir` is
    /// in it), so that no test leaves output files in the user's home.
    _state: tempfile::TempDir,
}

impl Server {
    /// Starts the server with no config (the local runtime).
    pub fn start() -> Server {
        Server::start_with_args(&[])
    }

    /// Starts the server with a config file's contents.
    pub fn start_with_config(directory: &Path, yaml: &str) -> Server {
        let path = directory.join("hydroplane.yml");
        std::fs::write(&path, yaml).expect("write config");
        Server::start_with_args(&["-c", path.to_str().expect("utf-8 path")])
    }

    /// Starts the server with extra arguments, on a free port.
    pub fn start_with_args(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Starts the server with extra arguments and environment variables, on a free port.
    pub fn start_with_env(args: &[&str], environment: &[(&str, &str)]) -> Server {
        Server::start_as(None, args, environment)
    }

    /// Starts the server as the user and group `user` (by id) when given, which then owns its
    /// state directory; the test must run as root to switch.
    pub fn start_as(user: Option<(u32, u32)>, args: &[&str], environment: &[(&str, &str)]) -> Server {
        use std::os::unix::process::CommandExt;
        let state = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_hydroplane"));
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(state.path(), Some(uid), Some(gid)).expect("chown the state directory");
            command.uid(uid).gid(gid);
        }
        let spawned = child::spawn_with_first_line(
            "the hydroplane server",
            command
                .args(["-H", "127.0.0.1", "-p", "0"])
                .args(args)
                .env("RUST_LOG", "info,hydroplane=debug")
                .env("XDG_STATE_HOME", state.path())
                .envs(environment.iter().copied())
                .stdin(Stdio::null())
                .stderr(Stdio::piped()),
            child::FIRST_LINE_TIMEOUT,
        );
        let address = spawned
            .first_line
            .strip_prefix("hydroplane listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        let mut server = Server {
            child: Some(spawned.child),
            address: String::new(),
            stderr: spawned.stderr,
            stdout: spawned.stdout,
            _state: state,
        };
        match address {
            Some(address) => server.address = address,
            None => {
                let line = &spawned.first_line;
                panic!("the server's first line is not its address: {line:?}; stderr:\n{}", server.stderr());
            }
        }
        server
    }

    /// The server's URL for gRPC clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A connected gRPC client.
    pub async fn client(&self) -> ProcessServiceClient<Channel> {
        ProcessServiceClient::connect(self.url()).await.expect("connect to the server")
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Everything the server wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// The address the server announced for metrics (`hydroplane metrics on ADDR`), from its
    /// stdout, once it has.
    pub async fn metrics_address(&self) -> String {
        eventually("the server prints its metrics address", Duration::from_secs(10), async || {
            let stdout = self.stdout();
            let address = stdout.lines().find_map(|line| line.strip_prefix("hydroplane metrics on "));
            address.map(|rest| rest.trim().to_owned()).ok_or(stdout)
        })
        .await
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|child| child.id() as i32).expect("server is running")
    }

    /// Sends SIGTERM and waits for the server to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("the server did not exit within 30 s of SIGTERM; stderr:\n{}", self.stderr());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Fetches `/` over HTTP/1.0 and returns the status line.
pub fn http_get_status(host: &str, port: u32) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect((host, port as u16)).expect("connect to the process");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}

/// Whether a process of this pid still exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (polling, bounded) until `condition` holds; panics with `what` otherwise.
/// `GET path` over HTTP/1.1 (the metrics listener's protocol); the status line and headers, and
/// the body.
pub fn http_get(address: &str, path: &str) -> (String, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics listener");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_owned(), body.to_owned())
}

/// [`eventually`] for tests that are not async, blocking the thread while it waits. Inside an
/// async test it panics (a runtime cannot start within another): await `eventually` there.
pub fn wait_until<Outcome: eventually::Attempt>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Outcome,
) -> Outcome::Found {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    runtime.block_on(eventually(what, timeout, async || check()))
}

/// A running Kubernetes API simulator (`kube-sim`), killed when dropped.
pub struct KubeSim {
    child: Option<Child>,
    /// The simulator's base URL.
    pub url: String,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    directory: tempfile::TempDir,
}

/// The `kube-sim` binary, built on demand when a lone `cargo test` did not build the workspace.
pub fn kube_sim_binary() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_hydroplane")).with_file_name("kube-sim");
    if !binary.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["build", "-p", "kube-sim", "--bin", "kube-sim"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build -p kube-sim");
        assert!(status.success(), "cannot build kube-sim");
    }
    binary
}

/// The `hpctl` binary, which is its own package (`client/hpctl`), so cargo builds it for the
/// whole workspace's tests (`scripts/test`) but not for `cargo nextest run -p hydroplane` alone:
/// then, when it is missing or older than its sources, it is built here, so that the tests never
/// run an hpctl older than the code.
pub fn hpctl_binary() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let binary = Path::new(env!("CARGO_BIN_EXE_hydroplane")).with_file_name("hpctl");
            let root = repo_root();
            let sources = ["client/hpctl", "client/rust/src", "core", "proto", "Cargo.lock"]
                .map(|path| root.join(path));
            let built = std::fs::metadata(&binary).and_then(|metadata| metadata.modified()).ok();
            if built.is_none_or(|built| sources.iter().any(|source| changed_since(source, built))) {
                let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
                    .args(["build", "-p", "hpctl", "--bin", "hpctl"])
                    .current_dir(&root)
                    .status()
                    .expect("run cargo build -p hpctl");
                assert!(status.success(), "cannot build hpctl");
            }
            binary
        })
        .clone()
}

/// Whether `path` (a file, or any file under a folder) was modified after `time`.
fn changed_since(path: &Path, time: std::time::SystemTime) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else { return false };
    if metadata.is_dir() {
        let entries = std::fs::read_dir(path).expect("read a source folder");
        entries.flatten().any(|entry| changed_since(&entry.path(), time))
    } else {
        metadata.modified().is_ok_and(|modified| modified > time)
    }
}

impl KubeSim {
    /// Starts the simulator with extra flags.
    pub fn start(extra: &[&str]) -> KubeSim {
        let directory = tempfile::tempdir().expect("tempdir");
        let kubeconfig = directory.path().join("kubeconfig");
        let spawned = child::spawn_with_first_line(
            "kube-sim",
            Command::new(kube_sim_binary())
                .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
                .arg(&kubeconfig)
                .args(extra)
                .stdin(Stdio::null())
                .stderr(Stdio::piped()),
            child::FIRST_LINE_TIMEOUT,
        );
        let child = spawned.child;
        let line = spawned.first_line;
        let url = line.strip_prefix("listening on ").map(str::to_owned);
        let Some(url) = url else {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            panic!("kube-sim's first line is not its address: {line:?}");
        };
        KubeSim { child: Some(child), url, kubeconfig, directory }
    }

    /// A config file for a `kubernetes` runtime on this simulator, with extra YAML lines.
    pub fn hydroplane_config(&self, extra: &str) -> String {
        format!("runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n{extra}", self.kubeconfig.display())
    }

    /// A scratch directory that lives as long as the simulator.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// A kubectl command (`$KUBECTL`, else `kubectl`) for the simulator, with its kubeconfig
    /// and `HOME` and a discovery cache in the simulator's directory.
    pub fn kubectl_command(&self) -> Command {
        child::kubectl(&self.kubeconfig, self.directory.path())
    }

    /// Runs kubectl against the simulator and returns stdout; panics on failure.
    #[track_caller]
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_command().args(args).output().expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until these objects (`pod/nginx`, `service/nginx`) are gone, or were never there:
    /// `kubectl wait --for=delete`, which watches them, within 60 s.
    #[track_caller]
    pub fn wait_deleted(&self, objects: &[&str]) {
        // No per-request bound: the wait's own timeout bounds the watch.
        let mut args = vec!["wait", "--for=delete", "--timeout=60s", "--request-timeout=0"];
        args.extend_from_slice(objects);
        self.kubectl(&args);
    }

    /// The names of the objects of a kind, as kubectl lists them.
    pub fn names(&self, kind: &str) -> Vec<String> {
        let list: serde_json::Value =
            serde_json::from_str(&self.kubectl(&["get", kind, "-o", "json"])).expect("kubectl prints JSON");
        list["items"]
            .as_array()
            .map(|items| {
                items.iter().filter_map(|item| item["metadata"]["name"].as_str().map(str::to_owned)).collect()
            })
            .unwrap_or_default()
    }

    /// Patches a pod's status as a kubelet would, through the status subresource.
    pub fn patch_pod_status(&self, pod: &str, status: serde_json::Value) {
        let patch = serde_json::json!({ "status": status }).to_string();
        self.kubectl(&["patch", "pod", pod, "--subresource=status", "--type=merge", "-p", &patch]);
    }

    /// Sets faults through the simulator's admin endpoint (`POST /_sim/faults`).
    #[track_caller]
    pub fn faults(&self, body: serde_json::Value) {
        self.admin("POST", "faults", &body.to_string());
    }

    /// Makes the simulator refuse connections for `duration` and returns once it does: the
    /// admin call is answered before the simulator's accept loop closes its listener.
    pub async fn refuse_connections_for(&self, duration: Duration) {
        self.faults(serde_json::json!({"refuse_connections_for_ms": duration.as_millis() as u64}));
        let address = self.url.trim_start_matches("http://").trim_start_matches("https://").to_owned();
        eventually("the simulator refuses connections", duration, async || {
            tokio::net::TcpStream::connect(&address).await.is_err()
        })
        .await;
    }

    /// Calls one of the simulator's admin endpoints (`{method} /_sim/{path}` with `body`) and
    /// returns its JSON answer; panics unless it answers 200.
    #[track_caller]
    pub fn admin(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        use std::io::Write;
        let address = self.url.trim_start_matches("http://").trim_start_matches("https://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect to kube-sim");
        write!(
            stream,
            "{method} /_sim/{path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send the admin request");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 200"), "{method} /_sim/{path} refused: {response}");
        let (_, answer) = response.split_once("\r\n\r\n").unwrap_or_default();
        serde_json::from_str(answer).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `hpctl` against a server; returns its output.
pub fn hpctl(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(hpctl_binary())
        .args(args)
        .env("HYDROPLANE_SERVER", server.url())
        .output()
        .expect("run hpctl")
}

/// Runs `hpctl`, asserts success, and parses its JSON output.
#[track_caller]
pub fn hpctl_json(server: &Server, args: &[&str]) -> serde_json::Value {
    let output = hpctl(server, args);
    assert!(output.status.success(), "hpctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("hpctl prints JSON")
}

/// A gRPC client that sends `authorization: Bearer TOKEN` on every call (or nothing).
pub type TokenClient =
    ProcessServiceClient<tonic::service::interceptor::InterceptedService<Channel, TokenInterceptor>>;

/// Adds the bearer token to each request.
#[derive(Clone)]
pub struct TokenInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A client of `channel` that presents `token` (none: no `authorization` metadata).
pub fn token_client(channel: Channel, token: Option<&str>) -> TokenClient {
    let value = token.map(|token| format!("Bearer {token}").parse().expect("a token is ASCII"));
    ProcessServiceClient::with_interceptor(channel, TokenInterceptor(value))
}

/// Runs `hydroplane token create` and returns the token it printed on its last line.
#[track_caller]
pub fn create_token(tokens_file: &Path, name: &str, scope: &str, groups: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hydroplane"));
    command
        .args(["token", "create", "--tokens-file"])
        .arg(tokens_file)
        .args(["--name", name, "--scope", scope]);
    if let Some(groups) = groups {
        command.args(["--groups", groups]);
    }
    let output = command.output().expect("run hydroplane token create");
    assert!(output.status.success(), "token create failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    stdout.lines().last().expect("a token line").trim().to_owned()
}
