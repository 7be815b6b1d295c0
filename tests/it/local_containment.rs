//! The local runtime contains what it starts (issue 26), tried as a hostile process would: the
//! three escapes (a grandchild in its own session, a double fork, a command that kills its
//! supervisor) leave nothing running after a Stop, the server's SIGTERM or its SIGKILL; a process
//! starts with only the documented environment, its own descriptors 0, 1 and 2, and a working
//! directory of its own; the secret store's password is in neither its environment nor the
//! server's `/proc` entry; a state directory someone else controls stops the server; and with
//! `runtime.run_as_by_group`, one group's process cannot read or signal another's, nor the server.
//!
//! Processes are found through `/proc` by a marker in their command line: a `sleep` whose
//! duration is unique to the test.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::requests::{start_request, start_waiting, stop_process};
use crate::common::watch::Watch;
use crate::common::{Server, eventually, local_secret_store, wait_until};
use hydroplane::proto::{self, ProcessStatus};

/// The grace period of these tests' servers.
const GRACE: Duration = Duration::from_secs(1);

/// How long after a Stop or a server's death the tree may take to be gone.
fn budget() -> Duration {
    GRACE + Duration::from_secs(1)
}

/// A `sleep` argument no other test uses, to find processes by.
fn marker(name: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    // The name's length keeps two markers of one test apart.
    format!("7304.{}{:09}{}", std::process::id(), nanos, name.len())
}

/// The live processes whose command line holds `marker`.
fn marked(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(marker) && crate::common::process_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// The marked processes that are not supervisors: the command and its descendants.
fn commands(marker: &str) -> Vec<i32> {
    marked(marker)
        .into_iter()
        .filter(|pid| {
            !std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("__supervise"))
        })
        .collect()
}

/// Waits until the command marked with `marker` has become its final `sleep` (a shell's `exec
/// sleep MARKER` passes through forks and an exec, in which its `/proc` entry says little) and
/// returns the lowest such pid.
async fn settled_command(marker: &str) -> i32 {
    eventually(&format!("a `sleep {marker}` runs"), Duration::from_secs(20), async || {
        commands(marker)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "sleep")
            })
            .min()
    })
    .await
}

/// Waits until no process holds `marker`, within `budget` of `since`; fails naming them.
async fn assert_gone_by(marker: &str, since: Instant, budget: Duration, what: &str) {
    let what = format!("no process runs with `{marker}` {what}");
    eventually(&what, budget.saturating_sub(since.elapsed()), async || {
        let left = marked(marker);
        if left.is_empty() { Ok(()) } else { Err(left) }
    })
    .await;
}

/// The three escapes of issue 26, each a command (for `sh -c`) whose processes all hold the
/// marker, and the fourth, a grandchild that kills the supervisor and lives on.
fn escapes(marker: &str) -> Vec<(&'static str, String)> {
    vec![
        ("setsid", format!("setsid sh -c 'exec sleep {marker}' & exec sleep {marker}")),
        ("double-fork", format!("(sleep {marker} &) ; exec sleep {marker}")),
        ("kill-supervisor", format!("sleep 0.5; kill -9 $PPID; exec sleep {marker}")),
        (
            "kill-supervisor-grandchild",
            format!("(sleep 0.5; kill -9 $PPID; exec sleep {marker}) & exec sleep {marker}"),
        ),
    ]
}

fn server(directory: &Path) -> Server {
    Server::start_with_config(directory, "runtime:\n  runtime_type: local\n  stop_grace_seconds: 1\n")
}

fn escape_spec(name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({"process_name": name, "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sh", "-c", script]}})
}

/// Starts every escape with its own marker; returns (name, marker). Each runs (its marker is
/// seen) before this returns, except the supervisor killers' own commands, which die with it.
async fn start_escapes(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
) -> Vec<(&'static str, String)> {
    let mut started = Vec::new();
    for (index, name) in
        ["setsid", "double-fork", "kill-supervisor", "kill-supervisor-grandchild"].iter().enumerate()
    {
        let marker = format!("{}{index}", marker(name));
        let script = escapes(&marker).into_iter().find(|(escape, _)| escape == name).expect("an escape").1;
        client.start(start_waiting(escape_spec(name, &script))).await.expect("start");
        started.push((*name, marker));
    }
    for (name, marker) in &started {
        eventually(&format!("{name} runs"), Duration::from_secs(20), async || !marked(marker).is_empty())
            .await;
    }
    started
}

