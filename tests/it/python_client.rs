//! The Python client of `examples/python` against the real server: start, reach, read the
//! output, list, watch, stop. Needs the test venv, which the test command (`scripts/test`) creates.

use std::process::Command;

use crate::common::{self, Server};

#[test]
fn the_python_example_drives_a_process_end_to_end() {
    let server = Server::start();
    let output = Command::new(common::test_python())
        .arg(common::repo_root().join("examples/python/hydroplane_example.py"))
        .args(["--server", &server.address, "--name", "from-python"])
        .output()
        .expect("run the Python example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the example failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("started from-python at 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("logged: 127.0.0.1 - - ["), "the request line of its output: {stdout}");
    assert!(stdout.contains("\"GET / HTTP/1.1\" 200"), "{stdout}");
    assert!(stdout.contains("WATCH_EVENT_TYPE_DELETED"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}
