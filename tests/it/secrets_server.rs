//! The secret store as the server uses it: the password at start-up, secret env values on the
//! local and Kubernetes runtimes, and no secret value or password anywhere in any output.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{KubeSim, Server, hpctl, hpctl_json, local_secret_store, wait_until};

const PASSWORD: &str = "correct horse battery staple";
const ACCESS_KEY_ID: &str = "AKIAEXAMPLEKEYID0001";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

/// Everything any command printed, to search for secrets at the end.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    fn record(&mut self, output: &Output) {
        self.0.push_str(&String::from_utf8_lossy(&output.stdout));
        self.0.push_str(&String::from_utf8_lossy(&output.stderr));
    }

    #[track_caller]
    fn assert_clean(&self, extra: &str) {
        let all = format!("{}{extra}", self.0);
        assert!(!all.is_empty());
        for secret in [PASSWORD, ACCESS_KEY_ID, SECRET_ACCESS_KEY] {
            assert!(!all.contains(secret), "a secret value appears in the output:\n{all}");
        }
    }
}

fn secret_store(store: &Path, transcript: &mut Transcript, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = local_secret_store(PASSWORD)
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run local-secret-store");
    if let Some(input) = stdin {
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes()).expect("write");
    }
    let output = child.wait_with_output().expect("wait");
    transcript.record(&output);
    assert!(
        output.status.success(),
        "local-secret-store {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A store with the guide's `aws-credentials` secret, made the guide's way.
fn guide_store(directory: &Path, transcript: &mut Transcript) -> std::path::PathBuf {
    let store = directory.join("secrets");
    secret_store(&store, transcript, &["init"], None);
    let creds = directory.join("creds.json");
    std::fs::write(
        &creds,
        format!(r#"{{"AccessKeyId":"{ACCESS_KEY_ID}","SecretAccessKey":"{SECRET_ACCESS_KEY}"}}"#),
    )
    .expect("write creds.json");
    secret_store(&store, transcript, &["add", "-f", creds.to_str().expect("path"), "aws-credentials"], None);
    std::fs::remove_file(&creds).expect("rm creds.json");
    store
}

#[test]
fn the_server_resolves_secret_env_values_for_local_processes_and_prints_none() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut transcript = Transcript::default();
    let store = guide_store(directory.path(), &mut transcript);
    let config =
        format!("secret_store:\n  secret_store_type: local\n  store_location: {}\n", store.display());
    std::fs::write(directory.path().join("hydroplane.yml"), config).expect("write config");
    let config_path = directory.path().join("hydroplane.yml");
    let server = Server::start_with_env(
        &["-c", config_path.to_str().expect("path")],
        &[("HYDROPLANE_SECRET_STORE_PASSWORD", PASSWORD)],
    );

    let out = directory.path().join("seen");
    let spec = serde_json::json!({"process_name": "uses-secret", "container": {"image_uri": "x",
    "command": ["sh", "-c", format!("printf '%s|%s|%s' \"$KEY_ID\" \"$SECRET\" \"${{HYDROPLANE_SECRET_STORE_PASSWORD:-unset}}\" > {}", out.display())],
    "env": [
        {"name": "KEY_ID", "value": {"secret_name": "aws-credentials", "key": "AccessKeyId"}},
        {"name": "SECRET", "secret": {"secret_name": "aws-credentials", "key": "SecretAccessKey"}}
    ]}});
    let spec_path = directory.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let started = hpctl(&server, &["start", "--wait", spec_path.to_str().expect("path")]);
    transcript.record(&started);
    assert!(started.status.success());
    wait_until("the process wrote what it saw", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|text| text.matches('|').count() == 2)
    });
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        format!("{ACCESS_KEY_ID}|{SECRET_ACCESS_KEY}|unset"),
        "the process gets its secrets, and never the server's password"
    );

    let missing = serde_json::json!({"process_name": "missing-key", "container": {"image_uri": "x", "command": ["true"],
        "env": [{"name": "X", "value": {"secret_name": "aws-credentials", "key": "NoSuchKey"}}]}});
    std::fs::write(&spec_path, missing.to_string()).expect("write spec");
    let refused = hpctl(&server, &["start", spec_path.to_str().expect("path")]);
    transcript.record(&refused);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("aws-credentials") && stderr.contains("NoSuchKey"), "{stderr}");

    let listed = hpctl(&server, &["list"]);
    transcript.record(&listed);
    let described = hpctl(&server, &["describe", "uses-secret"]);
    transcript.record(&described);
    assert!(described.status.success(), "{}", String::from_utf8_lossy(&described.stderr));
    let detail: serde_json::Value = serde_json::from_slice(&described.stdout).expect("JSON");
    let stored: hydroplane::spec::ProcessSpec = serde_json::from_value(spec).expect("a spec");
    assert_eq!(
        detail["spec"]["container"]["env"],
        serde_json::to_value(&stored).expect("JSON")["container"]["env"],
        "the references, as started"
    );
    assert_eq!(server_output_into(&mut transcript, server), Some(0));
    transcript.assert_clean("");
}

