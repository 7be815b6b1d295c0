//! `hpctl logs` and `hpctl describe` end to end, on the local runtime: raw output on stdout, the
//! flags of the guide's names (`-f`, `--tail`, `--since`, `--timestamps`, `--stream`), and what a
//! crashed process's history says.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::{Server, hpctl, hpctl_json, wait_until};

/// A server on the local runtime whose log directory is in `directory`.
fn server_in(directory: &Path) -> Server {
    let logs = directory.join("logs");
    Server::start_with_config(
        directory,
        &format!("runtime:\n  runtime_type: local\n  log_dir: {}\n", logs.display()),
    )
}

/// Starts a process running `script` with `sh -c` through `hpctl start`.
#[track_caller]
fn start_shell(server: &Server, directory: &Path, name: &str, script: &str) {
    let spec = json!({
        "process_name": name,
        "restart_policy": "never",
        "container": {"image_uri": "busybox", "command": ["sh", "-c", script]}
    });
    let path = directory.join(format!("{name}.json"));
    std::fs::write(&path, spec.to_string()).expect("write spec");
    hpctl_json(server, &["start", path.to_str().expect("utf-8 path")]);
}

/// Runs hpctl, asserts success, and returns its stdout as bytes.
#[track_caller]
fn stdout_of(server: &Server, args: &[&str]) -> Vec<u8> {
    let output = hpctl(server, args);
    assert!(output.status.success(), "hpctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// `hpctl logs -f NAME` in the background, with its stdout; killed when dropped.
struct Following(std::process::Child);

impl Following {
    fn spawn(server: &Server, name: &str) -> Following {
        let child = Command::new(crate::common::hpctl_binary())
            .args(["logs", "-f", name])
            .env("HYDROPLANE_SERVER", server.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hpctl logs -f");
        Following(child)
    }

    /// Waits up to `timeout` for hpctl to exit; its exit code and stderr.
    fn wait(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let status = wait_until("hpctl logs -f ends", timeout, || self.0.try_wait().expect("wait for hpctl"));
        let mut stderr = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status.code(), stderr)
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_show_what_a_crashed_process_printed_and_describe_says_how_it_ended() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = server_in(directory.path());
    // stdout and stderr are two pipes, interleaved in the order the server reads them: the pause
    // makes the order of the last line certain.
    start_shell(
        &server,
        directory.path(),
        "crasher",
        "sleep 0.3; for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; sleep 0.2; echo oops >&2; exit 3",
    );
    // Following ends when the process does: that is the wait.
    let mut following = Following::spawn(&server, "crasher");
    let mut followed = Vec::new();
    following.0.stdout.take().expect("stdout").read_to_end(&mut followed).expect("read");
    assert_eq!(following.wait(Duration::from_secs(30)), (Some(0), String::new()), "-f exits 0 at the end");
    let expected: String = (1..=10).map(|i| format!("line {i}\n")).collect::<String>() + "oops\n";
    assert_eq!(String::from_utf8_lossy(&followed), expected);

    assert_eq!(String::from_utf8_lossy(&stdout_of(&server, &["logs", "crasher"])), expected);
    assert_eq!(stdout_of(&server, &["logs", "crasher", "--tail", "3"]), b"line 9\nline 10\noops\n");
    assert_eq!(stdout_of(&server, &["logs", "crasher", "--stream", "stderr"]), b"oops\n");
    let stamped = String::from_utf8(stdout_of(&server, &["logs", "crasher", "--timestamps", "--tail", "2"]))
        .expect("utf-8");
    for (line, text) in stamped.lines().zip(["line 10", "oops"]) {
        let (time, rest) = line.split_once(' ').expect("a time, then the line");
        let time: jiff::Timestamp = time.parse().unwrap_or_else(|_| panic!("not RFC 3339: {line}"));
        assert!(time <= jiff::Timestamp::now());
        assert_eq!(rest, text);
    }
    assert_eq!(stdout_of(&server, &["logs", "crasher", "--since", "1h", "--tail", "1"]), b"oops\n");
    assert!(stdout_of(&server, &["logs", "crasher", "--since", "2099-01-01T00:00:00Z"]).is_empty());

    let described = hpctl_json(&server, &["describe", "crasher"]);
    assert_eq!(described["process"]["status"], "FAILED");
    assert_eq!(described["process"]["exit_code"], 3);
    let statuses: Vec<&str> = described["history"]
        .as_array()
        .expect("a history")
        .iter()
        .filter_map(|entry| entry["status"].as_str())
        .collect();
    assert_eq!(statuses.last(), Some(&"FAILED"), "{described}");
    assert!(statuses.contains(&"RUNNING"), "{described}");
    assert_eq!(described["spec"]["container"]["command"][0], "sh");

    let unknown = hpctl(&server, &["logs", "nowhere"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("`nowhere` does not exist"));
    let previous = hpctl(&server, &["logs", "crasher", "--previous"]);
    assert_eq!(previous.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&previous.stderr).contains("previous"), "{previous:?}");
}

#[test]
fn binary_output_comes_back_byte_for_byte() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = server_in(directory.path());
    let script = "python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 64)'";
    start_shell(&server, directory.path(), "binary", script);
    let mut following = Following::spawn(&server, "binary");
    let mut followed = Vec::new();
    following.0.stdout.take().expect("stdout").read_to_end(&mut followed).expect("read");
    assert_eq!(following.wait(Duration::from_secs(30)).0, Some(0));
    let expected: Vec<u8> = (0..64).flat_map(|_| 0..=255u8).collect();
    assert_eq!(followed, expected, "followed");
    assert_eq!(stdout_of(&server, &["logs", "binary"]), expected, "read back");
}

#[test]
fn a_follower_sees_each_line_at_once_and_ends_when_the_process_is_stopped() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = server_in(directory.path());
    let ticker =
        "python3 -c 'import time\nwhile True:\n    print(time.time_ns(), flush=True)\n    time.sleep(0.05)'";
    start_shell(&server, directory.path(), "ticker", ticker);
    let mut following = Following::spawn(&server, "ticker");
    let mut lines = BufReader::new(following.0.stdout.take().expect("stdout"));
    let mut latencies = Vec::new();
    let mut line = String::new();
    // The first lines may be the backlog; the later ones arrive as they are written.
    for index in 0..30 {
        line.clear();
        assert!(lines.read_line(&mut line).expect("read") > 0, "hpctl logs -f ended early");
        let written: i128 = line.trim().parse().unwrap_or_else(|_| panic!("not a time: {line:?}"));
        if index >= 10 {
            latencies.push(jiff::Timestamp::now().as_nanosecond() - written);
        }
    }
    latencies.sort();
    let median = Duration::from_nanos(u64::try_from(latencies[latencies.len() / 2]).expect("after"));
    assert!(median < Duration::from_millis(100), "median follow latency {median:?}: {latencies:?}");

    hpctl_json(&server, &["stop", "ticker"]);
    // Read on to the end, so that hpctl never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    let (code, stderr) = following.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "-f exits 0 once the process is stopped: {stderr}");
}
