//! Tests of the spec's serde shape and its validation.

use super::validation::limits::MAX_ENV_ENTRIES;
use super::*;

fn minimal_spec() -> ProcessSpec {
    ProcessSpec {
        process_name: "web".to_owned(),
        group: None,
        container: ContainerSpec { image_uri: "nginx".to_owned(), ..Default::default() },
        has_public_ip: false,
        labels: Default::default(),
        restart_policy: Default::default(),
        readiness: None,
        liveness: None,
        max_run_seconds: None,
    }
}

#[track_caller]
fn check(json: &str, expected: &[&str]) {
    let spec: ProcessSpec = serde_json::from_str(json).expect("test spec parses");
    let found: Vec<String> = match spec.validate() {
        Ok(_) => Vec::new(),
        Err(InvalidSpec(violations)) => violations.iter().map(Violation::to_string).collect(),
    };
    assert_eq!(found.len(), expected.len(), "violations: {found:#?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(found.starts_with(expected), "`{found}` should start with `{expected}`");
    }
}

#[test]
fn hydroplane_nginx_example_loads_and_is_valid() {
    check(
        r#"{"process_name": "nginx", "container": {"image_uri": "nginxdemos/hello",
            "ports": [{"container_port": 80, "host_port": 8080, "protocol": "tcp"}]},
            "has_public_ip": true}"#,
        &[],
    );
}

#[test]
fn every_violation_is_reported_with_its_path() {
    check(
        r#"{"process_name": "Web_1", "group": "-g", "container": {"image_uri": "",
            "ports": [{"container_port": 80}, {"container_port": 80}, {"container_port": 0},
                      {"container_port": 81, "host_port": 70000, "name": "Bad Name"}],
            "env": [{"name": "1X", "value": "a"}, {"name": "A", "value": "b"},
                    {"name": "A", "value": "c"}],
            "resource_request": {"cpu_vcpu": "0.5", "memory_mib": 512},
            "resource_limit": {"cpu_vcpu": 0.25, "memory_mib": 0}}}"#,
        &[
            "process_name: must be a DNS-1123 label",
            "group: must be a DNS-1123 label",
            "container.image_uri: must not be empty",
            "container.env[0].name: `1X` is not a valid variable name",
            "container.env[2].name: `A` is given twice",
            "container.ports[1].container_port: port 80 is given twice",
            "container.ports[2].container_port: must be between 1 and 65535, got 0",
            "container.ports[3].host_port: must be between 1 and 65535, got 70000",
            "container.ports[3].name: `Bad Name` is not a valid port name",
            "container.resource_limit.memory_mib: must be between 1 and 1073741824, got 0",
            "container.resource_limit.cpu_vcpu: 0.25 is below the requested 0.5",
            "container.resource_limit.memory_mib: 0 is below the requested 512",
        ],
    );
}

#[test]
fn names_longer_than_63_characters_are_refused() {
    let mut spec = minimal_spec();
    spec.process_name = "a".repeat(64);
    let error = spec.clone().validate().unwrap_err();
    assert_eq!(error.0[0].field, "process_name");
    assert!(error.0[0].rule.contains("at most 63"));
    spec.process_name = "a".repeat(63);
    assert!(spec.clone().validate().is_ok());
}

#[test]
fn env_values_may_be_secrets_in_both_spellings() {
    let spec: ProcessSpec = serde_json::from_str(
        r#"{"process_name": "p", "container": {"image_uri": "i", "env": [
            {"name": "A", "value": {"secret_name": "s", "key": "k"}},
            {"name": "B", "secret": {"secret_name": "s", "key": "k"}},
            {"name": "C", "value": "literal"}]}}"#,
    )
    .expect("parses");
    let secret = SecretReference { secret_name: "s".into(), key: Some("k".into()) };
    assert_eq!(spec.container.env[0].value, ValueOrSecret::Secret(secret.clone()));
    assert_eq!(spec.container.env[1].value, ValueOrSecret::Secret(secret.clone()));
    assert_eq!(spec.container.env[2].value, ValueOrSecret::Value("literal".into()));
    assert_eq!(spec.secret_references(), vec![&secret]);
}

#[test]
fn unknown_fields_are_errors_that_name_the_field() {
    let error = serde_json::from_str::<ProcessSpec>(
        r#"{"process_name": "p", "container": {"image_uri": "i", "nodeselector": {}}}"#,
    )
    .unwrap_err();
    assert!(error.to_string().contains("unknown field `nodeselector`"), "{error}");
}