#[tokio::test(flavor = "multi_thread")]
async fn no_escape_outlives_its_stop_and_a_killed_supervisor_is_not_failed_while_its_tree_runs() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = server(directory.path());
    let mut client = server.client().await;
    let started = start_escapes(&mut client).await;
    for (name, marker) in &started {
        if name.starts_with("kill-supervisor") {
            // The supervisor dies half a second in: the status says so only once the tree is gone.
            let mut watch = Watch::process(&mut client, name).await;
            let failed = watch
                .until_process(name, "failed", |_, process| process.status() == ProcessStatus::Failed)
                .await;
            assert_eq!(failed.reason(), "SupervisorKilled", "{failed:?}");
            assert!(marked(marker).is_empty(), "{name} is FAILED while {:?} still run", marked(marker));
        }
        let begin = Instant::now();
        let stopped = client.stop(stop_process(name)).await.expect("stop").into_inner().stopped;
        assert_eq!(stopped, [name.to_string()]);
        assert!(begin.elapsed() <= budget(), "stopping {name} took {:?}", begin.elapsed());
        assert_gone_by(marker, begin, budget(), &format!("after the Stop of {name}")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_escape_outlives_the_servers_sigterm() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut server = server(directory.path());
    let mut client = server.client().await;
    let started = start_escapes(&mut client).await;
    drop(client);
    let begin = Instant::now();
    assert_eq!(server.terminate(), Some(0), "a clean exit after SIGTERM");
    for (name, marker) in &started {
        assert_gone_by(marker, begin, budget(), &format!("{name}, after the server's SIGTERM")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_escape_outlives_the_servers_sigkill() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = server(directory.path());
    let mut client = server.client().await;
    let started = start_escapes(&mut client).await;
    let run_cgroup = cgroup_directory(settled_command(&started[0].1).await)
        .parent()
        .expect("the run's cgroup")
        .to_path_buf();
    drop(client);
    let begin = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL the server");
    for (name, marker) in &started {
        assert_gone_by(marker, begin, budget(), &format!("{name}, after the server's SIGKILL")).await;
    }
    // The dead server's cgroups are empty now, and the next server's start tidies them away
    // (once the server is reaped: a zombie's pid is still taken).
    drop(server);
    assert!(run_cgroup.exists(), "{}", run_cgroup.display());
    let _next = Server::start();
    assert!(!run_cgroup.exists(), "{} is left", run_cgroup.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn under_run_as_a_command_cannot_kill_its_supervisor_so_the_servers_sigkill_leaves_nothing() {
    // Sharing the server's user, a grandchild that kills its supervisor the moment before the
    // server is SIGKILLed outlives both (docs/local-runtime-security.md); under run_as the kill
    // itself is refused.
    let users = TestUsers::create(1);
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(
        directory.path(),
        &format!("runtime:\n  runtime_type: local\n  stop_grace_seconds: 1\n  run_as: {}\n", users.0[0]),
    );
    let mut client = server.client().await;
    let marker = marker("race");
    let script = format!("(kill -9 $PPID; echo $? > tried; exec sleep {marker}) & exec sleep {marker}");
    client.start(start_waiting(escape_spec("race", &script))).await.expect("start");
    eventually("the grandchild tried", Duration::from_secs(20), async || {
        commands(&marker).first().is_some_and(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.join("tried").exists())
        })
    })
    .await;
    let supervisors = marked(&marker).len() - commands(&marker).len();
    assert_eq!(supervisors, 1, "the supervisor outlived its command's kill -9");
    let begin = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL the server");
    assert_gone_by(&marker, begin, budget(), "after the server's SIGKILL").await;
    drop(users);
}

/// Starts a server with a local secret store opened through the password variable, and a
/// variable of its own no process may see.
fn server_with_store(directory: &Path, password: &str) -> Server {
    let store = directory.join("store");
    let output = local_secret_store(password).arg("--store").arg(&store).arg("init").output().expect("init");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let config = directory.join("hydroplane.yml");
    std::fs::write(
        &config,
        format!(
            "secret_store:\n  secret_store_type: local\n  store_location: {}\nruntime:\n  runtime_type: local\n  \
             stop_grace_seconds: 1\n",
            store.display()
        ),
    )
    .expect("config");
    Server::start_with_env(
        &["-c", config.to_str().expect("utf-8")],
        &[("HYDROPLANE_SECRET_STORE_PASSWORD", password), ("SERVER_ONLY_SETTING", "server-only-value")],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_sees_only_the_documented_environment_and_the_password_is_gone_from_proc() {
    let directory = tempfile::tempdir().expect("tempdir");
    let password = "pw-not-for-processes-4242";
    let server = server_with_store(directory.path(), password);
    let mut client = server.client().await;
    let marker = marker("environment");
    let out = directory.path().join("seen");
    let script = format!(
        "cat /proc/self/environ > {out}.own; cat /proc/{server}/environ > {out}.server 2>&1; touch {out}.done; \
         exec sleep {marker}",
        out = out.display(),
        server = server.pid()
    );
    let spec = serde_json::json!({"process_name": "env", "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sh", "-c", script], "env": [{"name": "FROM_SPEC", "value": "yes"}]}});
    client.start(start_waiting(spec)).await.expect("start");
    eventually("the process ran", Duration::from_secs(20), async || {
        Path::new(&format!("{}.done", out.display())).exists()
    })
    .await;

    // What the command itself was given (sh's own variables aside).
    let command = settled_command(&marker).await;
    let environ = std::fs::read(format!("/proc/{command}/environ")).expect("the command's environ");
    let names: BTreeSet<String> = environ
        .split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).split('=').next().unwrap_or_default().to_owned())
        .collect();
    let allowed: BTreeSet<&str> = hydroplane::config::DEFAULT_ENV_PASSTHROUGH
        .iter()
        .copied()
        .chain(["FROM_SPEC", "PWD", "SHLVL", "_", "OLDPWD"])
        .collect();
    let extra: Vec<&String> = names.iter().filter(|name| !allowed.contains(name.as_str())).collect();
    assert!(extra.is_empty(), "the process got the server's {extra:?}");
    assert!(names.contains("FROM_SPEC") && names.contains("PATH"), "{names:?}");
    let own = std::fs::read_to_string(format!("{}.own", out.display())).expect("own environ");
    assert!(!own.contains("SERVER_ONLY_SETTING") && !own.contains(password), "{own}");

    // The server's /proc entry, read by the process (as root here, so it may read it) and by the test.
    let seen =
        std::fs::read(format!("{}.server", out.display())).expect("server environ as the process saw it");
    let server_environ = std::fs::read(format!("/proc/{}/environ", server.pid())).expect("server environ");
    for bytes in [&seen, &server_environ] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(password), "the password is readable from /proc/<server>/environ");
        assert!(!text.contains("HYDROPLANE_SECRET_STORE_PASSWORD"), "the variable is still shown");
    }
    assert!(
        String::from_utf8_lossy(&server_environ).contains("SERVER_ONLY_SETTING"),
        "the test reads the right entry"
    );
    // And the store opened with it.
    assert!(server.stderr().contains("serving"), "{}", server.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_has_only_descriptors_0_1_and_2_and_a_private_working_directory() {
    let directory = tempfile::tempdir().expect("tempdir");
    // The test leaves a descriptor open across exec, as a careless parent of the server would.
    let leaked =
        std::fs::File::open("/etc/hostname").or_else(|_| std::fs::File::open("/etc/passwd")).expect("a file");
    rustix::io::fcntl_setfd(&leaked, rustix::io::FdFlags::empty()).expect("clear close-on-exec");
    let server = server(directory.path());
    let mut client = server.client().await;
    let marker = marker("descriptors");
    let spec = serde_json::json!({"process_name": "fds", "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sleep", marker]}});
    client.start(start_waiting(spec)).await.expect("start");
    let command = settled_command(&marker).await;
    let server_fds: Vec<String> = list(&format!("/proc/{}/fd", server.pid()));
    assert!(server_fds.len() > 3, "the server itself holds the leaked descriptor and more: {server_fds:?}");
    assert_eq!(list(&format!("/proc/{command}/fd")), ["0", "1", "2"]);

    let cwd = std::fs::read_link(format!("/proc/{command}/cwd")).expect("cwd");
    assert!(cwd.ends_with("work/fds.1"), "{}", cwd.display());
    assert!(
        cwd.to_string_lossy().contains("/hydroplane/logs/run-"),
        "under the state directory: {}",
        cwd.display()
    );
    assert_eq!(std::fs::metadata(&cwd).expect("cwd").permissions().mode() & 0o777, 0o700);
    client.stop(stop_process("fds")).await.expect("stop");
    assert!(!cwd.exists(), "the working directory goes with the Stop");
    drop(leaked);
}