fn server_output_into(transcript: &mut Transcript, mut server: Server) -> Option<i32> {
    let code = server.terminate();
    transcript.0.push_str(&server.stdout());
    transcript.0.push_str(&server.stderr());
    code
}

#[test]
fn a_wrong_password_stops_the_server_before_it_binds() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut transcript = Transcript::default();
    let store = guide_store(directory.path(), &mut transcript);
    let config = directory.path().join("hydroplane.yml");
    std::fs::write(
        &config,
        format!("secret_store:\n  secret_store_type: local\n  store_location: {}\n", store.display()),
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-p", "0", "-c", config.to_str().expect("path")])
        .env("HYDROPLANE_SECRET_STORE_PASSWORD", "not the password")
        .stdin(Stdio::null())
        .output()
        .expect("run hydroplane");
    transcript.record(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wrong password"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"), "it never bound");

    let password_file = directory.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write");
    let mut server = Server::start_with_args(&[
        "-c",
        config.to_str().expect("path"),
        "--password-file",
        password_file.to_str().expect("path"),
    ]);
    assert_eq!(server.terminate(), Some(0));
    transcript.assert_clean(&server.stderr());
}

#[test]
fn on_kubernetes_secret_env_values_become_a_secret_owned_by_the_pod() {
    let sim = KubeSim::start(&[]);
    let mut transcript = Transcript::default();
    let store = guide_store(sim.directory(), &mut transcript);
    let config = sim.hydroplane_config(&format!(
        "secret_store:\n  secret_store_type: local\n  store_location: {}\n",
        store.display()
    ));
    let config_path = sim.directory().join("hydroplane.yml");
    std::fs::write(&config_path, config).expect("write config");
    let server = Server::start_with_env(
        &["-c", config_path.to_str().expect("path")],
        &[("HYDROPLANE_SECRET_STORE_PASSWORD", PASSWORD)],
    );
    let spec = serde_json::json!({"process_name": "aws-tool", "container": {"image_uri": "amazon/aws-cli",
        "env": [{"name": "AWS_ACCESS_KEY_ID", "value": {"secret_name": "aws-credentials", "key": "AccessKeyId"}},
                {"name": "REGION", "value": "us-west-2"}]}});
    let spec_path = sim.directory().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write");
    let started = hpctl(&server, &["start", spec_path.to_str().expect("path")]);
    transcript.record(&started);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));

    let pod: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "pod", "aws-tool-0", "-o", "json"])).expect("json");
    let env = &pod["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"], "aws-tool-env");
    assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["key"], "AWS_ACCESS_KEY_ID");
    assert_eq!(env[1]["value"], "us-west-2");
    let annotation = pod["metadata"]["annotations"]["hydroplane/spec"].as_str().expect("the spec annotation");
    assert!(!annotation.contains(ACCESS_KEY_ID), "the annotation holds references only");

    let secret: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "secret", "aws-tool-env", "-o", "json"])).expect("json");
    let encoded = secret["data"]["AWS_ACCESS_KEY_ID"].as_str().expect("the value");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
    assert_eq!(decoded, ACCESS_KEY_ID.as_bytes());
    assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], "aws-tool");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");

    // Describe shows the spec from the annotation: the reference, as started, never the value.
    let described = hpctl(&server, &["describe", "aws-tool"]);
    transcript.record(&described);
    assert!(described.status.success(), "{}", String::from_utf8_lossy(&described.stderr));
    let detail: serde_json::Value = serde_json::from_slice(&described.stdout).expect("JSON");
    let stored: hydroplane::spec::ProcessSpec = serde_json::from_value(spec).expect("a spec");
    assert_eq!(detail["spec"], serde_json::to_value(&stored).expect("JSON"), "the spec as started");

    assert_eq!(hpctl_json(&server, &["stop", "aws-tool"]), serde_json::json!(["aws-tool"]));
    sim.wait_deleted(&["statefulset/aws-tool", "pod/aws-tool-0", "secret/aws-tool-env"]);
    assert!(sim.names("secrets").is_empty(), "the secret goes with its StatefulSet");
    assert_eq!(server_output_into(&mut transcript, server), Some(0));
    transcript.assert_clean("");
}
