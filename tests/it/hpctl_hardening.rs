//! `hpctl` under conditions a user meets and a happy path does not: a spec file with more in it
//! than a spec, a value out of range, a Python Hydroplane spec or command line, a reader of
//! stdout that goes away, a server that never answers, and a server that goes away during a
//! watch (and, with `--reconnect`, comes back with a new history).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::certs::TestCa;
use crate::common::{Server, hpctl, hpctl_json, wait_until};

/// The whole of stderr, for a command expected to fail with one line.
#[track_caller]
fn one_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim_end().to_owned()
}

/// Writes `text` to a file in `directory` and returns its path as a string.
fn write(directory: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = directory.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}

const SLEEPER: &str =
    r#"{"process_name": "sleeper", "container": {"image_uri": "x", "command": ["sleep", "300"]}}"#;

#[test]
fn hpctl_checks_the_spec_file_before_sending_it() {
    let server = Server::start();
    let directory = tempfile::tempdir().expect("tempdir");

    // Two specs in one file: the first is not started on the quiet.
    let two =
        write(&directory, "two.json", &format!("{SLEEPER}\n{}\n", SLEEPER.replace("sleeper", "second")));
    let error = one_error_line(&hpctl(&server, &["start", &two]));
    assert_eq!(error, format!("error: {two}:2:1: unexpected text after the spec (a file holds one spec)"));
    let trailing = write(&directory, "trailing.json", &format!("{SLEEPER} oops"));
    let error = one_error_line(&hpctl(&server, &["start", &trailing]));
    assert!(error.starts_with(&format!("error: {trailing}:1:")), "{error}");

    // The Python Hydroplane's examples/nginx-advanced.json, whose node_selector it ignored.
    let python = write(
        &directory,
        "nginx-advanced.json",
        r#"{
    "process_name": "nginx",
    "container": {"image_uri": "nginxdemos/hello", "ports": [{"container_port": 80, "host_port": 8080, "protocol": "tcp"}]},
    "has_public_ip": true,
    "node_selector": {"kubernetes.io/hostname": "gke-node"}
}"#,
    );
    let error = one_error_line(&hpctl(&server, &["start", &python]));
    assert_eq!(
        error,
        format!(
            "error: {python}:5:19: node_selector: unknown field `node_selector`: `node_selector` belongs inside `container`"
        )
    );

    // A value out of range is quoted as written, not as it would travel (a uint64 of 0).
    let negative = write(
        &directory,
        "negative.json",
        r#"{"process_name": "p", "container": {"image_uri": "x", "resource_request": {"memory_mib": -1}}}"#,
    );
    let error = one_error_line(&hpctl(&server, &["start", &negative]));
    assert_eq!(
        error,
        format!(
            "error: {negative}: invalid process spec: container.resource_request.memory_mib: must be between 1 and 1073741824, got -1"
        )
    );

    // The flag as typed, with the value as typed.
    let sleeper = write(&directory, "sleeper.json", SLEEPER);
    let output = hpctl(&server, &["start", "--wait", "--timeout", "-1", &sleeper]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: invalid value '-1' for '--timeout <SECONDS>': the number of seconds must be above 0"
    );
    let error = one_error_line(&hpctl(&server, &["start", "--wait", "--timeout", "86400", &sleeper]));
    assert_eq!(error, "error: --timeout 86400: a --wait may last at most 3600 seconds");

    assert_eq!(hpctl_json(&server, &["list"]), serde_json::json!([]), "nothing was started");
}

#[test]
fn hpctl_takes_the_python_hpctl_spellings() {
    let server = Server::start();
    let directory = tempfile::tempdir().expect("tempdir");
    for name in ["a", "b"] {
        let spec =
            SLEEPER.replace("sleeper", name).replace("\"container\"", "\"group\": \"g\", \"container\"");
        let path = write(&directory, &format!("{name}.json"), &spec);
        hpctl_json(&server, &["start", &path]);
    }
    let listed = hpctl_json(&server, &["-d", "list", "--group_name", "g"]);
    assert_eq!(listed.as_array().expect("an array").len(), 2, "{listed}");
    assert_eq!(hpctl_json(&server, &["list", "--group_name", "other"]), serde_json::json!([]));
    // `stop NAME -g`: NAME is a group.
    assert_eq!(hpctl_json(&server, &["stop", "g", "-g"]), serde_json::json!(["a", "b"]));
    assert_eq!(hpctl_json(&server, &["list"]), serde_json::json!([]));
}