fn list(directory: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("list")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|name| name.parse::<i64>().unwrap_or(i64::MAX));
    names
}

/// Runs the server with no `XDG_STATE_HOME` nor `HOME`, so that its state goes under
/// `$TMPDIR/hydroplane-<uid>`; returns its exit code and stderr (it must refuse at once).
fn refused_start(temporary: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0"])
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .env("TMPDIR", temporary)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
        .wait_with_output()
        .expect("wait");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_state_directory_another_user_controls_stops_the_server_with_one_line_naming_it() {
    let temporary = tempfile::tempdir().expect("tempdir");
    let state = temporary.path().join(format!("hydroplane-{}", nix::unistd::geteuid()));
    let stranger = 54321;

    // Created first by someone else.
    std::fs::create_dir(&state).expect("mkdir");
    std::os::unix::fs::chown(&state, Some(stranger), Some(stranger)).expect("chown");
    let (code, stderr) = refused_start(temporary.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("{} belongs to user id {stranger}", state.display())), "{stderr}");

    // Ours, but with someone else's symbolic link planted where the logs go.
    std::os::unix::fs::chown(&state, Some(nix::unistd::geteuid().as_raw()), None).expect("chown back");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let elsewhere = temporary.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let link = state.join("logs");
    std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(stranger), Some(stranger)).expect("lchown");
    let (code, stderr) = refused_start(temporary.path());
    assert_eq!((code, stderr.lines().count()), (Some(1), 1), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is a symbolic link that belongs to user id {stranger}", link.display())),
        "{stderr}"
    );

    // Ours, but writable by everyone.
    std::fs::remove_file(&link).expect("rm link");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, stderr) = refused_start(temporary.path());
    assert_eq!((code, stderr.lines().count()), (Some(1), 1), "{stderr}");
    assert!(stderr.contains(&format!("{} is writable by other users", state.display())), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("elsewhere").count(),
        0,
        "nothing was written through the link"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_state_directory_is_private() {
    let temporary = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(temporary.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("sticky, as /tmp");
    let mut server = Server::start_with_env(
        &[],
        &[("XDG_STATE_HOME", ""), ("HOME", ""), ("TMPDIR", temporary.path().to_str().expect("utf-8"))],
    );
    let state = temporary.path().join(format!("hydroplane-{}", nix::unistd::geteuid()));
    for directory in [state.clone(), state.join("logs")] {
        let metadata = std::fs::metadata(&directory).expect("made");
        assert_eq!(metadata.mode() & 0o777, 0o700, "{}", directory.display());
        assert_eq!(metadata.uid(), nix::unistd::geteuid().as_raw());
    }
    assert_eq!(server.terminate(), Some(0));
}

/// Two Unix users made for one test, removed when it ends (also when it fails).
struct TestUsers(Vec<String>);

impl TestUsers {
    fn create(count: usize) -> TestUsers {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it creates Unix users and runs processes as them"
        );
        let mut users = TestUsers(Vec::new());
        for index in 0..count {
            let name = format!("hp{}x{index}", std::process::id());
            let status = Command::new("useradd")
                .args(["--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", &name])
                .status()
                .expect("run useradd");
            assert!(status.success(), "useradd {name}");
            users.0.push(name);
        }
        users
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("userdel").arg(name).stderr(Stdio::null()).status();
        }
    }
}