#[test]
fn cpu_accepts_numbers_and_decimal_strings_only() {
    let parse = |cpu: &str| {
        serde_json::from_str::<ResourceSpec>(&format!(r#"{{"cpu_vcpu": {cpu}}}"#))
            .map(|resources| resources.cpu_vcpu)
            .map_err(|error| error.to_string())
    };
    assert_eq!(parse("0.25"), Ok(Some(0.25)));
    assert_eq!(parse(r#""0.25""#), Ok(Some(0.25)));
    assert!(parse(r#""a quarter""#).unwrap_err().contains("not a decimal number"));
}

#[test]
fn node_selector_labels_follow_kubernetes_rules() {
    let mut spec = minimal_spec();
    spec.container.node_selector.insert("kubernetes.io/arch".into(), "amd64".into());
    assert!(spec.clone().validate().is_ok());
    spec.container.node_selector.insert("bad key!".into(), "-x".into());
    let error = spec.clone().validate().unwrap_err();
    assert_eq!(error.0.len(), 2, "{error}");
    assert_eq!(error.0[0].field, "container.node_selector[\"bad key!\"]");
}

#[test]
fn registry_credentials_come_in_pairs() {
    let mut spec = minimal_spec();
    spec.container.username = Some(ValueOrSecret::Value("me".into()));
    let error = spec.clone().validate().unwrap_err();
    assert_eq!(error.0[0].field, "container.password");
}

#[test]
fn a_working_directory_is_an_absolute_path() {
    let spec = r#"{"process_name": "p", "container": {"image_uri": "i", "working_dir": "/srv/app"}}"#;
    check(spec, &[]);
    check(
        r#"{"process_name": "p", "container": {"image_uri": "i", "working_dir": "srv"}}"#,
        &["container.working_dir: `srv` is not an absolute path"],
    );
}

#[track_caller]
fn violations_of(spec: ProcessSpec) -> Vec<String> {
    match spec.validate() {
        Ok(_) => Vec::new(),
        Err(InvalidSpec(violations)) => violations.iter().map(Violation::to_string).collect(),
    }
}

#[test]
fn a_port_number_may_be_given_once_per_protocol() {
    let dns = r#"{"process_name": "dns", "container": {"image_uri": "i", "ports": [
        {"container_port": 53, "protocol": "tcp"}, {"container_port": 53, "protocol": "udp"}]}}"#;
    check(dns, &[]);
    check(
        r#"{"process_name": "dns", "container": {"image_uri": "i", "ports": [
            {"container_port": 53, "protocol": "udp"}, {"container_port": 53, "protocol": "udp"}]}}"#,
        &["container.ports[1].container_port: port 53 is given twice for udp"],
    );
    check(
        r#"{"process_name": "dns", "container": {"image_uri": "i", "ports": [
            {"container_port": 53, "host_port": 53, "protocol": "tcp"},
            {"container_port": 54, "host_port": 53, "protocol": "tcp"},
            {"container_port": 53, "host_port": 53, "protocol": "udp"}]}}"#,
        &["container.ports[1].host_port: host port 53 is given twice for tcp"],
    );
}

#[test]
fn service_port_names_given_and_made_up_never_collide() {
    // The unnamed UDP 53 gets `udp-53`, which the TCP port already took.
    check(
        r#"{"process_name": "dns", "container": {"image_uri": "i", "ports": [
            {"container_port": 80, "name": "udp-53"}, {"container_port": 53, "protocol": "udp"}]}}"#,
        &["container.ports[1].container_port: the Service port name `udp-53` is given twice"],
    );
    check(
        r#"{"process_name": "dns", "container": {"image_uri": "i", "ports": [
            {"container_port": 80, "name": "web"}, {"container_port": 81, "name": "web"}]}}"#,
        &["container.ports[1].name: the Service port name `web` is given twice"],
    );
    assert_eq!(service_port_name(None, Protocol::Udp, 53), "udp-53");
    assert_eq!(service_port_name(Some("dns"), Protocol::Udp, 53), "dns");
}

#[test]
fn a_process_with_ports_needs_a_name_that_starts_with_a_letter() {
    let mut spec = minimal_spec();
    spec.process_name = "1web".to_owned();
    assert_eq!(violations_of(spec.clone()), Vec::<String>::new(), "no Service, no DNS-1035 rule");
    spec.container.ports.push(PortMapping {
        container_port: 80,
        host_port: None,
        protocol: Protocol::Tcp,
        name: None,
    });
    let found = violations_of(spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("process_name: must start with a letter when the process has ports"),
        "{found:?}"
    );
}

