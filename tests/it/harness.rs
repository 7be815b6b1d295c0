//! The shared helpers themselves: a child's first line within a timeout, and a clear failure
//! (with the child killed) when none comes; following a command's lines.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::child::{Follow, spawn_with_first_line};
use crate::common::{process_alive, wait_until};

/// The message of the panic `run` raises.
fn panic_message(run: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(run).expect_err("the helper must panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_default()
}

#[test]
fn the_first_line_comes_back_and_the_rest_of_stdout_and_stderr_are_collected() {
    let mut spawned = spawn_with_first_line(
        "a shell",
        Command::new("sh")
            .args(["-c", "echo 'listening on here'; echo more; echo warned >&2; exec sleep 300"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped()),
        Duration::from_secs(30),
    );
    assert_eq!(spawned.first_line, "listening on here");
    wait_until("the rest is read", Duration::from_secs(10), || {
        spawned.stdout.lock().expect("lock").as_str() == "listening on here\nmore\n"
            && spawned.stderr.lock().expect("lock").as_str() == "warned\n"
    });
    spawned.child.kill().expect("kill");
    spawned.child.wait().expect("wait");
}

#[test]
fn a_child_that_exits_first_is_reported_with_its_status_and_stderr() {
    let message = panic_message(|| {
        spawn_with_first_line(
            "a failing shell",
            Command::new("sh").args(["-c", "echo 'bad config' >&2; exit 3"]).stderr(Stdio::piped()),
            Duration::from_secs(30),
        );
    });
    assert!(message.contains("a failing shell exited"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("bad config"), "{message}");
}

#[test]
fn a_child_silent_past_the_timeout_is_killed_and_reported() {
    let directory = tempfile::tempdir().expect("tempdir");
    let pid_file = directory.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    let started = Instant::now();
    let message = panic_message(|| {
        spawn_with_first_line(
            "a silent shell",
            Command::new("sh").args(["-c", &script]).stderr(Stdio::null()),
            Duration::from_secs(2),
        );
    });
    assert!(message.contains("a silent shell printed no line within 2s"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout was kept");
    let pid: i32 = std::fs::read_to_string(&pid_file).expect("pid").trim().parse().expect("a pid");
    assert!(!process_alive(pid), "the silent child was killed");
}

#[test]
fn follow_finds_a_matching_line_and_fails_when_the_command_ends() {
    let follow =
        Follow::spawn("a counter", Command::new("sh").args(["-c", "for i in 1 2 3; do echo line $i; done"]));
    assert_eq!(follow.wait_for(Duration::from_secs(30), |line| line.ends_with('2')), "line 2");
    let message = panic_message(std::panic::AssertUnwindSafe(|| {
        follow.wait_for(Duration::from_secs(30), |line| line == "line 4");
    }));
    assert!(message.contains("a counter ended before printing a matching line"), "{message}");
}