/// Runs hpctl with its stdout a pipe whose reader has already gone.
fn with_closed_stdout(server: &Server, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = Command::new(crate::common::hpctl_binary())
        .args(args)
        .env("HYDROPLANE_SERVER", server.url())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hpctl");
    child.wait_with_output().expect("wait")
}

#[test]
fn hpctl_ends_quietly_when_stdout_closes() {
    let server = Server::start();
    let directory = tempfile::tempdir().expect("tempdir");
    hpctl_json(&server, &["start", &write(&directory, "sleeper.json", SLEEPER)]);
    for args in [&["list"][..], &["watch"], &["watch", "--reconnect"]] {
        let output = with_closed_stdout(&server, args);
        assert_eq!(output.status.code(), Some(141), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{args:?}");
    }
    // Through a shell, as people write it.
    for command in ["list", "watch"] {
        let script = format!("'{}' {command} | head -1", crate::common::hpctl_binary().display());
        let output = Command::new("sh")
            .args(["-c", &script])
            .env("HYDROPLANE_SERVER", server.url())
            .output()
            .expect("sh");
        assert!(output.status.success(), "{command}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{command}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1, "{command}");
    }
}

/// A loopback listener that takes connections and never says a word; held open until dropped.
struct Silent {
    address: String,
    _accepting: std::thread::JoinHandle<()>,
}

impl Silent {
    fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepting = std::thread::spawn(move || {
            let mut connections = Vec::new();
            for connection in listener.incoming() {
                match connection {
                    Ok(connection) => connections.push(connection),
                    Err(_) => return,
                }
            }
        });
        Silent { address, _accepting: accepting }
    }
}

/// Runs hpctl with these arguments and returns its output and how long it took.
fn timed_hpctl(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(crate::common::hpctl_binary())
        .args(args)
        .env_remove("HYDROPLANE_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("run hpctl");
    (output, started.elapsed())
}

#[test]
fn hpctl_gives_up_on_a_server_that_never_answers() {
    let silent = Silent::start();
    let plain = format!("http://{}", silent.address);
    let directory = tempfile::tempdir().expect("tempdir");
    let spec = write(&directory, "sleeper.json", SLEEPER);
    for args in [vec!["list"], vec!["watch"], vec!["stop", "x"], vec!["start", spec.as_str()]] {
        let args: Vec<&str> = ["--timeout", "1", "-s", plain.as_str()].into_iter().chain(args).collect();
        let (output, took) = timed_hpctl(&args);
        let error = one_error_line(&output);
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
        assert!(
            error.starts_with(&format!(
                "error: cannot reach the Hydroplane server at {plain}: no answer within 1 s (--timeout 1)"
            )),
            "{args:?}: {error}"
        );
    }

    // A Unix socket that takes connections and never answers.
    let socket = directory.path().join("silent.sock");
    let unix_listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let _unix_accepting = std::thread::spawn(move || {
        let connections: Vec<_> = unix_listener.incoming().map_while(Result::ok).collect();
        drop(connections);
    });
    let unix = format!("unix:{}", socket.display());
    let (output, took) = timed_hpctl(&["list", "--timeout", "1", "-s", &unix]);
    let error = one_error_line(&output);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        error.starts_with(&format!(
            "error: cannot reach the Hydroplane server at {unix}: no answer within 1 s (--timeout 1)"
        )),
        "{error}"
    );

    // Over TLS, the handshake is what never ends.
    let ca = TestCa::new("hpctl silent CA").write_ca_file(directory.path(), "ca.pem");
    let secure = format!("https://{}", silent.address);
    let (output, took) =
        timed_hpctl(&["list", "--timeout", "1", "-s", &secure, "--ca-cert", ca.to_str().expect("path")]);
    let error = one_error_line(&output);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        error.starts_with(&format!("error: cannot reach the Hydroplane server at {secure}: ")),
        "{error}"
    );
}

