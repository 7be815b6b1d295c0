//! Tests of the spec's serde shape and its validation.

use super::*;

fn minimal_spec() -> ProcessSpec {
    ProcessSpec {
        process_name: "web".to_owned(),
        group: None,
        container: ContainerSpec { image_uri: "nginx".to_owned(), ..Default::default() },
        has_public_ip: false,
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
            "container.resource_limit.memory_mib: must be positive, got 0",
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
