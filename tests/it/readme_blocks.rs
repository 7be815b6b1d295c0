//! Every block of the README and of the pages in `docs/` that starts a server in the background
//! (`hydroplane ... &`), pasted whole into a shell: each runs as a bash script (`set -e`), in a
//! directory of its own, with the test binaries for `target/release/...` and on `PATH`, and free
//! ports for the ones it names; then what it printed is checked. Blocks for the local runtime run
//! as they are; the Kubernetes quickstart runs against the simulator (through `KUBECONFIG`, as
//! the README says a kubeconfig is found). The TLS recipe of `docs/securing-the-api.md` is run by
//! `tls_setup`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, KubeSim, free_port};

/// A `sh` block of the documentation and the section it is in.
pub struct Block {
    /// The file it is in, relative to the repository's root (`README.md`, `docs/hpctl.md`).
    pub file: String,
    /// The nearest heading above it, without its `#`s.
    pub section: String,
    /// The block's lines.
    pub code: String,
}

/// The documents whose blocks are read: the README and the pages of `docs/`, in name order.
pub fn documents() -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(common::repo_root().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    std::iter::once("README.md".to_owned()).chain(pages).collect()
}

/// The `sh` blocks of the README and of the pages of `docs/`.
pub fn sh_blocks() -> Vec<Block> {
    documents().into_iter().flat_map(|file| sh_blocks_of(&file)).collect()
}

/// The `sh` blocks of one document.
fn sh_blocks_of(file: &str) -> Vec<Block> {
    let text =
        std::fs::read_to_string(common::repo_root().join(file)).unwrap_or_else(|_| panic!("read {file}"));
    let mut blocks = Vec::new();
    let mut section = String::new();
    // Inside a fenced block: `Some(code)` of a `sh` one, `Some(None)` of any other.
    let mut fenced: Option<Option<String>> = None;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        match &mut fenced {
            Some(code) if fence => {
                if let Some(code) = code.take() {
                    blocks.push(Block { file: file.to_owned(), section: section.clone(), code });
                }
                fenced = None;
            }
            Some(Some(code)) => {
                code.push_str(line);
                code.push('\n');
            }
            Some(None) => {}
            None if fence => fenced = Some((line.trim_start() == "```sh").then(String::new)),
            None => {
                if let Some(heading) = heading(line) {
                    section = heading.to_owned();
                }
            }
        }
    }
    blocks
}

/// The text of a Markdown heading line (`## Quickstart` gives `Quickstart`), if it is one.
fn heading(line: &str) -> Option<&str> {
    let text = line.trim_start_matches('#');
    (text.len() < line.len() && line.len() - text.len() <= 6 && text.starts_with(' ')).then(|| text.trim())
}

/// Whether a block starts `hydroplane` in the background.
pub fn starts_a_server(code: &str) -> bool {
    code.lines().any(|line| {
        let command = line.split(" #").next().unwrap_or(line).trim_end();
        command.ends_with('&')
            && command.split_whitespace().next().is_some_and(|program| program.ends_with("hydroplane"))
    })
}

/// The documentation's block that starts a server under the heading `section`; panics when
/// there is none.
#[track_caller]
pub fn server_block(section: &str) -> String {
    sh_blocks()
        .into_iter()
        .find(|block| block.section == section && starts_a_server(&block.code))
        .unwrap_or_else(|| panic!("no block of the docs starts a server under `{section}`"))
        .code
}

/// What a block printed, and how it ended.
pub struct Ran {
    /// Its exit code.
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

/// The directory of the test binaries (`hydroplane`, `hpctl`).
fn binaries() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hydroplane")).parent().expect("a directory").to_owned()
}

