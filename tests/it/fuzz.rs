//! Bounded fuzzing (proptest, a few thousand cases in all) of everything that reads untrusted
//! input before a runtime sees it: the settings parser (YAML-ish text, and settings with extreme
//! numbers), the spec JSON parser with validation, and the conversion of wire requests
//! (`StartRequest`) into validated specs. Results may be Ok or Err; what is checked is that
//! nothing panics, and that errors are one line where the contract says so.

use std::collections::HashMap;

use hydroplane::config::{NUMBER_RANGES, Settings};
use hydroplane::grpc::start::Start;
use hydroplane::proto;
use hydroplane::spec::ProcessSpec;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property: enough to find the classes of trouble, few enough for a loaded machine.
const CASES: u32 = 768;

fn config() -> Config {
    Config { cases: CASES, failure_persistence: None, ..Config::default() }
}

/// Numbers as they may be written in YAML, the extreme and the odd among them.
fn yaml_number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "-1",
            "1e300",
            "-1e300",
            "1e-15",
            "1e-300",
            ".nan",
            ".NaN",
            ".inf",
            "-.inf",
            "+.inf",
            "9e999",
            "-9e999",
            "18446744073709551616",
            "-9223372036854775809",
            "340282366920938463463374607431768211456",
            "0x10",
            "0o17",
            "1_000",
            "1.5",
            "4294967296",
            "2147483648",
            "1e20",
            "\"5\"",
            "~",
            "true",
            "[]",
            "{}",
        ])
        .prop_map(str::to_owned),
        any::<f64>().prop_map(|number| number.to_string()),
        any::<i64>().prop_map(|number| number.to_string()),
        any::<u64>().prop_map(|number| number.to_string()),
    ]
}

/// A settings file that sets a few numeric keys (with what they need around them) to extreme
/// values, and sometimes keys that do not apply.
fn structured_settings() -> impl Strategy<Value = String> {
    let keys: Vec<&'static str> = NUMBER_RANGES.iter().map(|range| range.key).collect();
    let runtime_type = prop::sample::select(vec!["local", "kubernetes", "eks"]);
    (runtime_type, prop::collection::vec((prop::sample::select(keys), yaml_number()), 0..6), any::<bool>())
        .prop_map(|(runtime_type, settings, store_location)| {
            let mut sections: HashMap<&str, Vec<String>> = HashMap::new();
            let mut runtime = vec![format!("  runtime_type: {runtime_type}")];
            if runtime_type == "eks" {
                runtime.push("  cluster_name: c\n  region: r".to_owned());
            }
            let mut assume_role = None;
            for (key, value) in settings {
                let (section, name) = key.split_once('.').unwrap_or(("", key));
                match (section, name) {
                    ("runtime", "credentials.assume_role.session_duration_seconds") => {
                        assume_role = Some(value)
                    }
                    ("runtime", _) => runtime.push(format!("  {name}: {value}")),
                    _ => sections.entry(section).or_default().push(format!("  {name}: {value}")),
                }
            }
            if let Some(value) = assume_role {
                runtime.push(format!(
                    "  credentials:\n    access_key:\n      access_key_id: {{secret_name: s}}\n      \
                     secret_access_key: {{secret_name: s}}\n    assume_role:\n      role_arn: r\n      \
                     session_duration_seconds: {value}"
                ));
            }
            let mut text = format!("runtime:\n{}\n", runtime.join("\n"));
            for (section, lines) in sections {
                if section == "process_culling" && !lines.iter().any(|line| line.contains("max_age_minutes"))
                {
                    text.push_str("process_culling:\n  max_age_minutes: 1\n");
                } else {
                    text.push_str(&format!("{section}:\n"));
                }
                for line in lines {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            if store_location {
                text.push_str("secret_store:\n  secret_store_type: none\n  store_location: /x\n");
            }
            text
        })
}

/// Text made of the pieces YAML is made of, in any order.
fn yaml_ish_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "runtime:",
            "runtime_type: local",
            "runtime_type: eks",
            "secret_store:",
            "process_culling:",
            "limits:",
            "max_age_minutes:",
            "culling_interval_minutes:",
            "stop_grace_seconds:",
            "namespace:",
            "tls:",
            "auth:",
            "\n",
            "\n  ",
            "\n    ",
            "\n   ",
            " ",
            ":",
            "- ",
            "[",
            "]",
            "{",
            "}",
            ",",
            "\"",
            "'",
            "&a",
            "*a",
            "!!str",
            "<<: *a",
            "#",
            "---",
            "...",
            "|",
            ">",
            "\t",
            "%YAML 1.2",
            "?",
            "\\",
            "\u{feff}",
        ])
        .prop_map(str::to_owned),
        yaml_number(),
        "[a-z_]{1,12}",
    ];
    prop_oneof![prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat()), any::<String>(),]
}

#[track_caller]
fn check_settings(text: &str) {
    if let Err(error) = Settings::parse(text) {
        assert!(!error.contains('\n'), "a settings error of more than one line: {error:?}\nfor {text:?}");
    }
}

