//! `hpctl -o/--output`: every format against a server with three processes, the default equal to
//! `-o json`, `HPCTL_OUTPUT` and the config file, and `hpctl completion`.

use std::process::{Command, Output};

use crate::common::{Server, hpctl};

/// A server with three sleeping processes, `a-web` (group `site`, labelled), `b-db` and `c-job`.
fn server_with_three_processes() -> (Server, tempfile::TempDir) {
    let server = Server::start();
    let directory = tempfile::tempdir().expect("tempdir");
    for (name, group) in [("a-web", Some("site")), ("b-db", None), ("c-job", None)] {
        let mut spec = serde_json::json!({"process_name": name,
            "container": {"image_uri": format!("image-{name}"), "command": ["sleep", "300"]}});
        if let Some(group) = group {
            spec["group"] = group.into();
            spec["labels"] = serde_json::json!({"tier": "web"});
        }
        let path = directory.path().join(format!("{name}.json"));
        std::fs::write(&path, spec.to_string()).expect("write spec");
        let output = hpctl(&server, &["start", "--wait", path.to_str().expect("path")]);
        assert!(output.status.success(), "start {name}: {}", String::from_utf8_lossy(&output.stderr));
    }
    (server, directory)
}

/// hpctl's stdout, asserting success.
#[track_caller]
fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "hpctl failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

/// The cells of each line, split on runs of spaces.
fn cells(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|line| line.split_whitespace().map(str::to_owned).collect()).collect()
}

#[test]
fn list_as_a_table_is_a_header_and_a_row_per_process() {
    let (server, _specs) = server_with_three_processes();
    let table = cells(&stdout(&hpctl(&server, &["list", "-o", "table"])));
    assert_eq!(table.len(), 4, "{table:?}");
    assert_eq!(table[0], ["NAME", "GROUP", "STATUS", "ADDRESS", "RESTARTS", "AGE"]);
    let names: Vec<&str> = table[1..].iter().map(|row| row[0].as_str()).collect();
    assert_eq!(names, ["a-web", "b-db", "c-job"]);
    assert_eq!(table[1][1..5], ["site", "RUNNING", "<none>", "0"]);
    assert_eq!(table[2][1..5], ["<none>", "RUNNING", "<none>", "0"]);
    assert!(table[1][5].ends_with('s') || table[1][5].ends_with('m'), "an age: {:?}", table[1]);
}

#[test]
fn list_wide_adds_labels_image_and_node() {
    let (server, _specs) = server_with_three_processes();
    let table = cells(&stdout(&hpctl(&server, &["list", "--output=wide"])));
    assert_eq!(table.len(), 4, "{table:?}");
    assert_eq!(
        table[0],
        ["NAME", "GROUP", "STATUS", "ADDRESS", "RESTARTS", "AGE", "LABELS", "IMAGE", "NODE"]
    );
    assert_eq!(table[1][6..], ["tier=web", "image-a-web", "<none>"]);
    assert_eq!(table[3][6..], ["<none>", "image-c-job", "<none>"]);
}

#[test]
fn list_as_names_prints_only_the_names() {
    let (server, _specs) = server_with_three_processes();
    assert_eq!(stdout(&hpctl(&server, &["list", "-o", "name"])), "a-web\nb-db\nc-job\n");
    assert_eq!(stdout(&hpctl(&server, &["list", "-o", "name", "-l", "tier=web"])), "a-web\n");
}

#[test]
fn json_is_the_default_and_yaml_holds_the_same() {
    let (server, _specs) = server_with_three_processes();
    let default = stdout(&hpctl(&server, &["list"]));
    assert_eq!(stdout(&hpctl(&server, &["list", "-o", "json"])), default);
    let json: serde_json::Value = serde_json::from_str(&default).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&stdout(&hpctl(&server, &["list", "-o", "yaml"]))).expect("YAML");
    assert_eq!(yaml, json);

    let default = stdout(&hpctl(&server, &["describe", "a-web"]));
    assert_eq!(stdout(&hpctl(&server, &["describe", "a-web", "-o", "json"])), default);
    let json: serde_json::Value = serde_json::from_str(&default).expect("JSON");
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&stdout(&hpctl(&server, &["describe", "a-web", "-o", "yaml"]))).expect("YAML");
    assert_eq!(yaml, json);
}