#[test]
fn quantities_are_finite_and_within_what_kubernetes_represents() {
    for (cpu, valid) in [
        (0.001, true),
        (1_000_000.0, true),
        (0.0005, false),
        (1e308, false),
        (f64::INFINITY, false),
        (f64::NAN, false),
        (-1.0, false),
    ] {
        let mut spec = minimal_spec();
        spec.container.resource_request = Some(ResourceSpec { cpu_vcpu: Some(cpu), memory_mib: None });
        let found = violations_of(spec);
        assert_eq!(found.is_empty(), valid, "{cpu}: {found:?}");
        if !valid {
            assert!(found[0].contains("cpu_vcpu: must be between 0.001 and 1000000"), "{found:?}");
        }
    }
    for (memory, valid) in
        [(1, true), (1 << 30, true), (0, false), (-5, false), ((1 << 30) + 1, false), (i64::MAX, false)]
    {
        let mut spec = minimal_spec();
        spec.container.resource_limit = Some(ResourceSpec { cpu_vcpu: None, memory_mib: Some(memory) });
        assert_eq!(violations_of(spec).is_empty(), valid, "{memory}");
    }
}

#[test]
fn counts_and_sizes_are_limited_and_the_limit_is_named() {
    let variable = |index: usize| EnvironmentVariable {
        name: format!("V{index}"),
        value: ValueOrSecret::Value("x".into()),
    };
    let port = |number: i64| PortMapping {
        container_port: number,
        host_port: None,
        protocol: Protocol::Tcp,
        name: None,
    };
    let mut cases: Vec<(ProcessSpec, &str)> = Vec::new();
    let mut spec = minimal_spec();
    spec.container.env = (0..=MAX_ENV_ENTRIES).map(variable).collect();
    cases.push((spec, "container.env: must have at most 4096 entries, got 4097"));
    let mut spec = minimal_spec();
    spec.container.ports = (1..=257).map(port).collect();
    cases.push((spec, "container.ports: must have at most 256 entries, got 257"));
    let mut spec = minimal_spec();
    spec.container.command = vec!["a".to_owned(); 1025];
    cases.push((spec, "container.command: must have at most 1024 arguments, got 1025"));
    let mut spec = minimal_spec();
    spec.container.command = vec!["a".repeat(64 << 10), "b".repeat((64 << 10) + 1)];
    cases.push((spec, "container.command: must be at most 131072 bytes in total"));
    let mut spec = minimal_spec();
    spec.container.env = vec![EnvironmentVariable {
        name: "BIG".into(),
        value: ValueOrSecret::Value("x".repeat((128 << 10) + 1)),
    }];
    cases.push((spec, "container.env[0].value: must be at most 131072 bytes"));
    let mut spec = minimal_spec();
    spec.container.node_selector = (0..65).map(|index| (format!("k{index}"), "v".to_owned())).collect();
    cases.push((spec, "container.node_selector: must have at most 64 entries, got 65"));
    // Every count and size within its limit, and still too big to fit the annotation.
    let mut spec = minimal_spec();
    spec.container.env = (0..2)
        .map(|index| EnvironmentVariable {
            name: format!("V{index}"),
            value: ValueOrSecret::Value("x".repeat(100 << 10)),
        })
        .collect();
    cases.push((spec, "spec: must be at most 196608 bytes as JSON"));
    for (spec, expected) in cases {
        let found = violations_of(spec);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(expected), "`{}` should start with `{expected}`", found[0]);
    }
    // At the limits, a spec is valid.
    let mut spec = minimal_spec();
    spec.container.env = (0..MAX_ENV_ENTRIES).map(variable).collect();
    spec.container.ports = (1..=256).map(port).collect();
    spec.container.command = vec!["a".to_owned(); 1024];
    assert_eq!(violations_of(spec), Vec::<String>::new());
}

#[test]
fn a_hundred_thousand_env_entries_are_refused_quickly_with_one_message() {
    let mut spec = minimal_spec();
    // All the same name: a quadratic uniqueness check, or one message per entry, would show.
    spec.container.env = (0..100_000)
        .map(|_| EnvironmentVariable { name: "SAME".into(), value: ValueOrSecret::Value("x".into()) })
        .collect();
    let found = violations_of(spec);
    assert!(found[0].starts_with("container.env: must have at most 4096 entries, got 100000"), "{found:?}");
    assert_eq!(found.len(), 1, "one message, not one per entry");
}

