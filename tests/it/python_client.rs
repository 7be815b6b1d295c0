//! The Python client of `examples/python` against the real server: start, reach, read the
//! output, list (every page, by label), watch, stop. Needs the test venv, which the test command
//! (`scripts/test`) creates.

use std::process::Command;

use serde_json::json;

use crate::common::requests::{sleeper, start_request};
use crate::common::{self, Server};

#[test]
fn the_python_example_drives_a_process_end_to_end() {
    let server = Server::start();
    // Two more processes with the example's label, and one without, so that its listing of the
    // label takes three pages of one and leaves the other out.
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let mut client = server.client().await;
        for (name, labels) in [
            ("labelled-a", json!({"example": "python", "tier": "web"})),
            ("labelled-b", json!({"example": "python"})),
            ("unlabelled", json!({})),
        ] {
            let mut spec = sleeper(name);
            spec["labels"] = labels;
            client.start(start_request(spec)).await.expect("start");
        }
    });
    let output = Command::new(common::test_python())
        .arg(common::repo_root().join("examples/python/hydroplane_example.py"))
        .args(["--server", &server.address, "--name", "from-python", "--page-size", "1"])
        .output()
        .expect("run the Python example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the example failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("started from-python at 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("logged: 127.0.0.1 - - ["), "the request line of its output: {stdout}");
    assert!(stdout.contains("\"GET / HTTP/1.1\" 200"), "{stdout}");
    assert!(
        stdout.contains(
            ": ['from-python {example=python}', 'labelled-a {example=python,tier=web}', 'labelled-b {example=python}']"
        ),
        "every page of the labelled processes, with their labels: {stdout}"
    );
    assert!(stdout.contains("listed at revision "), "{stdout}");
    assert!(stdout.contains("WATCH_EVENT_TYPE_DELETED"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}
