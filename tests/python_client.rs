//! The Python client of `examples/python` against the real server: start, reach, list, watch,
//! stop. Needs the test venv, which the test command (`scripts/test`) creates.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;

fn test_python() -> PathBuf {
    let python = std::env::var_os("HYDROPLANE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run the test command, scripts/test, which creates the Python test venv",
        python.display()
    );
    python
}

#[test]
fn the_python_example_drives_a_process_end_to_end() {
    let server = Server::start();
    let output = Command::new(test_python())
        .arg(common::repo_root().join("examples/python/hydroplane_example.py"))
        .args(["--server", &server.address, "--name", "from-python"])
        .output()
        .expect("run the Python example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the example failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("started from-python at 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("WATCH_EVENT_TYPE_DELETED"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}
