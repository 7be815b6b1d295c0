//! The `local-secret-store` binary end to end, in temporary directories: the EKS guide's commands,
//! wrong passwords, damaged files, permissions under any umask, secrecy of its output, writers
//! killed at random instants, and concurrent writers.
//!
//! Every run sets `HYDROPLANE_SECRET_STORE_TEST_ITERATIONS` so that a key takes microseconds, not
//! a second; the code paths are the same as with the full count.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hydroplane::secrets::{LocalSecretStore, Password, SecretError};
use ring::rand::{SecureRandom, SystemRandom};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_local-secret-store");
const PASSWORD_ENV: &str = "HYDROPLANE_SECRET_STORE_PASSWORD";
const NEW_PASSWORD_ENV: &str = "HYDROPLANE_SECRET_STORE_NEW_PASSWORD";
const ITERATIONS_ENV: &str = "HYDROPLANE_SECRET_STORE_TEST_ITERATIONS";
const TEST_ITERATIONS: &str = "1000";

const PASSWORD: &str = "correct horse battery staple";
const ACCESS_KEY_ID: &str = "AKIAEXAMPLEKEYID7Q3Z";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";

fn creds_json() -> String {
    format!(r#"{{"AccessKeyId":"{ACCESS_KEY_ID}","SecretAccessKey":"{SECRET_ACCESS_KEY}"}}"#)
}

/// A temporary home directory with a store in it, and a transcript of everything the binary
/// printed there except `get`'s standard output.
struct Fixture {
    home: TempDir,
    root: PathBuf,
    transcript: RefCell<Vec<u8>>,
}

/// What one run of the binary did.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Fixture {
    fn new() -> Fixture {
        let home = tempfile::tempdir().unwrap();
        let root = home.path().join(".hydro_secrets");
        Fixture { home, root, transcript: RefCell::default() }
    }

    /// A fixture with a store holding the guide's `aws-credentials`.
    fn with_credentials() -> Fixture {
        let fixture = Fixture::new();
        fixture.ok(Some(PASSWORD), &["init"]);
        fixture.write("creds.json", creds_json().as_bytes());
        fixture.ok(Some(PASSWORD), &["add", "-f", "creds.json", "aws-credentials"]);
        fixture
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.home().join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    /// The binary with a clean environment: no password unless given, and `HOME` and the working
    /// directory in the fixture, so the default `~/.hydro_secrets` is the fixture's store.
    fn command(&self, password: Option<&str>) -> Command {
        self.command_of(BIN, password)
    }

    /// [`Fixture::command`] for another program, such as a shell that then runs the binary.
    fn command_of(&self, program: &str, password: Option<&str>) -> Command {
        let mut command = Command::new(program);
        command
            .env_remove(PASSWORD_ENV)
            .env_remove(NEW_PASSWORD_ENV)
            .env("HOME", self.home())
            .env(ITERATIONS_ENV, TEST_ITERATIONS)
            .current_dir(self.home())
            .stdin(Stdio::null());
        if let Some(password) = password {
            command.env(PASSWORD_ENV, password);
        }
        command
    }

    fn run(&self, password: Option<&str>, args: &[&str]) -> Run {
        self.run_command(self.command(password), args, None)
    }

    fn run_command(&self, mut command: Command, args: &[&str], stdin: Option<&[u8]>) -> Run {
        command.args(args);
        let output = match stdin {
            None => command.output().unwrap(),
            Some(input) => {
                let mut child = command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(input).unwrap();
                child.wait_with_output().unwrap()
            }
        };
        self.record(args, &output);
        Run {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    fn record(&self, args: &[&str], output: &Output) {
        let mut transcript = self.transcript.borrow_mut();
        if !args.contains(&"get") {
            transcript.extend_from_slice(&output.stdout);
        }
        transcript.extend_from_slice(&output.stderr);
    }

    #[track_caller]
    fn ok(&self, password: Option<&str>, args: &[&str]) -> Vec<u8> {
        let run = self.run(password, args);
        assert_eq!(run.code, Some(0), "{args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// Runs a command that must fail, and returns its one line of error.
    #[track_caller]
    fn fails(&self, password: Option<&str>, args: &[&str]) -> String {
        let run = self.run(password, args);
        assert_one_error_line(args, &run)
    }

    #[track_caller]
    fn get(&self, args: &[&str]) -> Vec<u8> {
        self.ok(Some(PASSWORD), &[&["get"], args].concat())
    }
}

#[track_caller]
fn assert_one_error_line(args: &[&str], run: &Run) -> String {
    assert_eq!(run.code, Some(1), "{args:?} should fail with 1; stderr: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{args:?} printed to stdout on failure");
    let lines: Vec<&str> = run.stderr.lines().filter(|line| !line.starts_with("warning:")).collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one error line: {}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    lines[0].to_owned()
}

/// Every path under `root`, relative, with its mode and (for files) contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Option<Vec<u8>>)> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o7777;
        let contents = if metadata.is_dir() {
            pending.extend(fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            None
        } else {
            Some(fs::read(&path).unwrap())
        };
        entries.insert(path.strip_prefix(root).unwrap().to_owned(), (mode, contents));
    }
    entries
}

#[track_caller]
fn assert_private(root: &Path, when: &str) {
    for (path, (mode, contents)) in snapshot(root) {
        let expected = if contents.is_some() { 0o600 } else { 0o700 };
        assert_eq!(mode, expected, "{when}: {} has mode {mode:o}", path.display());
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The file of secret `name` in the live generation.
fn secret_file(root: &Path, name: &str) -> PathBuf {
    let generation = fs::read_to_string(root.join("CURRENT")).unwrap();
    root.join(format!("gen-{}", generation.trim())).join("secrets").join(name)
}

fn random_below(limit: u64) -> u64 {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) % limit.max(1)
}

#[test]
fn the_guide_commands_round_trip_and_leave_no_plaintext_on_disk() {
    let fixture = Fixture::with_credentials();
    assert_eq!(fixture.get(&["aws-credentials"]), creds_json().as_bytes());
    assert_eq!(fixture.get(&["aws-credentials", "AccessKeyId"]), ACCESS_KEY_ID.as_bytes());
    assert_eq!(fixture.get(&["aws-credentials", "SecretAccessKey"]), SECRET_ACCESS_KEY.as_bytes());
    assert_eq!(fixture.ok(Some(PASSWORD), &["list"]), b"aws-credentials\n");

    for (path, (_, contents)) in snapshot(&fixture.root) {
        let Some(contents) = contents else { continue };
        for needle in [ACCESS_KEY_ID, SECRET_ACCESS_KEY, PASSWORD, "AccessKeyId"] {
            assert!(!contains(&contents, needle.as_bytes()), "{} holds {needle}", path.display());
        }
    }
    assert_private(&fixture.root, "after the guide's commands");
}

#[test]
fn init_refuses_to_replace_a_store() {
    let fixture = Fixture::with_credentials();
    let before = snapshot(&fixture.root);
    let error = fixture.fails(Some("another password"), &["init"]);
    assert_eq!(error, format!("error: a secret store already exists at {}", fixture.root.display()));
    assert_eq!(snapshot(&fixture.root), before);
    assert_eq!(fixture.get(&["aws-credentials", "AccessKeyId"]), ACCESS_KEY_ID.as_bytes());
}

#[test]
fn binary_values_come_back_unchanged_from_files_and_stdin() {
    let fixture = Fixture::new();
    fixture.ok(Some(PASSWORD), &["init"]);
    let all_bytes: Vec<u8> = (0..=255u8).chain([0, 0, 0xff, 0xc3, 0x28]).collect();
    fixture.write("binary", &all_bytes);
    fixture.ok(Some(PASSWORD), &["add", "from-file", "-f", "binary"]);
    let run = fixture.run_command(fixture.command(Some(PASSWORD)), &["add", "from-stdin"], Some(&all_bytes));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    fixture.ok(Some(PASSWORD), &["add", "empty", "-f", "/dev/null"]);
    assert_eq!(fixture.get(&["from-file"]), all_bytes);
    assert_eq!(fixture.get(&["from-stdin"]), all_bytes);
    assert_eq!(fixture.get(&["empty"]), b"");
    assert_eq!(fixture.ok(Some(PASSWORD), &["list"]), b"empty\nfrom-file\nfrom-stdin\n");
}

#[test]
fn add_refuses_a_taken_name_unless_forced() {
    let fixture = Fixture::with_credentials();
    fixture.write("other.json", br#"{"AccessKeyId":"replaced"}"#);
    let error = fixture.fails(Some(PASSWORD), &["add", "-f", "other.json", "aws-credentials"]);
    assert_eq!(error, "error: secret `aws-credentials` already exists; use --force to replace it");
    assert_eq!(fixture.get(&["aws-credentials", "AccessKeyId"]), ACCESS_KEY_ID.as_bytes());
    fixture.ok(Some(PASSWORD), &["add", "--force", "-f", "other.json", "aws-credentials"]);
    assert_eq!(fixture.get(&["aws-credentials", "AccessKeyId"]), b"replaced");
}

#[test]
fn hydroplane_spellings_and_password_files_work() {
    let fixture = Fixture::new();
    let store = fixture.home().join("elsewhere");
    let store_arg = store.to_str().unwrap();
    fixture.write("new-password", b"file password\n");
    fixture.write("password", b"file password\n");
    fixture.write("v1", b"one");
    fixture.write("v2", b"two");
    fixture.ok(None, &["init", "--store_location", store_arg, "--new-password-file", "new-password"]);
    fixture.ok(
        None,
        &["add", "s", "--filename", "v1", "--store_location", store_arg, "--password-file", "password"],
    );
    fixture.ok(
        None,
        &["--store", store_arg, "--password-file", "password", "add", "s", "--overwrite", "--filename", "v2"],
    );
    // The store named by a Hydroplane config file, with `~` expanded.
    fixture
        .write("eks.yml", b"---\nsecret_store:\n  secret_store_type: local\n  store_location: ~/elsewhere\n");
    assert_eq!(fixture.ok(Some("file password"), &["get", "-c", "eks.yml", "s"]), b"two");
    fixture.write("none.yml", b"secret_store:\n  secret_store_type: none\n");
    let error = fixture.fails(Some("file password"), &["list", "-c", "none.yml"]);
    assert!(error.contains("names no local secret store"), "{error}");
    // A store must be chosen one way.
    let run = fixture.run(Some("file password"), &["list", "-c", "eks.yml", "--store", store_arg]);
    assert_eq!(run.code, Some(2));
}

#[test]
fn init_takes_the_ordinary_password_variable_when_no_new_one_is_given() {
    let fixture = Fixture::new();
    fixture.ok(Some(PASSWORD), &["init"]);
    fixture.ok(Some(PASSWORD), &["list"]);
}

#[test]
fn a_wrong_password_is_named_and_changes_nothing() {
    let fixture = Fixture::with_credentials();
    fixture.write("new-value", b"new");
    let before = snapshot(&fixture.root);
    let expected = format!("error: wrong password for the secret store at {}", fixture.root.display());
    for args in [
        &["list"][..],
        &["get", "aws-credentials"],
        &["get", "aws-credentials", "AccessKeyId"],
        &["add", "--force", "-f", "new-value", "aws-credentials"],
        &["add", "-f", "new-value", "fresh"],
        &["remove", "aws-credentials"],
        &["change-password"],
    ] {
        let mut command = fixture.command(Some("wrong password"));
        command.env(NEW_PASSWORD_ENV, "next password");
        let run = fixture.run_command(command, args, None);
        assert_eq!(assert_one_error_line(args, &run), expected);
        assert_eq!(snapshot(&fixture.root), before, "{args:?} changed the store");
    }
}

#[test]
fn damaged_and_swapped_files_are_damage_not_a_wrong_password() {
    let fixture = Fixture::with_credentials();
    for name in ["flipped", "truncated", "extended", "swapped", "intact"] {
        fixture.write("value", format!("value of {name}").as_bytes());
        fixture.ok(Some(PASSWORD), &["add", name, "-f", "value"]);
    }
    let mut bytes = fs::read(secret_file(&fixture.root, "flipped")).unwrap();
    let index = bytes.len() / 2;
    bytes[index] ^= 0x10;
    fs::write(secret_file(&fixture.root, "flipped"), &bytes).unwrap();
    let bytes = fs::read(secret_file(&fixture.root, "truncated")).unwrap();
    fs::write(secret_file(&fixture.root, "truncated"), &bytes[..bytes.len() - 3]).unwrap();
    let mut bytes = fs::read(secret_file(&fixture.root, "extended")).unwrap();
    bytes.push(0);
    fs::write(secret_file(&fixture.root, "extended"), &bytes).unwrap();
    fs::copy(secret_file(&fixture.root, "intact"), secret_file(&fixture.root, "swapped")).unwrap();

    for name in ["flipped", "truncated", "extended", "swapped"] {
        let error = fixture.fails(Some(PASSWORD), &["get", name]);
        assert!(error.starts_with(&format!("error: secret `{name}` is damaged")), "{error}");
        assert!(!error.contains("wrong password"), "{error}");
        assert!(!error.contains(&format!("value of {name}")), "{error}");
    }
    assert_eq!(fixture.get(&["intact"]), b"value of intact");
    assert_eq!(fixture.get(&["aws-credentials", "AccessKeyId"]), ACCESS_KEY_ID.as_bytes());
    // Damage does not hide the other secrets from `list`, and `change-password` refuses to carry
    // damaged secrets over, leaving the old password working.
    assert_eq!(
        fixture.ok(Some(PASSWORD), &["list"]),
        b"aws-credentials\nextended\nflipped\nintact\nswapped\ntruncated\n"
    );
    let mut command = fixture.command(Some(PASSWORD));
    command.env(NEW_PASSWORD_ENV, "next password");
    let run = fixture.run_command(command, &["change-password"], None);
    assert!(assert_one_error_line(&["change-password"], &run).contains("is damaged"));
    assert_eq!(fixture.get(&["intact"]), b"value of intact");
}

#[test]
fn missing_secrets_and_keys_are_named_without_values() {
    let fixture = Fixture::with_credentials();
    fixture.write("text", b"plain text, not JSON");
    fixture.ok(Some(PASSWORD), &["add", "text", "-f", "text"]);
    for (args, expected) in [
        (&["get", "nope"][..], "error: secret `nope` does not exist"),
        (&["get", "aws-credentials", "Nope"], "error: secret `aws-credentials` has no key `Nope`"),
        (&["get", "text", "k"], "error: secret `text` is not a JSON object, so its key `k` cannot be read"),
        (&["remove", "nope"], "error: secret `nope` does not exist"),
        (&["get", "../etc"], "error: invalid secret name `../etc`: it contains a path separator"),
        (&["add", ".hidden"], "error: invalid secret name `.hidden`: it starts with a dot"),
    ] {
        assert_eq!(fixture.fails(Some(PASSWORD), args), expected);
    }
}

#[test]
fn remove_and_change_password_work_end_to_end() {
    let fixture = Fixture::with_credentials();
    fixture.write("v", b"temporary");
    fixture.ok(Some(PASSWORD), &["add", "temporary", "-f", "v"]);
    fixture.ok(Some(PASSWORD), &["remove", "temporary"]);
    assert_eq!(fixture.ok(Some(PASSWORD), &["list"]), b"aws-credentials\n");

    let mut command = fixture.command(Some(PASSWORD));
    command.env(NEW_PASSWORD_ENV, "a new password");
    let run = fixture.run_command(command, &["change-password"], None);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let error = fixture.fails(Some(PASSWORD), &["list"]);
    assert!(error.contains("wrong password"), "{error}");
    assert_eq!(
        fixture.ok(Some("a new password"), &["get", "aws-credentials", "AccessKeyId"]),
        ACCESS_KEY_ID.as_bytes()
    );
    let generations = fs::read_dir(&fixture.root)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().starts_with("gen-"))
        .count();
    assert_eq!(generations, 1, "the old generation is deleted");
}

#[test]
fn without_a_terminal_or_a_password_the_error_says_how_to_give_one() {
    let fixture = Fixture::with_credentials();
    let mut command = fixture.command(None);
    // A new session has no controlling terminal, whatever the test runner has. setsid is
    // async-signal-safe, the one call made between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let run = fixture.run_command(command, &["list"], None);
    let error = assert_one_error_line(&["list"], &run);
    assert!(error.contains("HYDROPLANE_SECRET_STORE_PASSWORD"), "{error}");
    let error = fixture.fails(Some(PASSWORD), &["list", "--store", "/nonexistent/store"]);
    assert_eq!(
        error,
        "error: no secret store at /nonexistent/store (create one with `local-secret-store init`)"
    );
}

#[test]
fn permissions_are_private_whatever_the_umask() {
    for umask in ["000", "022", "077", "277"] {
        let fixture = Fixture::new();
        fixture.write("v", b"value");
        let in_umask = |args: &[&str], password: &str| {
            let mut command = fixture.command_of("sh", Some(password));
            command.arg("-c").arg(format!("umask {umask}; exec \"$0\" \"$@\"")).arg(BIN).args(args);
            if args == ["change-password"] {
                command.env(NEW_PASSWORD_ENV, "second");
            }
            let output = command.output().unwrap();
            assert!(
                output.status.success(),
                "umask {umask} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_private(&fixture.root, &format!("umask {umask} after {args:?}"));
        };
        in_umask(&["init"], PASSWORD);
        in_umask(&["add", "a", "-f", "v"], PASSWORD);
        in_umask(&["add", "b", "-f", "v"], PASSWORD);
        in_umask(&["add", "a", "--force", "-f", "v"], PASSWORD);
        in_umask(&["remove", "b"], PASSWORD);
        in_umask(&["list"], PASSWORD);
        in_umask(&["change-password"], PASSWORD);
        in_umask(&["get", "a"], "second");
    }
}

#[test]
fn loose_permissions_are_repaired() {
    let fixture = Fixture::with_credentials();
    fs::set_permissions(&fixture.root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(secret_file(&fixture.root, "aws-credentials"), fs::Permissions::from_mode(0o644))
        .unwrap();
    fs::set_permissions(fixture.root.join("CURRENT"), fs::Permissions::from_mode(0o666)).unwrap();
    fixture.ok(Some(PASSWORD), &["list"]);
    assert_private(&fixture.root, "after list");
}

#[test]
fn no_value_or_password_ever_appears_in_the_output() {
    let fixture = Fixture::with_credentials();
    let new_password = "brand new password 42";
    fixture.write("binary", b"\x00binary-secret-marker\xff");
    fixture.ok(Some(PASSWORD), &["add", "binary", "-f", "binary"]);
    fixture.fails(Some(PASSWORD), &["add", "binary", "-f", "binary"]);
    fixture.get(&["aws-credentials"]);
    fixture.get(&["aws-credentials", "SecretAccessKey"]);
    fixture.get(&["binary"]);
    fixture.ok(Some(PASSWORD), &["list"]);
    fixture.fails(Some(PASSWORD), &["get", "aws-credentials", "NoSuchKey"]);
    fixture.fails(Some(PASSWORD), &["get", "binary", "k"]);
    fixture.fails(Some("wrong password"), &["get", "aws-credentials"]);
    fixture.fails(Some(PASSWORD), &["init"]);
    fixture.run(None, &["--help"]);
    let mut command = fixture.command(Some(PASSWORD));
    command.env(NEW_PASSWORD_ENV, new_password).env("RUST_BACKTRACE", "1");
    fixture.run_command(command, &["change-password"], None);
    fixture.fails(Some(PASSWORD), &["list"]);
    let bytes = fs::read(secret_file(&fixture.root, "binary")).unwrap();
    fs::write(secret_file(&fixture.root, "binary"), &bytes[..bytes.len() - 1]).unwrap();
    fixture.fails(Some(new_password), &["get", "binary"]);
    fixture.ok(Some(new_password), &["remove", "binary"]);

    let transcript = fixture.transcript.borrow();
    assert!(!transcript.is_empty());
    for needle in
        [ACCESS_KEY_ID, SECRET_ACCESS_KEY, PASSWORD, new_password, "binary-secret-marker", &creds_json()]
    {
        assert!(!contains(&transcript, needle.as_bytes()), "the output holds {needle:?}");
    }
}

/// How many times each kill test kills a writer.
const KILL_ROUNDS: usize = 80;

/// Kills `command` at a random instant between a quarter and 1.25 times `typical` after its start
/// (a run's writes come after process start-up and key derivation, so kills are spread over the
/// later part); returns whether it was killed before finishing on its own.
fn kill_at_random(mut command: Command, typical: Duration) -> bool {
    let mut child: Child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let typical = typical.as_micros() as u64;
    let delay = typical / 4 + random_below(typical);
    std::thread::sleep(Duration::from_micros(delay));
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    child.wait().unwrap();
    !finished
}

fn time_of(mut command: Command) -> Duration {
    let start = Instant::now();
    let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(status.success());
    start.elapsed()
}

fn open_with(root: &Path, password: &str) -> Result<LocalSecretStore, SecretError> {
    LocalSecretStore::open(root, &Password::from(password))
}

/// A value of a few hundred kilobytes, so that writing it takes long enough for a kill to land
/// in the middle of a write now and then.
fn big_value(round: usize) -> String {
    format!("value {round};").repeat(40_000)
}

#[test]
fn killing_add_at_any_instant_leaves_the_old_or_the_new_value() {
    let fixture = Fixture::new();
    fixture.ok(Some(PASSWORD), &["init"]);
    for name in ["a", "b", "c"] {
        fixture.write("v", name.as_bytes());
        fixture.ok(Some(PASSWORD), &["add", name, "-f", "v"]);
    }
    fixture.write("target-0", big_value(0).as_bytes());
    fixture.ok(Some(PASSWORD), &["add", "target", "-f", "target-0"]);
    let add = |round: usize| {
        let file = format!("target-{round}");
        fixture.write(&file, big_value(round).as_bytes());
        let mut command = fixture.command(Some(PASSWORD));
        command.args(["add", "--force", "target", "-f", &file]);
        command
    };
    let typical = time_of(add(0));
    let mut current = 0;
    let mut killed = 0;
    for round in 1..=KILL_ROUNDS {
        killed += usize::from(kill_at_random(add(round), typical));
        let store = open_with(&fixture.root, PASSWORD).unwrap();
        let value = store.get("target").unwrap();
        let old = big_value(current);
        let new = big_value(round);
        assert!(value.as_slice() == old.as_bytes() || value.as_slice() == new.as_bytes(), "round {round}");
        if value.as_slice() == new.as_bytes() {
            current = round;
        }
        for name in ["a", "b", "c"] {
            assert_eq!(store.get(name).unwrap().as_slice(), name.as_bytes(), "round {round}");
        }
        assert_eq!(store.list().unwrap(), ["a", "b", "c", "target"]);
    }
    eprintln!("killed {killed} of {KILL_ROUNDS} runs of `add` before they finished");
    fixture.ok(Some(PASSWORD), &["list"]);
    assert_private(&fixture.root, "after the kills and a clean run");
}

#[test]
fn killing_change_password_at_any_instant_leaves_the_old_or_the_new_password() {
    let fixture = Fixture::new();
    let passwords = ["password one", "password two"];
    fixture.ok(Some(passwords[0]), &["init"]);
    let mut names: Vec<String> = (0..20).map(|index| format!("secret-{index}")).collect();
    names.sort();
    for name in &names {
        fixture.write("v", format!("value of {name}").as_bytes());
        fixture.ok(Some(passwords[0]), &["add", name, "-f", "v"]);
    }
    let change = |from: usize| {
        let mut command = fixture.command(Some(passwords[from]));
        command.env(NEW_PASSWORD_ENV, passwords[1 - from]).arg("change-password");
        command
    };
    // Measured there and back, so the store ends where it began.
    let typical = time_of(change(0));
    let _ = time_of(change(1));
    let mut current = 0;
    let mut killed = 0;
    for round in 1..=KILL_ROUNDS {
        killed += usize::from(kill_at_random(change(current), typical));
        let (opened_with, store) = match open_with(&fixture.root, passwords[current]) {
            Ok(store) => (current, store),
            Err(SecretError::WrongPassword { .. }) => {
                (1 - current, open_with(&fixture.root, passwords[1 - current]).unwrap())
            }
            Err(error) => panic!("round {round}: {error}"),
        };
        current = opened_with;
        assert_eq!(store.list().unwrap(), names, "round {round}");
        for name in &names {
            assert_eq!(
                store.get(name).unwrap().as_slice(),
                format!("value of {name}").as_bytes(),
                "round {round}"
            );
        }
    }
    eprintln!("killed {killed} of {KILL_ROUNDS} runs of `change-password` before they finished");
    let run = fixture.run_command(change(current), &[], None);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_private(&fixture.root, "after the kills and a clean run");
    let generations = fs::read_dir(&fixture.root)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().starts_with("gen-"))
        .count();
    assert_eq!(generations, 1, "a clean run clears the leftovers of killed ones");
}

#[test]
fn concurrent_writers_never_corrupt_the_store() {
    let fixture = Fixture::with_credentials();
    let new_password = "concurrent new password";
    let mut children = Vec::new();
    for index in 0..8 {
        let file = format!("value-{index}");
        fixture.write(&file, format!("value {index}").as_bytes());
        let mut command = fixture.command(Some(PASSWORD));
        command.args(["add", &format!("s{index}"), "-f", &file]);
        children.push((Some(index), command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()));
        if index == 4 {
            let mut command = fixture.command(Some(PASSWORD));
            command.env(NEW_PASSWORD_ENV, new_password).arg("change-password");
            children.push((None, command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()));
        }
    }
    let mut added = Vec::new();
    for (index, child) in children {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        match index {
            None => assert!(output.status.success(), "change-password: {stderr}"),
            Some(index) if output.status.success() => added.push(index),
            // An `add` that opened the store before the password changed is refused, cleanly.
            Some(_) => assert!(
                stderr.contains("re-encrypted with a new password") || stderr.contains("wrong password"),
                "{stderr}"
            ),
        }
    }
    let store = open_with(&fixture.root, new_password).unwrap();
    let mut expected: Vec<String> = added.iter().map(|index| format!("s{index}")).collect();
    expected.push("aws-credentials".to_owned());
    expected.sort();
    assert_eq!(store.list().unwrap(), expected);
    for index in added {
        assert_eq!(store.get(&format!("s{index}")).unwrap().as_slice(), format!("value {index}").as_bytes());
    }
    assert_private(&fixture.root, "after concurrent writers");
}

#[test]
fn usage_errors_exit_with_2() {
    let fixture = Fixture::new();
    assert_eq!(fixture.run(Some(PASSWORD), &["frobnicate"]).code, Some(2));
    assert_eq!(fixture.run(Some(PASSWORD), &["get"]).code, Some(2));
}