/// Logs of one process, from its beginning, without following.
fn logs_of(name: &str) -> proto::LogsRequest {
    proto::LogsRequest { process_name: name.to_owned(), ..Default::default() }
}

/// The uid a process runs as, from `/proc/PID/status`.
fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("a uid")
}

#[tokio::test(flavor = "multi_thread")]
async fn with_run_as_by_group_one_groups_process_cannot_read_or_signal_anothers_nor_the_server() {
    let users = TestUsers::create(2);
    let (user_a, user_b) = (&users.0[0], &users.0[1]);
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(
        directory.path(),
        &format!(
            "runtime:\n  runtime_type: local\n  stop_grace_seconds: 1\n  output_buffer_bytes: 1024\n  \
             run_as_by_group:\n    team-a: {user_a}\n    team-*: {user_b}\n"
        ),
    );
    assert!(!server.stderr().contains("run as the server's own user"), "{}", server.stderr());
    let mut client = server.client().await;

    // B: a secret in its environment, output on disk, a file in its working directory.
    let marker_b = marker("team-b");
    let spec_b = serde_json::json!({"process_name": "b", "group": "team-b", "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sh", "-c", format!("echo b-output; yes b-line | head -n 500; echo b-file > mine; exec sleep {marker_b}")],
            "env": [{"name": "B_SECRET", "value": "b-secret-value"}]}});
    client.start(start_waiting(spec_b)).await.expect("start b");
    eventually("b runs", Duration::from_secs(20), async || !marked(&marker_b).is_empty()).await;
    let b = settled_command(&marker_b).await;
    let b_cwd = std::fs::read_link(format!("/proc/{b}/cwd")).expect("b's cwd");
    eventually("b wrote its file", Duration::from_secs(20), async || b_cwd.join("mine").exists()).await;
    let run_directory = b_cwd.parent().and_then(Path::parent).expect("the run directory").to_path_buf();
    eventually("b's output is on disk", Duration::from_secs(20), async || {
        std::fs::read_dir(run_directory.join("b.1")).is_ok_and(|mut entries| entries.next().is_some())
    })
    .await;
    let b_output: Vec<PathBuf> = std::fs::read_dir(run_directory.join("b.1"))
        .expect("b's output")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    let b_supervisor = std::fs::read_to_string(format!("/proc/{b}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
        })
        .expect("b's parent");

    // A probes B and the server, each probe's exit status on one line, in its own directory.
    let marker_a = marker("team-a-probe");
    let probes = [
        ("environ", format!("cat /proc/{b}/environ")),
        ("supervisor-environ", format!("cat /proc/{b_supervisor}/environ")),
        ("server-environ", format!("cat /proc/{}/environ", server.pid())),
        ("working-dir", format!("ls {}", b_cwd.display())),
        ("working-file", format!("cat {}/mine", b_cwd.display())),
        ("kill", format!("kill -0 {b}")),
        ("kill-supervisor", format!("kill -0 {b_supervisor}")),
        ("kill-server", format!("kill -0 {}", server.pid())),
    ];
    let mut script: String = probes
        .iter()
        .map(|(name, probe)| format!("{probe} >/dev/null 2>&1; echo {name} $? >> probes; "))
        .collect();
    for (index, file) in b_output.iter().enumerate() {
        script
            .push_str(&format!("cat {} >/dev/null 2>&1; echo output-{index} $? >> probes; ", file.display()));
    }
    script.push_str(&format!("echo done >> probes; exec sleep {marker_a}"));
    let spec_a = serde_json::json!({"process_name": "a", "group": "team-a", "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sh", "-c", script]}});
    client.start(start_waiting(spec_a)).await.expect("start a");
    eventually("a ran its probes", Duration::from_secs(20), async || !marked(&marker_a).is_empty()).await;
    let a = settled_command(&marker_a).await;
    let probes_file = std::fs::read_link(format!("/proc/{a}/cwd")).expect("a's cwd").join("probes");
    eventually("a's probes are written", Duration::from_secs(20), async || {
        std::fs::read_to_string(&probes_file).is_ok_and(|text| text.contains("done"))
    })
    .await;
    let results = std::fs::read_to_string(&probes_file).expect("probes");

    // Each probe failed, and each would have worked for the server's user (root).
    let uid = |name: &str| nix::unistd::User::from_name(name).expect("lookup").expect("user").uid.as_raw();
    assert_eq!((uid_of(a), uid_of(b)), (uid(user_a), uid(user_b)), "each group runs as its user");
    assert!(!b_output.is_empty(), "b has output files");
    for line in results.lines().filter(|line| *line != "done") {
        let (name, status) = line.split_once(' ').expect("a probe line");
        assert_ne!(status, "0", "a's process could `{name}` of b's or the server's:\n{results}");
    }
    assert_eq!(results.lines().count(), probes.len() + b_output.len() + 1, "{results}");
    assert!(
        std::fs::read(format!("/proc/{b}/environ"))
            .expect("root reads it")
            .windows(14)
            .any(|w| w == b"b-secret-value")
    );
    for file in &b_output {
        // The server's own record of the output, not the process's: its user writes and reads
        // it (for Logs), and no process's user may (docs/local-runtime-security.md).
        let metadata = std::fs::metadata(file).expect("output file");
        assert_eq!(metadata.mode() & 0o077, 0, "{} is private", file.display());
        assert_eq!(metadata.uid(), nix::unistd::geteuid().as_raw(), "{} is the server's", file.display());
    }
    // The memory buffer (1 KiB) kept only the newest output: Logs read the rest from those files.
    let mut stream = client.logs(logs_of("b")).await.expect("logs").into_inner();
    let mut logged = Vec::new();
    while let Some(chunk) = stream.message().await.expect("the Logs stream ends with OK") {
        logged.extend(chunk.data);
    }
    let logged = String::from_utf8_lossy(&logged);
    assert!(logged.starts_with("b-output\nb-line\n"), "{logged:.100}");
    assert_eq!(logged.matches("b-line\n").count(), 500, "all of b's output");
    assert_eq!(std::fs::metadata(&b_cwd).expect("cwd").uid(), uid(user_b), "b owns its working directory");
    for name in ["a", "b"] {
        client.stop(stop_process(name)).await.expect("stop");
    }
    drop(client);
    drop(server);
    drop(users);
}