/// `hpctl watch` in the background, its stdout and stderr lines arriving one by one; killed when
/// dropped.
struct Watching {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Watching {
    fn start(server: &str, extra: &[&str]) -> Watching {
        let mut child = Command::new(crate::common::hpctl_binary())
            .args(["watch", "-s", server])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hpctl watch");
        let lines = |pipe: Box<dyn Read + Send>| {
            let (sender, receiver) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            });
            receiver
        };
        let stdout = lines(Box::new(child.stdout.take().expect("stdout")));
        let stderr = lines(Box::new(child.stderr.take().expect("stderr")));
        Watching { child, stdout, stderr }
    }

    /// The next line of `from` that satisfies `wanted`, within 30 s.
    #[track_caller]
    fn wait(from: &mpsc::Receiver<String>, what: &str, mut wanted: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match from.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(error) => panic!("no {what} line ({error:?})"),
            }
        }
    }

    /// The next event of this type, as JSON.
    #[track_caller]
    fn event(&self, kind: &str) -> serde_json::Value {
        let line = Watching::wait(&self.stdout, kind, |line| line.contains(&format!("\"type\":\"{kind}\"")));
        serde_json::from_str(&line).expect("JSON")
    }

    /// The next stderr line.
    #[track_caller]
    fn stderr_line(&self) -> String {
        Watching::wait(&self.stderr, "stderr", |_| true)
    }

    /// Waits for the watch to end by itself; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        wait_until("hpctl watch ends", Duration::from_secs(30), || self.child.try_wait().expect("try_wait"))
            .code()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hpctl_watch_says_when_the_server_goes_away() {
    let mut server = Server::start();
    let mut watching = Watching::start(&server.url(), &[]);
    let synced = watching.event("SYNCED");
    let revision = synced["revision"].as_u64().expect("a revision");
    server.terminate();
    let line = watching.stderr_line();
    assert!(
        line.starts_with(&format!("error: the Hydroplane server at {} went away (", server.url()))
            && line
                .ends_with(&format!("); give --reconnect to wait for it or `--since {revision}` to resume")),
        "{line}"
    );
    assert_eq!(watching.exit_code(), Some(1));
    assert!(watching.stderr.try_recv().is_err(), "more than one line on stderr");
}

#[test]
fn hpctl_watch_reconnects_to_a_restarted_server_and_says_it_cannot_resume() {
    let directory = tempfile::tempdir().expect("tempdir");
    let socket = directory.path().join("hydroplane.sock");
    let listen = format!("unix:{}", socket.display());
    let mut first = Server::start_with_args(&["-H", &listen]);
    let spec = write(&directory, "sleeper.json", SLEEPER);
    let output = Command::new(crate::common::hpctl_binary())
        .args(["-s", &listen, "start", &spec])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let watching = Watching::start(&listen, &["--reconnect"]);
    assert_eq!(watching.event("ADDED")["process"]["process_name"], "sleeper");
    let revision = watching.event("SYNCED")["revision"].as_u64().expect("a revision");
    first.terminate();
    let line = watching.stderr_line();
    assert!(
        line.starts_with(&format!("warning: the Hydroplane server at {listen} went away ("))
            && line.ends_with(&format!("); reconnecting, resuming after revision {revision}")),
        "{line}"
    );

    // A restarted local server has a new table: the old revision cannot be replayed.
    let second = Server::start_with_args(&["-H", &listen]);
    let line = watching.stderr_line();
    assert_eq!(
        line,
        format!(
            "warning: reconnected to the Hydroplane server at {listen}, resuming after revision {revision}"
        )
    );
    let reset = watching.event("RESET");
    assert!(reset["revision"].as_u64().expect("a revision") > revision, "{reset}");
    let line = watching.stderr_line();
    assert!(line.contains(&format!("cannot replay what changed after revision {revision}: RESET")), "{line}");
    // The fresh snapshot is empty (the first server's processes died with it), then live events.
    let synced = watching.event("SYNCED");
    let output = Command::new(crate::common::hpctl_binary())
        .args(["-s", &listen, "start", &spec])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let added = watching.event("ADDED");
    assert_eq!(added["process"]["process_name"], "sleeper");
    assert!(added["revision"].as_u64() > synced["revision"].as_u64(), "{added}");
    drop(second);
}