/// Runs `code` as a bash script in `directory`: `cargo build` lines left out, `target/release/`
/// and `PATH` pointing at the test binaries, each `(from, to)` of `replace` applied, `after`
/// appended; background jobs are ended (SIGTERM) when it exits. Killed, with everything it
/// started, after two minutes or when the test fails.
pub fn run_script(
    code: &str,
    directory: &Path,
    replace: &[(String, String)],
    after: &str,
    environment: &[(&str, &str)],
) -> Ran {
    let binaries = binaries();
    let mut script = String::from(
        "set -euo pipefail\ntrap 'status=$?; kill $(jobs -p) 2>/dev/null || true; wait || true; exit $status' EXIT\n",
    );
    for line in code.lines() {
        if line.trim_start().starts_with("cargo build") {
            continue;
        }
        let mut line = line.replace("target/release/", &format!("{}/", binaries.display()));
        for (from, to) in replace {
            line = line.replace(from, to);
        }
        script.push_str(&line);
        script.push('\n');
    }
    script.push_str(after);
    let path = format!("{}:{}", binaries.display(), std::env::var("PATH").unwrap_or_default());
    let state = directory.join(".state");
    std::fs::create_dir_all(&state).expect("mkdir state");
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .current_dir(directory)
        .env("PATH", path)
        .env("XDG_STATE_HOME", &state)
        .env("XDG_CONFIG_HOME", &state)
        .env_remove("HYDROPLANE_SERVER")
        .env_remove("HYDROPLANE_TOKEN")
        .env_remove("HYDROPLANE_TOKEN_FILE")
        .env_remove("HYDROPLANE_CA_CERT")
        .env_remove("HPCTL_OUTPUT")
        .envs(environment.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let group = Group(child.id() as i32);
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break status;
        }
        if Instant::now() > deadline {
            drop(group);
            let _ = child.wait();
            panic!("the block did not finish within 2 minutes:\n{script}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(group);
    Ran {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A process group, killed when dropped: whatever a block left running.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Copies the repository's `examples/` into `directory`, each `(from, to)` of `replace` applied to
/// the JSON specs, so that a block's `examples/...` paths work there.
fn copy_examples(directory: &Path, replace: &[(String, String)]) {
    let examples = directory.join("examples");
    std::fs::create_dir_all(&examples).expect("mkdir examples");
    for entry in std::fs::read_dir(common::repo_root().join("examples")).expect("read examples") {
        let entry = entry.expect("an entry");
        if !entry.file_type().expect("a type").is_file() {
            continue;
        }
        let mut text = std::fs::read_to_string(entry.path()).expect("read an example");
        for (from, to) in replace {
            text = text.replace(from, to);
        }
        std::fs::write(examples.join(entry.file_name()), text).expect("write an example");
    }
}

#[track_caller]
fn assert_ran(ran: &Ran, what: &str) {
    assert_eq!(ran.code, Some(0), "{what} failed:\nstdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
}

#[test]
fn the_blocks_that_start_a_server_are_the_ones_tested_here() {
    let places: Vec<(String, String)> = sh_blocks()
        .into_iter()
        .filter(|block| starts_a_server(&block.code))
        .map(|block| (block.file, block.section))
        .collect();
    let expected = [
        ("README.md", "Quickstart (local runtime)"),
        ("README.md", "Quickstart (Kubernetes)"),
        ("docs/runtime-docker.md", "Quickstart (docker runtime)"),
        ("docs/securing-the-api.md", "Securing the API"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(file, section)| (file.to_string(), section.to_string())).collect();
    assert_eq!(places, expected);
    // In each, the first hpctl command after the server starts waits for it.
    for (_, section) in &places {
        let block = server_block(section);
        let first_hpctl = block
            .lines()
            .skip_while(|line| !starts_a_server(line))
            .find(|line| line.contains("hpctl "))
            .unwrap_or_else(|| panic!("{section}: no hpctl after the server starts"));
        assert!(first_hpctl.contains("hpctl wait-ready"), "{section}: {first_hpctl}");
    }
}

/// A free port for each port number a block uses, as replacements of one for the other. They run
/// one after another, so a port chosen for one must not hold another's number (36000 holds
/// 6000), or a later replacement would change it.
fn free_ports_for(originals: &[&str]) -> Vec<(String, String)> {
    let unlike_the_originals = || loop {
        let port = free_port().to_string();
        if !originals.iter().any(|original| port.contains(original)) {
            break port;
        }
    };
    originals.iter().map(|original| ((*original).to_owned(), unlike_the_originals())).collect()
}

#[test]
fn the_local_quickstart_works_pasted_whole() {
    let directory = tempfile::tempdir().expect("tempdir");
    let replace = free_ports_for(&["50051", "8000"]);
    let api_port = replace[0].1.clone();
    copy_examples(directory.path(), &replace);
    let block = server_block("Quickstart (local runtime)");
    assert!(block.contains("hydroplane &"), "{block}");
    // The server takes the port from the block's flags or its default: the default is replaced by
    // giving it explicitly.
    let mut replace = replace;
    replace.push(("hydroplane &".to_owned(), format!("hydroplane -p {api_port} &")));
    let environment = [("HYDROPLANE_SERVER", format!("http://127.0.0.1:{api_port}"))];
    let environment: Vec<(&str, &str)> =
        environment.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let ran = run_script(&block, directory.path(), &replace, "", &environment);
    assert_ran(&ran, "the local quickstart");
    assert!(ran.stdout.contains("\"status\": \"RUNNING\""), "{}", ran.stdout);
    assert!(ran.stdout.to_ascii_lowercase().contains("<!doctype html"), "curl's page: {}", ran.stdout);
    assert!(ran.stdout.contains("\"http-server\""), "stop's names: {}", ran.stdout);
}

#[test]
fn the_kubernetes_quickstart_works_pasted_whole_against_the_simulator() {
    let sim = KubeSim::start(&[]);
    let directory = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let replace = vec![("50051".to_owned(), api_port.to_string())];
    copy_examples(directory.path(), &replace);
    let block = server_block("Quickstart (Kubernetes)");
    let mut replace = replace;
    replace.push(("-c kube.yml &".to_owned(), format!("-c kube.yml -p {api_port} &")));
    let kubeconfig = sim.kubeconfig.clone();
    let server = format!("http://127.0.0.1:{api_port}");
    let environment =
        [("HYDROPLANE_SERVER", server.as_str()), ("KUBECONFIG", kubeconfig.to_str().expect("utf-8"))];
    let ran = run_script(&block, directory.path(), &replace, "", &environment);
    assert_ran(&ran, "the Kubernetes quickstart");
    assert!(ran.stdout.contains("\"process_name\": \"nginx\""), "{}", ran.stdout);
    assert!(ran.stdout.contains("\"nginx\""), "{}", ran.stdout);
}

/// The docker runtime's quickstart against the tests' engine (`common::docker`), with the
/// Python Hydroplane's examples: its names and ports made unique to this test (the engine's
/// container names and the host's ports are shared with the other tests), on a network of its own.
#[test]
fn the_docker_quickstart_works_pasted_whole() {
    let engine = common::docker::DockerNetwork::new("quickstart");
    let directory = tempfile::tempdir().expect("tempdir");
    let suffix = std::process::id();
    let api_port = free_port();
    let mut replace = free_ports_for(&["8080", "12347", "6000", "6100"]);
    for name in ["chat-server", "chat-client-alice", "chat-client-bob"] {
        replace.push((name.to_owned(), format!("{name}-{suffix}")));
    }
    replace.push(("\"process_name\": \"nginx\"".to_owned(), format!("\"process_name\": \"nginx-{suffix}\"")));
    replace.push(("hpctl stop nginx".to_owned(), format!("hpctl stop nginx-{suffix}")));
    replace.push((
        "runtime_type: docker".to_owned(),
        format!("runtime_type: docker\n  docker_host: {}\n  network: {}", engine.host, engine.network),
    ));
    let source = common::repo_root().join("examples/docker");
    for relative in [
        "basic-config.yml",
        "nginx.json",
        "chat/chat-server.json",
        "chat/chat-client-alice.json",
        "chat/chat-client-bob.json",
    ] {
        let mut text = std::fs::read_to_string(source.join(relative)).expect("read an example");
        let mut target = format!("examples/docker/{relative}");
        for (from, to) in &replace {
            text = text.replace(from, to);
            target = target.replace(from, to);
        }
        let target = directory.path().join(target);
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
        std::fs::write(target, text).expect("write an example");
    }
    let block = server_block("Quickstart (docker runtime)");
    replace.push((
        "-c examples/docker/basic-config.yml &".to_owned(),
        format!("-c examples/docker/basic-config.yml -p {api_port} &"),
    ));
    let server = format!("http://127.0.0.1:{api_port}");
    let ran = run_script(&block, directory.path(), &replace, "", &[("HYDROPLANE_SERVER", server.as_str())]);
    assert_ran(&ran, "the docker quickstart");
    assert!(ran.stdout.contains(&format!("nginx-{suffix}")), "{}", ran.stdout);
    assert!(ran.stdout.contains("hello from nginx"), "curl's page: {}", ran.stdout);
    assert!(ran.stdout.contains("server: welcome to the chat"), "alice's output: {}", ran.stdout);
    assert!(engine.containers().is_empty(), "{:?}", engine.containers());
}

#[test]
fn token_create_help_names_the_scopes_as_the_docs_do() {
    let page = std::fs::read_to_string(common::repo_root().join("docs/securing-the-api.md"))
        .expect("read docs/securing-the-api.md");
    assert!(page.contains("`read` (List, Watch, Describe, reflection), `write` (Start, Stop)"));
    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["token", "create", "--help"])
        .output()
        .expect("run hydroplane token create --help");
    let help = String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("read (List, Watch, Describe, reflection), write (Start, Stop)"), "{help}");
}

#[test]
fn a_server_that_needs_a_token_says_how_to_give_one_once() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    common::create_token(&tokens_file, "someone", "read", None);
    let server = common::Server::start_with_args(&["--tokens-file", tokens_file.to_str().expect("utf-8")]);
    let output = common::hpctl(&server, &["list"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: this server needs a token: "), "{stderr}");
    assert_eq!(stderr.matches("--token").count(), 1, "one hint: {stderr}");
}

#[test]
fn the_files_the_docs_have_people_make_in_the_checkout_are_ignored() {
    let names =
        ["kube.yml", "eks.yml", "creds.json", "tokens.yml", "tokens.yml.lock", "ca.pem", "ca-key.pem"];
    let output = Command::new("git")
        .args(["check-ignore", "--no-index"])
        .args(names.iter().chain(&["server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem"]))
        .current_dir(common::repo_root())
        .output()
        .expect("run git check-ignore");
    let ignored = String::from_utf8_lossy(&output.stdout);
    assert_eq!(ignored.lines().count(), names.len() + 4, "ignored: {ignored}");
}