#[test]
fn without_run_as_check_and_the_start_up_log_say_that_processes_share_the_servers_user() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("hydroplane.yml");
    std::fs::write(&path, "runtime:\n  runtime_type: local\n").expect("config");
    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("check");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.trim_end().ends_with("run_as: the server's user)"), "{stdout}");
    assert!(
        stderr.contains("local processes will run as the server's own user")
            && stderr.contains("tokens restricted to groups isolate the API, not the processes"),
        "{stderr}"
    );

    let server = Server::start_with_config(directory.path(), "runtime:\n  runtime_type: local\n");
    // The log line was written before the address; its pipe is read by another thread.
    wait_until("the start-up log says so", Duration::from_secs(10), || {
        server.stderr().contains("local processes run as the server's own user")
    });
}

/// A Unix group made for one test, with the given users as members; removed when it ends.
struct TestGroup(String);

impl TestGroup {
    fn create(members: &[String]) -> TestGroup {
        let name = format!("hp{}g", std::process::id());
        let status = Command::new("groupadd").arg(&name).status().expect("run groupadd");
        assert!(status.success(), "groupadd {name}");
        let group = TestGroup(name);
        for member in members {
            let status = Command::new("usermod")
                .args(["--append", "--groups", &group.0, member])
                .status()
                .expect("usermod");
            assert!(status.success(), "usermod --append --groups {} {member}", group.0);
        }
        group
    }