#[test]
fn describe_start_and_stop_print_every_format() {
    let (server, specs) = server_with_three_processes();
    let described = stdout(&hpctl(&server, &["describe", "b-db", "-o", "table"]));
    let lines = cells(&described);
    assert_eq!(lines[0], ["NAME", "GROUP", "STATUS", "ADDRESS", "RESTARTS", "AGE"]);
    assert_eq!(lines[1][0], "b-db");
    assert!(described.contains("\nHISTORY\n"), "{described}");
    assert!(lines.iter().any(|line| line.first().map(String::as_str) == Some("TIME")), "{described}");
    assert_eq!(stdout(&hpctl(&server, &["describe", "b-db", "-o", "name"])), "b-db\n");

    // An identical Start again: the existing process, in the format asked for.
    let spec = specs.path().join("c-job.json");
    let started = cells(&stdout(&hpctl(&server, &["start", spec.to_str().expect("path"), "-o", "wide"])));
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!(started[1][0], "c-job");
    assert_eq!(started[1][7], "image-c-job");
    assert_eq!(stdout(&hpctl(&server, &["start", spec.to_str().expect("path"), "-o", "name"])), "c-job\n");

    assert_eq!(stdout(&hpctl(&server, &["stop", "c-job", "-o", "name"])), "c-job\n");
    assert_eq!(stdout(&hpctl(&server, &["stop", "-g", "site", "-o", "table"])), "NAME\na-web\n");
    let yaml: Vec<String> =
        serde_saphyr::from_str(&stdout(&hpctl(&server, &["stop", "b-db", "-o", "yaml"]))).expect("YAML");
    assert_eq!(yaml, ["b-db"]);
}

#[test]
fn watch_prints_rows_and_names() {
    let (server, _specs) = server_with_three_processes();
    // `watch` follows until interrupted; a closed stdout ends it: `head` keeps the first lines.
    let script = |format: &str, lines: usize| {
        let hpctl = crate::common::hpctl_binary().display().to_string();
        format!("'{hpctl}' watch -s '{}' -o {format} | head -n {lines}", server.url())
    };
    let output = Command::new("sh").args(["-c", &script("table", 4)]).output().expect("run sh");
    let table = cells(&stdout(&output));
    assert_eq!(table[0], ["EVENT", "NAME", "GROUP", "STATUS", "ADDRESS", "RESTARTS", "AGE"]);
    let names: Vec<(&str, &str)> = table[1..].iter().map(|row| (row[0].as_str(), row[1].as_str())).collect();
    assert_eq!(names, [("ADDED", "a-web"), ("ADDED", "b-db"), ("ADDED", "c-job")]);
    let output = Command::new("sh").args(["-c", &script("name", 3)]).output().expect("run sh");
    assert_eq!(stdout(&output), "a-web\nb-db\nc-job\n");
}

#[test]
fn hpctl_output_and_the_config_file_choose_the_format_and_flags_win() {
    let (server, _specs) = server_with_three_processes();
    let config_home = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], environment: &[(&str, &str)]| {
        let output = Command::new(crate::common::hpctl_binary())
            .args(args)
            .env_remove("HYDROPLANE_SERVER")
            .env_remove("HPCTL_OUTPUT")
            .env("XDG_CONFIG_HOME", config_home.path())
            .envs(environment.iter().copied())
            .output()
            .expect("run hpctl");
        stdout(&output)
    };
    let names = "a-web\nb-db\nc-job\n";
    assert_eq!(run(&["list", "-s", &server.url()], &[("HPCTL_OUTPUT", "name")]), names);
    let config = config_home.path().join("hpctl");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::write(config.join("config.yaml"), format!("output: name\nserver: {}\n", server.url()))
        .expect("write config");
    // The server and the format from the file.
    assert_eq!(run(&["list"], &[]), names);
    // The variable and the flag win over the file.
    assert!(run(&["list"], &[("HPCTL_OUTPUT", "table")]).starts_with("NAME "));
    assert!(run(&["list", "-o", "json"], &[("HPCTL_OUTPUT", "table")]).starts_with('['));

    std::fs::write(config.join("config.yaml"), "output: tabel\n").expect("write config");
    let output = Command::new(crate::common::hpctl_binary())
        .args(["list", "-s", &server.url()])
        .env("XDG_CONFIG_HOME", config_home.path())
        .env_remove("HPCTL_OUTPUT")
        .output()
        .expect("run hpctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: invalid hpctl config file "), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let output =
            Command::new(crate::common::hpctl_binary()).args(["completion", shell]).output().expect("run");
        let script = stdout(&output);
        for word in ["wait-ready", "describe", "output"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let output = Command::new("bash")
        .args([
            "-c",
            &format!(
                "source <('{}' completion bash) && complete -p hpctl",
                crate::common::hpctl_binary().display()
            ),
        ])
        .output()
        .expect("run bash");
    assert!(stdout(&output).contains("hpctl"));
}
