//! What the simulator's benchmarks share: starting the release simulator on a free loopback port
//! with a kube-rs client for it, and reading a process's resident memory.

// Each benchmark is its own crate and uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

// The root benchmarks' reader, so that both measure memory alike.
#[path = "../../../../benches/common/memory.rs"]
mod memory;
// Not every benchmark reads memory.
#[allow(unused_imports)]
pub use memory::rss_mib;

/// The running simulator, killed when dropped (also when the benchmark panics), with the
/// temporary directory of its kubeconfig.
pub struct Simulator {
    child: Child,
    _directory: tempfile::TempDir,
    /// Its first line of output: `listening on URL`.
    pub first_line: String,
}

impl Simulator {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the simulator with these extra arguments; answers it, once it listens, and a client
/// of the kubeconfig it wrote.
pub async fn start(args: &[&str]) -> (Simulator, kube::Client) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = directory.path().join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting kube-sim");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first_line).expect("reading stdout");
    let simulator = Simulator { child, _directory: directory, first_line: first_line.trim().to_owned() };
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    (simulator, kube::Client::try_from(config).expect("client"))
}