#[test]
fn huge_values_are_quoted_shortly() {
    let mut spec = minimal_spec();
    spec.container.env =
        vec![EnvironmentVariable { name: "é".repeat(50_000), value: ValueOrSecret::Value("x".into()) }];
    spec.container.working_dir = Some("w".repeat(50_000));
    let found = violations_of(spec);
    assert_eq!(found.len(), 2, "{found:?}");
    for violation in found {
        assert!(violation.len() < 400, "{violation}");
        assert!(
            violation.contains("... (100000 bytes)") || violation.contains("... (50000 bytes)"),
            "{violation}"
        );
    }
}

#[test]
fn lifecycle_fields_load_in_snake_case_with_kubernetes_defaults() {
    let spec: ProcessSpec = serde_json::from_str(
        r#"{"process_name": "web", "container": {"image_uri": "nginx"},
            "restart_policy": "on_failure",
            "readiness": {"http_get": {"port": 8000, "path": "/ready"}, "period_seconds": 2},
            "liveness": {"tcp_socket": {"port": 8000}},
            "max_run_seconds": 60}"#,
    )
    .expect("parses");
    assert_eq!(spec.restart_policy, RestartPolicy::OnFailure);
    let readiness = spec.readiness.clone().expect("readiness");
    assert_eq!(readiness.action, CheckAction::HttpGet { port: 8000, path: "/ready".into() });
    assert_eq!((readiness.period_seconds, readiness.timeout_seconds, readiness.failure_threshold), (2, 1, 3));
    assert_eq!(spec.liveness.clone().expect("liveness").action, CheckAction::TcpSocket { port: 8000 });
    assert_eq!(spec.max_run_seconds, Some(60));
    // What is written reads back the same.
    let again: ProcessSpec =
        serde_json::from_str(&serde_json::to_string(&spec).expect("writes")).expect("reads");
    assert_eq!(again, spec);
    assert!(spec.validate().is_ok());
}

#[test]
fn a_spec_without_lifecycle_fields_is_always_restarted_and_has_no_checks() {
    let spec: ProcessSpec =
        serde_json::from_str(r#"{"process_name": "web", "container": {"image_uri": "nginx"}}"#)
            .expect("parses");
    assert_eq!(spec.restart_policy, RestartPolicy::Always);
    assert_eq!((spec.readiness, spec.liveness, spec.max_run_seconds), (None, None, None));
    for (policy, succeeded, restarts) in [
        (RestartPolicy::Always, true, true),
        (RestartPolicy::Always, false, true),
        (RestartPolicy::OnFailure, true, false),
        (RestartPolicy::OnFailure, false, true),
        (RestartPolicy::Never, false, false),
    ] {
        assert_eq!(policy.restarts_after(succeeded), restarts, "{policy:?} after success={succeeded}");
    }
}

#[test]
fn health_checks_take_exactly_one_action() {
    for (json, message) in [
        (r#"{"period_seconds": 5}"#, "needs one of"),
        (r#"{"tcp_socket": {"port": 1}, "exec": {"command": ["true"]}}"#, "only one of"),
        (r#"{"grpc": {"port": 1}}"#, "unknown field"),
    ] {
        let whole = format!(
            r#"{{"process_name": "web", "container": {{"image_uri": "nginx"}}, "liveness": {json}}}"#
        );
        let error = serde_json::from_str::<ProcessSpec>(&whole).expect_err(json).to_string();
        assert!(error.contains(message), "{json}: {error}");
    }
    let error = serde_json::from_str::<ProcessSpec>(
        r#"{"process_name": "web", "container": {"image_uri": "nginx"}, "restart_policy": "sometimes"}"#,
    )
    .expect_err("unknown policy")
    .to_string();
    assert!(error.contains("always") && error.contains("on_failure") && error.contains("never"), "{error}");
}

#[test]
fn lifecycle_violations_name_their_fields() {
    check(
        r#"{"process_name": "web", "container": {"image_uri": "nginx"},
            "readiness": {"http_get": {"port": 0, "path": "ready"}, "period_seconds": 0},
            "liveness": {"exec": {"command": []}, "timeout_seconds": 7200, "failure_threshold": 0},
            "max_run_seconds": 0}"#,
        &[
            "readiness.http_get.port: must be between 1 and 65535, got 0",
            "readiness.http_get.path: must start with `/`",
            "readiness.period_seconds: must be between 1 and 86400, got 0",
            "liveness.exec.command: must name a program",
            "liveness.timeout_seconds: must be between 1 and 3600, got 7200",
            "liveness.failure_threshold: must be between 1 and 1000, got 0",
            "max_run_seconds: must be between 1 and 2147483647, got 0",
        ],
    );
}