/// JSON values of any shape, small.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,16}", inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Specs in the right shape with wrong or extreme values.
fn spec_json() -> impl Strategy<Value = serde_json::Value> {
    let port = (any::<i64>(), prop::option::of(any::<i64>()), prop::sample::select(vec!["tcp", "udp", "TCP", "sctp"]))
        .prop_map(|(port, host, protocol)| {
            serde_json::json!({"container_port": port % 70_000, "host_port": host.map(|host| host % 70_000), "protocol": protocol})
        });
    let resources = (any::<f64>(), any::<i64>(), json_value())
        .prop_map(|(cpu, memory, odd)| serde_json::json!({"cpu_vcpu": cpu, "memory_mib": memory, "x": odd}));
    (
        "[a-z0-9-]{0,70}",
        prop::collection::vec(port, 0..6),
        prop::collection::vec(("[A-Z_0-9]{0,4}", ".{0,4}"), 0..6),
        resources,
        prop::collection::vec(".{0,6}", 0..4),
        any::<bool>(),
    )
        .prop_map(|(name, ports, env, mut resources, command, drop_odd)| {
            if drop_odd {
                resources.as_object_mut().map(|resources| resources.remove("x"));
            }
            let env: Vec<_> = env
                .into_iter()
                .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
                .collect();
            serde_json::json!({"process_name": name, "container": {"image_uri": "i", "command": command,
                "env": env, "ports": ports, "resource_request": resources}})
        })
}

#[track_caller]
fn check_spec_json(json: &str) {
    if let Ok(spec) = serde_json::from_str::<ProcessSpec>(json)
        && let Err(error) = spec.validate()
    {
        for violation in &error.0 {
            assert!(!violation.to_string().contains('\n'), "a violation of more than one line: {violation}");
        }
    }
}

/// Wire requests with arbitrary values in every field.
fn start_request() -> impl Strategy<Value = proto::StartRequest> {
    let secret = (".{0,6}", prop::option::of(".{0,6}"))
        .prop_map(|(secret_name, key)| proto::SecretReference { secret_name, key });
    let variable = (
        ".{0,6}",
        prop::option::of(prop_oneof![
            ".{0,6}".prop_map(proto::environment_variable::Source::Value),
            secret.clone().prop_map(proto::environment_variable::Source::Secret),
        ]),
    )
        .prop_map(|(name, source)| proto::EnvironmentVariable { name, source });
    let port = (
        any::<u32>(),
        prop::option::of(any::<u32>()),
        prop::sample::select(vec!["", "tcp", "udp", "Udp", "x"]),
        prop::option::of("[a-z0-9-]{0,17}"),
    )
        .prop_map(|(container_port, host_port, protocol, name)| proto::PortMapping {
            container_port: container_port % 70_000,
            host_port: host_port.map(|port| port % 70_000),
            protocol: protocol.to_owned(),
            name,
        });
    let resources = (prop::option::of(any::<f64>()), prop::option::of(any::<u64>()))
        .prop_map(|(cpu_vcpu, memory_mib)| proto::ResourceSpec { cpu_vcpu, memory_mib });
    let username = prop::option::of(prop::option::of(prop_oneof![
        ".{0,4}".prop_map(proto::value_or_secret::Source::Value),
        secret.clone().prop_map(proto::value_or_secret::Source::Secret),
    ]))
    .prop_map(|username| username.map(|source| proto::ValueOrSecret { source }));
    let container = (
        ".{0,8}",
        prop::collection::vec(".{0,6}", 0..5),
        prop::collection::vec(variable, 0..6),
        prop::collection::vec(port, 0..6),
        (prop::option::of(resources.clone()), prop::option::of(resources)),
        prop::collection::hash_map(".{0,8}", ".{0,8}", 0..4),
        (username, prop::option::of(secret), prop::option::of(".{0,8}")),
    )
        .prop_map(
            |(
                image_uri,
                command,
                env,
                ports,
                (resource_request, resource_limit),
                node_selector,
                (username, password, working_dir),
            )| {
                proto::ContainerSpec {
                    image_uri,
                    command,
                    env,
                    ports,
                    resource_request,
                    resource_limit,
                    node_selector,
                    username,
                    password,
                    working_dir,
                }
            },
        );
    let spec =
        ("[a-z0-9-]{0,10}|.{0,10}", prop::option::of(".{0,8}"), prop::option::of(container), any::<bool>())
            .prop_map(|(process_name, group, container, has_public_ip)| proto::ProcessSpec {
                process_name,
                group,
                container,
                has_public_ip,
                ..Default::default()
            });
    let wait_timeout = prop::option::of(prop_oneof![
        (any::<i64>(), any::<i32>()),
        (0i64..4000, -2_000_000_000i32..2_000_000_000),
    ])
    .prop_map(|timeout| timeout.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }));
    (prop::option::of(spec), any::<bool>(), wait_timeout)
        .prop_map(|(spec, wait, wait_timeout)| proto::StartRequest { spec, wait, wait_timeout })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn settings_text_never_panics(text in yaml_ish_text()) {
        check_settings(&text);
    }

    #[test]
    fn settings_with_extreme_numbers_never_panic(text in structured_settings()) {
        check_settings(&text);
    }

    #[test]
    fn any_json_as_a_spec_never_panics(value in json_value()) {
        check_spec_json(&value.to_string());
        check_spec_json(&serde_json::json!({"process_name": "p", "container": value}).to_string());
    }

    #[test]
    fn specs_with_extreme_values_never_panic(value in spec_json()) {
        check_spec_json(&value.to_string());
    }

    #[test]
    fn any_start_request_converts_without_panicking(request in start_request()) {
        if let Err(error) = Start::parse(request) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}
