//! Child processes of the tests: spawning a program and reading the first line it prints, with a
//! timeout (a server its address, a launcher its JSON); following the lines of a long-running
//! command (`hpctl watch`, `kubectl get -w`); and the kubectl to run (`$KUBECTL`).
//!
//! The simulator's own tests include this file too (`tests/kube-sim/tests/common/mod.rs`), so
//! there is one copy of it; it may only use std.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a program gets to print its first line. Generous: a loaded machine starting Python
/// and moto takes seconds; a hang still fails.
pub const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// A spawned child that printed its first line; both its pipes are drained for its whole life,
/// so it never blocks on a full pipe.
pub struct Spawned {
    /// The child; the caller kills it (usually in its guard's `Drop`).
    pub child: Child,
    /// The first line of stdout, without its line end.
    pub first_line: String,
    /// Everything on stdout so far, the first line included.
    pub stdout: Arc<Mutex<String>>,
    /// Everything on stderr so far when the caller piped it; else empty.
    pub stderr: Arc<Mutex<String>>,
}

/// Spawns `command` with stdout piped and waits up to `timeout` for the first line of stdout.
/// Stderr is captured too when the caller set it to [`Stdio::piped`]. When no line comes (the
/// child exited, or the time ran out), the child is killed and this panics naming `what`, the
/// exit status and the captured stderr.
#[track_caller]
pub fn spawn_with_first_line(what: &str, command: &mut Command, timeout: Duration) -> Spawned {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {what} ({:?}): {error}", command.get_program()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_reader = child.stderr.take().map(|pipe| drain(pipe, Arc::clone(&stderr)));
    let stdout = Arc::new(Mutex::new(String::new()));
    let (first_sender, first_receiver) = mpsc::channel();
    read_stdout(child.stdout.take().expect("stdout is piped"), Arc::clone(&stdout), first_sender);
    let failure = match first_receiver.recv_timeout(timeout) {
        Ok(first_line) => return Spawned { child, first_line, stdout, stderr },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            format!("printed no line within {timeout:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match child.wait() {
            Ok(status) => format!("exited ({status}) before printing a line"),
            Err(error) => format!("closed its stdout before printing a line ({error})"),
        },
    };
    // The child is gone: its stderr ends soon (unless a grandchild holds it; then say what we have).
    if let Some(reader) = stderr_reader {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let stderr = stderr.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    panic!("{what} {failure}; stderr:\n{stderr}");
}

/// Reads stdout line by line into `into`, sending the first line (without its end) on `first`.
fn read_stdout(pipe: ChildStdout, into: Arc<Mutex<String>>, first: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut first = Some(first);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            into.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push_str(&text);
            if let Some(first) = first.take() {
                let _ = first.send(text.trim_end_matches(['\n', '\r']).to_owned());
            }
        }
    });
}

/// Appends everything read from `pipe` to `into` until it closes.
fn drain(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read @ 1..) = pipe.read(&mut buffer) {
            into.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    })
}

/// A long-running command whose stdout lines arrive one by one (`hpctl watch`, `kubectl get
/// -w`, `kubectl logs -f`); killed when dropped, also when the test fails.
pub struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Follow {
    /// Spawns `command` with stdout piped; `what` names it in failures.
    #[track_caller]
    pub fn spawn(what: &str, command: &mut Command) -> Follow {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what} ({:?}): {error}", command.get_program()));
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines, what: what.to_owned() }
    }

    /// Reads lines until one satisfies `wanted` and returns it; panics after `timeout`, or when
    /// the command ends first.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, mut wanted: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{} printed no matching line within {timeout:?}", self.what)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{} ended before printing a matching line", self.what)
                }
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kubectl to run: `$KUBECTL`, else `kubectl` from `PATH`. A missing one fails the test
/// with one line naming it, rather than with the error of a spawn deep in a helper.
#[track_caller]
pub fn kubectl_program() -> OsString {
    if let Some(program) = std::env::var_os("KUBECTL").filter(|program| !program.is_empty()) {
        assert!(
            Path::new(&program).exists() || on_path(&program),
            "KUBECTL={} does not exist: the Kubernetes tests run the real kubectl; set KUBECTL to its path",
            Path::new(&program).display()
        );
        return program;
    }
    assert!(
        on_path(OsStr::new("kubectl")),
        "kubectl is not installed: the Kubernetes tests run the real kubectl; put it on PATH or set KUBECTL to its path"
    );
    "kubectl".into()
}

/// Whether `program` is a file in one of `PATH`'s directories.
fn on_path(program: &OsStr) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|directory| directory.join(program).is_file())
}

/// A kubectl command for the cluster of `kubeconfig`, with `HOME` and a private discovery cache
/// in `scratch` (nothing of the user's `~/.kube` is read or written) and a bound on each request.
pub fn kubectl(kubeconfig: &Path, scratch: &Path) -> Command {
    let mut command = Command::new(kubectl_program());
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(scratch.join("kube-cache"))
        .arg("--request-timeout=20s")
        .env("HOME", scratch);
    command
}
