//! The docker runtime's tests' engine: the one `scripts/dockerd start` names (the engine at
//! `DOCKER_HOST`, or the private dockerd it starts under `target/`, with the test images built),
//! a network of each test's own, whose containers are removed when the test ends, and
//! [`EngineProxy`], a way to the engine that a test can cut.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::AbortHandle;

use super::{Server, repo_root};

/// `scripts/dockerd` with `action`, as a test that holds its lease on the private engine: the
/// script stops an engine it started once no test process has held a lease for a while, so tests
/// run outside `scripts/test` leave no dockerd behind.
fn dockerd(action: &str) -> Output {
    static LEASE: OnceLock<std::fs::File> = OnceLock::new();
    LEASE.get_or_init(|| {
        let state = repo_root().join("target/dockerd");
        std::fs::create_dir_all(&state).expect("make target/dockerd");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state.join("users.lock"))
            .expect("open the engine's lease file");
        // Shared: every test process holds one; released by the kernel when the process ends,
        // however it ends.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared).expect("take the engine's lease");
        file
    });
    Command::new(repo_root().join("scripts/dockerd"))
        .arg(action)
        .env("HYDROPLANE_DOCKERD_REAP", "1")
        .output()
        .unwrap_or_else(|error| panic!("run scripts/dockerd {action}: {error}"))
}

/// The engine's address, from `scripts/dockerd start` (once per test process).
pub fn engine_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let output = dockerd("start");
        assert!(
            output.status.success(),
            "scripts/dockerd start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
    })
}

/// The private engine's TLS address (it verifies its clients), a directory of `ca.pem`,
/// `cert.pem` and `key.pem` its clients use, and its Unix socket, from `scripts/dockerd tls`.
pub fn tls_engine() -> (String, PathBuf, String) {
    let output = dockerd("tls");
    assert!(
        output.status.success(),
        "scripts/dockerd tls failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).expect("utf-8");
    let mut fields = line.split_whitespace();
    let (Some(host), Some(certs), Some(socket)) = (fields.next(), fields.next(), fields.next()) else {
        panic!("scripts/dockerd tls printed `{line}`")
    };
    (host.to_owned(), PathBuf::from(certs), socket.to_owned())
}

/// The image every test process runs: busybox-static's rootfs (see scripts/dockerd).
pub const BUSYBOX: &str = "hydroplane-test/busybox:latest";

/// One test's network on the engine, and the containers on it, removed when dropped.
pub struct DockerNetwork {
    /// The network's name (unique to the test).
    pub network: String,
    /// The engine's address.
    pub host: String,
}

impl DockerNetwork {
    /// A network for the test named `test` (made by the server when it starts).
    pub fn new(test: &str) -> DockerNetwork {
        let network = format!("hpt-{test}-{}", std::process::id());
        DockerNetwork { network, host: engine_host().to_owned() }
    }

    /// The server settings of a docker runtime on this network (extra lines under `runtime:`).
    pub fn config(&self, extra: &str) -> String {
        format!(
            "runtime:\n  runtime_type: docker\n  docker_host: {}\n  network: {}\n  stop_grace_seconds: 2\n{extra}",
            self.host, self.network
        )
    }

    /// A server of this network, its settings written in `directory`.
    pub fn server(&self, directory: &Path) -> Server {
        Server::start_with_config(directory, &self.config(""))
    }

    /// Runs the docker CLI against the engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker").arg("-H").arg(&self.host).args(args).output().expect("run docker")
    }

    /// Whether the engine is Podman's compatible service (whose differences the tests state).
    pub fn is_podman(&self) -> bool {
        let components =
            self.docker_ok(&["version", "--format", "{{range .Server.Components}}{{.Name}};{{end}}"]);
        components.contains("Podman")
    }

    /// Runs the docker CLI and returns its stdout, asserting success.
    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The names of the containers on this network (Hydroplane's label), sorted.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=hydroplane/network={}", self.network);
        let names = self.docker_ok(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
        let mut names: Vec<String> = names.lines().map(str::to_owned).collect();
        names.sort();
        names
    }
}

impl Drop for DockerNetwork {
    fn drop(&mut self) {
        // Bounded: a wedged engine must fail the run's later steps, not hang this test.
        let docker = |args: &[&str]| {
            Command::new("timeout").arg("60").arg("docker").arg("-H").arg(&self.host).args(args).output()
        };
        let filter = format!("label=hydroplane/network={}", self.network);
        if let Ok(output) = docker(&["ps", "-aq", "--filter", &filter]) {
            let ids: Vec<String> =
                String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// A Unix socket that forwards every connection to the engine's socket until [`cut`]: then every
/// connection through it is closed (the server's event stream breaks) and new ones are refused,
/// until [`resume`]. Stopped when dropped.
///
/// [`cut`]: EngineProxy::cut
/// [`resume`]: EngineProxy::resume
pub struct EngineProxy {
    /// The proxy's address, as `runtime.docker_host`.
    pub host: String,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accepting: AbortHandle,
}

impl EngineProxy {
    /// A proxy at `socket` to the engine at `engine` (a `unix://` address); in a Tokio runtime.
    pub fn start(engine: &str, socket: PathBuf) -> EngineProxy {
        let engine = PathBuf::from(engine.strip_prefix("unix://").expect("the test engine is a unix socket"));
        let listener = UnixListener::bind(&socket).expect("bind the proxy's socket");
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accept_open, accept_connections) = (Arc::clone(&open), Arc::clone(&connections));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !accept_open.load(Ordering::SeqCst) {
                    continue;
                }
                let engine = engine.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(mut upstream) = UnixStream::connect(&engine).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                accept_connections.lock().expect("lock").push(forward.abort_handle());
            }
        })
        .abort_handle();
        EngineProxy { host: format!("unix://{}", socket.display()), open, connections, accepting }
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.connections.lock().expect("lock").drain(..).for_each(|connection| connection.abort());
    }

    /// Forwards new connections again.
    pub fn resume(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}