    fn gid(&self) -> u32 {
        nix::unistd::Group::from_name(&self.0).expect("lookup").expect("group").gid.as_raw()
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).stderr(Stdio::null()).status();
    }
}

/// The ids of one line of `/proc/PID/status` (`Gid:`, `Groups:`).
fn status_ids(pid: i32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|ids| ids.split_whitespace().filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn under_run_as_a_process_and_its_checks_have_the_users_supplementary_groups() {
    let users = TestUsers::create(1);
    let user = &users.0[0];
    let group = TestGroup::create(std::slice::from_ref(user));
    // A file only the group may read, in a directory anyone may cross.
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let file = shared.path().join("for-the-group");
    std::fs::write(&file, "group-only-content").expect("write");
    std::os::unix::fs::chown(&file, Some(0), Some(group.gid())).expect("chown");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(
        directory.path(),
        &format!("runtime:\n  runtime_type: local\n  stop_grace_seconds: 1\n  run_as: {user}\n"),
    );
    let mut client = server.client().await;
    let marker = marker("groups");
    let spec = serde_json::json!({"process_name": "member", "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sh", "-c", format!("cat {} > copy; exec sleep {marker}", file.display())]},
        // Ready only when the check, as the process's user, can read the file too.
        "readiness": {"exec": {"command": ["test", "-r", file.to_str().expect("utf-8")]}, "period_seconds": 1, "failure_threshold": 1}});
    let mut watch = Watch::process(&mut client, "member").await;
    client.start(start_request(spec)).await.expect("start");
    let ready = watch
        .until_process("member", "readiness", |_, info| {
            matches!(info.status(), ProcessStatus::Running | ProcessStatus::Failed)
        })
        .await;
    assert_eq!(ready.status(), ProcessStatus::Running, "{ready:?}");
    let command = settled_command(&marker).await;

    let own = nix::unistd::User::from_name(user).expect("lookup").expect("user");
    assert_eq!(uid_of(command), own.uid.as_raw());
    assert_eq!(status_ids(command, "Gid:")[0], own.gid.as_raw());
    let groups: BTreeSet<u32> = status_ids(command, "Groups:").into_iter().collect();
    assert_eq!(groups, BTreeSet::from([own.gid.as_raw(), group.gid()]), "only the user's own groups");
    let cwd = std::fs::read_link(format!("/proc/{command}/cwd")).expect("cwd");
    assert_eq!(std::fs::read_to_string(cwd.join("copy")).expect("the copy"), "group-only-content");
    client.stop(stop_process("member")).await.expect("stop");
    drop(client);
    drop(server);
    drop(group);
    drop(users);
}

