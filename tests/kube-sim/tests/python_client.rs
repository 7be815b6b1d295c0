//! The official Python `kubernetes` client against the simulator (python_client.py beside
//! this file). Needs the project's virtualenv: `HYDROPLANE_TEST_PYTHON`, or `.venv/bin/python`
//! at the workspace root, which the project's test command (`scripts/test`) creates from
//! `tests/requirements.txt`. A missing interpreter fails the test; it is never skipped.

mod common;

use std::path::PathBuf;

use common::Simulator;

fn python() -> PathBuf {
    let python = match std::env::var_os("HYDROPLANE_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    };
    assert!(
        python.exists(),
        "no Python interpreter at {}: run the project's test command (scripts/test), which creates .venv \
         from tests/requirements.txt, or set HYDROPLANE_TEST_PYTHON",
        python.display()
    );
    python
}

#[test]
fn python_client_lists_watches_resumes_and_sees_gone() {
    let python = python();
    let simulator = Simulator::start(&["--token", "py-token", "--pod-start-delay-ms", "60000"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(&simulator.kubeconfig)
        .arg(&simulator.url)
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("OK"),
        "python_client.py failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn python_client_trusts_the_generated_ca() {
    let python = python();
    let simulator = Simulator::start(&["--tls", "--token", "py-token"]);
    let script = "import sys\nfrom kubernetes import client, config\nconfig.load_kube_config(config_file=sys.argv[1])\nprint(' '.join(n.metadata.name for n in client.CoreV1Api().list_node().items))\n";
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&simulator.kubeconfig)
        .output()
        .expect("running the Python client");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "node-1 node-2 node-3");
}
