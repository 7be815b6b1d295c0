//! The crates along the seams: hpctl links no server dependency (no kube, k8s-openapi, AWS SDK or
//! Docker client), the workspace has one label-selector parser (`hydroplane-core`'s), and the
//! contract in `proto/` is compiled by one build script.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::repo_root;

/// The packages hpctl must not link, by name or name prefix: the server's runtimes and SDKs.
const SERVER_ONLY: [&str; 5] = ["kube", "k8s-openapi", "aws-", "bollard", "hydroplane "];

#[test]
fn hpctl_links_no_kubernetes_aws_or_server_crate() {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["tree", "-p", "hpctl", "-e", "normal", "--prefix", "none", "--offline", "--locked"])
        .current_dir(repo_root())
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(tree.lines().any(|line| line.starts_with("hydroplane-client ")), "{tree}");
    let linked: Vec<&str> =
        tree.lines().filter(|line| SERVER_ONLY.iter().any(|name| line.starts_with(name))).collect();
    assert!(linked.is_empty(), "hpctl links {linked:?}");
}

#[test]
fn one_label_selector_parser_in_the_workspace() {
    let root = repo_root();
    // A parser defines the selector type or reads the grammar's `notin` keyword (the patterns are
    // cut in two so that this file does not match them).
    let patterns =
        [concat!("struct Label", "Selector"), concat!("impl Label", "Selector"), concat!("\"not", "in\"")];
    let parsers = rust_files(&root, |text| patterns.iter().any(|pattern| text.contains(pattern)));
    assert_eq!(parsers, [Path::new("core/src/spec/labels.rs")]);
}

#[test]
fn the_contract_is_compiled_by_one_build_script() {
    let compilers: Vec<PathBuf> =
        rust_files(&repo_root(), |text| text.contains(concat!("protox", "::compile")));
    assert_eq!(compilers, [Path::new("core/build.rs")]);
}

/// The workspace's Rust files (not build output) whose text passes `wanted`, relative to `root`.
fn rust_files(root: &Path, wanted: impl Fn(&str) -> bool + Copy) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read a folder").flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("target") || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs")
                && std::fs::read_to_string(&path).is_ok_and(|text| wanted(&text))
            {
                found.push(path.strip_prefix(root).expect("under the root").to_path_buf());
            }
        }
    }
    found.sort();
    found
}