/// The cgroup2 path `/proc/PID/cgroup` gives a process.
fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("cgroup")
        .lines()
        .find_map(|line| line.strip_prefix("0::").map(str::to_owned))
        .expect("a cgroup2 line")
}

/// The directory of a process's cgroup in the cgroup2 hierarchy.
fn cgroup_directory(pid: i32) -> PathBuf {
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .find(|line| line.contains(" - cgroup2 "))
        .and_then(|line| line.split_whitespace().nth(4).map(PathBuf::from))
        .expect("a cgroup2 mount");
    mount.join(cgroup_of(pid).trim_start_matches('/'))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_orphaned_as_the_server_is_sigkilled_is_ended_by_the_next_servers_start() {
    // The gap of docs/local-runtime-security.md, made certain: the server is stopped (SIGSTOP)
    // so it cannot reap, a grandchild kills its supervisor, then the server is SIGKILLed. The
    // grandchild is init's now; only its cgroup still says whose it was.
    let directory = tempfile::tempdir().expect("tempdir");
    // The next server finds the dead one's cgroups through the log_dir they share.
    let config = format!(
        "runtime:\n  runtime_type: local\n  stop_grace_seconds: 1\n  log_dir: {}\n",
        directory.path().join("logs").display()
    );
    let first = Server::start_with_config(directory.path(), &config);
    let mut client = first.client().await;
    let marker = marker("orphaned");
    let script = format!(
        "(while [ ! -e go ]; do sleep 0.05; done; kill -9 $PPID; exec sleep {marker}) & exec sleep {marker}"
    );
    client.start(start_waiting(escape_spec("orphaned", &script))).await.expect("start");
    let command = settled_command(&marker).await;
    let own_cgroup = cgroup_of(command);
    assert!(
        own_cgroup.ends_with(&format!("/hydroplane-{}/orphaned.1", first.pid())),
        "the process has a cgroup of its own: {own_cgroup}"
    );
    let cwd = std::fs::read_link(format!("/proc/{command}/cwd")).expect("cwd");
    drop(client);

    let server_pid = nix::unistd::Pid::from_raw(first.pid());
    nix::sys::signal::kill(server_pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP the server");
    std::fs::write(cwd.join("go"), "").expect("go");
    // The supervisor dies (a zombie of the stopped server), and its command with it.
    eventually("only the grandchild is left", Duration::from_secs(20), async || {
        let left = marked(&marker);
        left.len() == 1
            && std::fs::read(format!("/proc/{}/cmdline", left[0]))
                .is_ok_and(|cmdline| cmdline.starts_with(b"sleep\0"))
    })
    .await;
    nix::sys::signal::kill(server_pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the server");
    eventually("the server is gone", Duration::from_secs(20), async || {
        !crate::common::process_alive(first.pid())
    })
    .await;
    let orphan = marked(&marker)[0];
    assert_eq!(cgroup_of(orphan), own_cgroup, "the orphan is still in the process's cgroup");
    drop(first);
    assert_eq!(marked(&marker), [orphan], "no server is left to end it");

    let begin = Instant::now();
    let second = Server::start_with_config(directory.path(), &config);
    assert_gone_by(&marker, begin, budget(), "after the next server's start").await;
    eventually("the next server says so", Duration::from_secs(10), async || {
        second.stderr().contains("killed the processes that a server now gone left running in its cgroups")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_process_leaves_no_cgroup_behind() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut server = server(directory.path());
    let mut client = server.client().await;
    let marker = marker("cgroup");
    let spec = serde_json::json!({"process_name": "grouped", "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sleep", marker]}});
    client.start(start_waiting(spec)).await.expect("start");
    let cgroup = cgroup_directory(settled_command(&marker).await);
    assert!(cgroup.join("cgroup.procs").exists(), "{}", cgroup.display());
    client.stop(stop_process("grouped")).await.expect("stop");
    assert!(!cgroup.exists(), "the Stop removed {}", cgroup.display());
    drop(client);
    assert_eq!(server.terminate(), Some(0));
    assert!(
        !cgroup.parent().expect("the run's cgroup").exists(),
        "the server's SIGTERM removed its run's cgroup"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_root_still_contains_its_processes_and_keeps_its_secrets_from_them() {
    // No run_as and no cgroups (the hierarchy is root's): the subreapers, the parent-death
    // signal, the lifeline, the clean start and the non-dumpable server are all that hold.
    let users = TestUsers::create(1);
    let user = nix::unistd::User::from_name(&users.0[0]).expect("lookup").expect("user");
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let directory = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(directory.path(), Some(uid), Some(gid)).expect("chown");
    let config = directory.path().join("hydroplane.yml");
    std::fs::write(&config, "runtime:\n  runtime_type: local\n  stop_grace_seconds: 1\n").expect("config");
    let password = "pw-of-an-unprivileged-server-4242";
    let server = Server::start_as(
        Some((uid, gid)),
        &["-c", config.to_str().expect("utf-8")],
        &[("HYDROPLANE_SECRET_STORE_PASSWORD", password), ("HOME", "/nonexistent")],
    );
    assert_eq!(uid_of(server.pid()), uid, "the server runs unprivileged");
    // Logged before the address; its pipe is read by another thread.
    eventually("the server says it has no cgroups", Duration::from_secs(10), async || {
        server.stderr().contains("no cgroup per local process")
    })
    .await;
    let mut client = server.client().await;

    // A process of the server's own user probes the server.
    let marker_probe = marker("unprivileged-probe");
    let script = format!(
        "cat /proc/{server}/environ >/dev/null 2>&1; echo environ $? >> probes; \
         ls /proc/{server}/fd >/dev/null 2>&1; echo fd $? >> probes; \
         ls /proc/self/fd > fds; tr '\\0' '\\n' < /proc/self/environ > environ; \
         echo done >> probes; exec sleep {marker_probe}",
        server = server.pid()
    );
    client.start(start_waiting(escape_spec("probe", &script))).await.expect("start the probe");
    let probe = settled_command(&marker_probe).await;
    assert_eq!(uid_of(probe), uid);
    let cwd = std::fs::read_link(format!("/proc/{probe}/cwd")).expect("cwd");
    eventually("the probes are written", Duration::from_secs(20), async || {
        std::fs::read_to_string(cwd.join("probes")).is_ok_and(|text| text.contains("done"))
    })
    .await;
    let probes = std::fs::read_to_string(cwd.join("probes")).expect("probes");
    assert!(
        probes.contains("environ 1") && probes.contains("fd 2"),
        "the server's /proc entries are closed to its own user's processes:\n{probes}"
    );
    let environ = std::fs::read_to_string(cwd.join("environ")).expect("environ");
    assert!(!environ.contains(password) && !environ.contains("HYDROPLANE_"), "{environ}");
    // `ls` opened the directory it lists: 3 is its own.
    let fds: Vec<String> =
        std::fs::read_to_string(cwd.join("fds")).expect("fds").lines().map(str::to_owned).collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "only stdin, stdout and stderr are inherited");
    let server_environ = std::fs::read(format!("/proc/{}/environ", server.pid())).expect("root reads it");
    assert!(!String::from_utf8_lossy(&server_environ).contains(password), "the password is wiped");

    // The escapes: one stopped, the others ended by the server's SIGKILL.
    let started = start_escapes(&mut client).await;
    for name in ["kill-supervisor", "kill-supervisor-grandchild"] {
        let mut watch = Watch::process(&mut client, name).await;
        watch.until_process(name, "failed", |_, process| process.status() == ProcessStatus::Failed).await;
    }
    let (name, marker) = &started[0];
    let begin = Instant::now();
    client.stop(stop_process(name)).await.expect("stop");
    assert_gone_by(marker, begin, budget(), &format!("after the Stop of {name}, unprivileged")).await;
    drop(client);
    let begin = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL the server");
    for marker in started.iter().map(|(_, marker)| marker).chain([&marker_probe]) {
        assert_gone_by(marker, begin, budget(), "after the unprivileged server's SIGKILL").await;
    }
    drop(server);
    drop(users);
}
