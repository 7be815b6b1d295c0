//! The server binary refuses every bad settings file the same way: exit status 1 and exactly one
//! line on stderr, naming the key. Table-driven over every numeric key the library knows
//! ([`hydroplane::config::NUMBER_RANGES`]), so a key added there is tested here too.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hydroplane::config::{NUMBER_RANGES, yaml_setting};

/// How long a refused start may take; a server that wrongly accepted the file is killed then.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `hydroplane -c FILE` on `yaml` and returns its exit code and stderr; kills it (and
/// fails) when it is still running after [`EXIT_TIMEOUT`].
fn run_with_config(directory: &Path, yaml: &str) -> (Option<i32>, String) {
    let path = directory.join("settings.yml");
    std::fs::write(&path, yaml).expect("write the settings");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-p", "0", "-c"])
        .arg(&path)
        // The refusal must be one line whatever the log level.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hydroplane");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    // A process's exit has no event to wait on here, so it is polled with a deadline.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hydroplane") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hydroplane accepted (or hung on) this file:\n{yaml}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    (status.code(), stderr)
}

#[track_caller]
fn check_refused(directory: &Path, yaml: &str, expected: &str) {
    let (code, stderr) = run_with_config(directory, yaml);
    assert_eq!(code, Some(1), "not a clean refusal of\n{yaml}\nstderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line for\n{yaml}\nstderr:\n{stderr}");
    assert!(stderr.contains(expected), "`{expected}` missing for\n{yaml}\nstderr:\n{stderr}");
}

#[test]
fn every_out_of_range_number_is_exit_1_and_one_line_naming_the_key() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut cases = 0;
    for range in NUMBER_RANGES {
        let below = if range.above_low { range.low } else { range.low - 1.0 };
        let values = [
            below.to_string(),
            (range.high + 1.0).to_string(),
            "1e300".to_owned(),
            "-1e300".to_owned(),
            ".nan".to_owned(),
            ".inf".to_owned(),
            "-.inf".to_owned(),
        ];
        for value in &values {
            check_refused(
                directory.path(),
                &yaml_setting(range.key, value),
                &format!("{} must be", range.key),
            );
            cases += 1;
        }
        if range.whole {
            check_refused(
                directory.path(),
                &yaml_setting(range.key, &(range.high - 0.5).to_string()),
                "a whole number",
            );
        }
    }
    assert!(cases >= 13 * 7, "{cases} cases");
}

#[test]
fn tiny_culling_intervals_and_huge_durations_are_refused_before_serving() {
    let directory = tempfile::tempdir().expect("tempdir");
    let table = [
        (
            "process_culling:\n  max_age_minutes: 1\n  culling_interval_minutes: 1e-15\n",
            "culling_interval_minutes",
        ),
        ("process_culling:\n  max_age_minutes: 1e300\n", "process_culling.max_age_minutes"),
        ("runtime:\n  runtime_type: local\n  stop_grace_seconds: 1e20\n", "runtime.stop_grace_seconds"),
        (
            "runtime:\n  runtime_type: eks\n  cluster_name: c\n  region: r\n  credentials_renew_before_seconds: 1e30\n",
            "runtime.credentials_renew_before_seconds",
        ),
    ];
    for (yaml, expected) in table {
        check_refused(directory.path(), yaml, expected);
    }
}

#[test]
fn keys_that_do_not_apply_and_bad_namespaces_are_one_line_errors() {
    let directory = tempfile::tempdir().expect("tempdir");
    let table = [
        (
            "secret_store:\n  secret_store_type: none\n  store_location: /tmp/x\n",
            "secret_store.store_location does not apply to secret_store_type: none",
        ),
        ("runtime:\n  runtime_type: local\n  namespace: x\n", "runtime.namespace does not apply"),
        ("runtime:\n  runtime_type: kubernetes\n  namespace: Not_A_Label\n", "runtime.namespace must be"),
        ("runtime:\n  runtime_type: local\n  bogus: 1\n", "bogus"),
        ("runtime: [\n", "invalid config file"),
    ];
    for (yaml, expected) in table {
        check_refused(directory.path(), yaml, expected);
    }
}

#[test]
fn a_log_dir_that_cannot_be_made_is_one_line_naming_the_key_and_the_path() {
    let directory = tempfile::tempdir().expect("tempdir");
    let file = directory.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let log_dir = file.join("logs");
    check_refused(
        directory.path(),
        &format!("runtime:\n  runtime_type: local\n  log_dir: {}\n", log_dir.display()),
        &format!("cannot use runtime.log_dir `{}`", log_dir.display()),
    );
}
