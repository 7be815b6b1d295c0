//! The server library's modules import each other without a cycle, so each can be read, tested
//! and moved on top of the ones below it.
//!
//! What is checked, from the `crate::`, `super::` and `self::` paths of every file under
//! `server/` (in `use` items and in code; comments and string literals are skipped):
//! - the top-level modules of the library (those `server/lib.rs` declares with `mod`): every
//!   file counts for the top-level module it sits in, and these modules form no cycle;
//! - within `grpc` and `runtime`, their child modules (`grpc::guard`, `runtime::kube`, ...),
//!   each with everything below it: siblings form no cycle. A child's use of what its parent's
//!   `mod.rs` defines, and the parent's use of its children, are not edges: the parent wires
//!   its children together.
//!
//! The binaries' own files (`main.rs` and the `*_cli.rs` files beside it) sit on top of the
//! library and are not checked. The scan is a small lexer, not a Rust parser: a path reached
//! only through a glob import or a macro that builds it is not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common;

/// The top-level modules whose child modules are also checked against each other.
const SPLIT: [&str; 2] = ["grpc", "runtime"];

#[test]
fn the_server_modules_import_each_other_without_a_cycle() {
    let server = common::repo_root().join("server");
    let library = std::fs::read_to_string(server.join("lib.rs")).expect("read server/lib.rs");
    let mut files = Vec::new();
    collect_files(&server, &server, &mut files);
    let graphs = Graphs::of(&declared_modules(&library), &files);
    assert!(graphs.top.edges.contains_key("grpc"), "the scan found no import of grpc's: {graphs:?}");
    for graph in [&graphs.top, &graphs.split] {
        if let Some(cycle) = graph.cycle() {
            panic!("the server's modules import each other in a cycle:\n{}", graph.describe(&cycle));
        }
    }
}

#[test]
fn a_cycle_is_found_and_named_with_the_imports_that_make_it() {
    let files = [
        ("config.rs", "use crate::metrics::MetricsSettings;\n"),
        ("metrics/mod.rs", "pub mod collect;\n"),
        ("metrics/collect.rs", "fn f() { crate::runtime::Runtime::name(); }\n"),
        ("runtime/mod.rs", "use crate::{config::{Settings, self}, spec::*};\n"),
        ("spec.rs", "// use crate::config;\nconst A: &str = \"crate::config\";\n"),
    ];
    let files: Vec<(String, String)> =
        files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect();
    let modules = ["config", "metrics", "runtime", "spec"].map(String::from).into();
    let graphs = Graphs::of(&modules, &files);
    let cycle = graphs.top.cycle().expect("a cycle");
    let described = graphs.top.describe(&cycle);
    assert_eq!(described.lines().next(), Some("config -> metrics -> runtime -> config"), "{described}");
    assert!(described.contains("runtime/mod.rs: crate::config::Settings"), "{described}");
    assert!(graphs.split.cycle().is_none());
    assert!(!graphs.top.edges.contains_key("spec"), "comments and strings are not imports: {graphs:?}");
}

#[test]
fn children_are_checked_against_their_siblings_not_their_parent() {
    let files = [
        ("grpc/mod.rs", "mod audit; mod guard; use guard::Guard; pub struct Service;\n"),
        ("grpc/guard.rs", "use super::audit;\nuse super::Service;\nmod tests { use super::*; }\n"),
        ("grpc/audit.rs", "use crate::grpc::{Service, guard::Peer};\n"),
    ];
    let files: Vec<(String, String)> =
        files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect();
    let graphs = Graphs::of(&["grpc".to_owned()].into(), &files);
    let cycle = graphs.split.cycle().expect("guard and audit import each other");
    assert_eq!(
        graphs.split.describe(&cycle).lines().next(),
        Some("grpc::audit -> grpc::guard -> grpc::audit")
    );
    assert_eq!(graphs.split.edges.len(), 2, "no edge to or from the parent: {:?}", graphs.split);
}

/// Every `.rs` file under `directory`, with its path relative to `root` and its text.
fn collect_files(root: &Path, directory: &Path, files: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("read {}: {error}", directory.display()))
        .map(|entry| entry.expect("an entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(root, &path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
            let relative = path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
            files.push((relative, text));
        }
    }
}

/// The modules a `lib.rs` declares (`mod name;`, public or not).
fn declared_modules(library: &str) -> BTreeSet<String> {
    let tokens = tokens(library);
    tokens
        .windows(3)
        .filter(|window| window[0] == "mod" && window[2] == ";")
        .map(|window| window[1].clone())
        .collect()
}

/// The module path of a file relative to `server/`: `grpc/guard.rs` is `grpc::guard`.
fn module_of_file(relative: &str) -> Vec<String> {
    let mut path: Vec<String> = relative.trim_end_matches(".rs").split('/').map(String::from).collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// A directed graph of modules, each edge with the first import that makes it.
#[derive(Debug, Default)]
struct Graph {
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

impl Graph {
    fn add(&mut self, from: String, to: String, evidence: impl FnOnce() -> String) {
        self.edges.entry(from).or_default().entry(to).or_insert_with(evidence);
    }

    /// A cycle, as its modules in order (the first not repeated at the end), if there is one.
    fn cycle(&self) -> Option<Vec<String>> {
        let mut done = BTreeSet::new();
        for start in self.edges.keys() {
            let mut path = Vec::new();
            if let Some(cycle) = self.visit(start, &mut path, &mut done) {
                return Some(cycle);
            }
        }
        None
    }

    fn visit<'a>(
        &'a self,
        node: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|on_path| *on_path == node) {
            return Some(path[at..].iter().map(|name| name.to_string()).collect());
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in self.edges.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = self.visit(next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }

    /// The cycle on one line, then each of its edges with the import that makes it.
    fn describe(&self, cycle: &[String]) -> String {
        let mut text = cycle.join(" -> ") + " -> " + &cycle[0];
        for (at, from) in cycle.iter().enumerate() {
            let to = &cycle[(at + 1) % cycle.len()];
            text += &format!("\n  {from} -> {to}, in {}", self.edges[from][to]);
        }
        text
    }
}

/// The two graphs checked: the top-level modules', and the children's of [`SPLIT`].
#[derive(Debug, Default)]
struct Graphs {
    top: Graph,
    split: Graph,
}

impl Graphs {
    /// The graphs of `files` (paths relative to `server/`, and texts), for a library declaring
    /// `modules`.
    fn of(modules: &BTreeSet<String>, files: &[(String, String)]) -> Graphs {
        let children: BTreeSet<Vec<String>> = files
            .iter()
            .map(|(relative, _)| module_of_file(relative))
            .filter(|module| module.len() >= 2 && SPLIT.contains(&module[0].as_str()))
            .map(|module| module[..2].to_vec())
            .collect();
        let mut graphs = Graphs::default();
        for (relative, text) in files {
            let file_module = module_of_file(relative);
            if !modules.contains(&file_module[0]) {
                continue;
            }
            for (here, path) in paths(text) {
                let mut module = file_module.clone();
                module.extend(here);
                let Some(target) = resolve(&module, &path) else { continue };
                let Some(first) = target.first() else { continue };
                let evidence = || format!("{relative}: {}", path.join("::"));
                if *first != module[0] && modules.contains(first) {
                    graphs.top.add(module[0].clone(), first.clone(), evidence);
                } else if *first == module[0]
                    && module.len() >= 2
                    && target.len() >= 2
                    && module[1] != target[1]
                    && children.contains(&module[..2])
                    && children.contains(&target[..2])
                {
                    graphs.split.add(module[..2].join("::"), target[..2].join("::"), evidence);
                }
            }
        }
        graphs
    }
}

/// The absolute module path (without `crate`) a path written in `module` names, or `None` when
/// it starts elsewhere (another crate, a name in scope).
fn resolve(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let (mut target, rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (module.to_vec(), &path[1..]),
        Some("super") => {
            let supers = path.iter().take_while(|segment| *segment == "super").count();
            (module[..module.len().checked_sub(supers)?].to_vec(), &path[supers..])
        }
        _ => return None,
    };
    // `use a::{self, b}` names `a` itself.
    target.extend(rest.iter().filter(|segment| *segment != "self").cloned());
    Some(target)
}

/// The paths a file writes, each with the inline modules (`mod tests { .. }`) it is written in.
fn paths(text: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let tokens = tokens(text);
    let mut found = Vec::new();
    // The inline modules open at this point, with the brace depth inside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending_module = None;
    let mut depth = 0;
    let mut at = 0;
    while at < tokens.len() {
        let token = tokens[at].as_str();
        let here =
            |inline: &[(String, usize)]| inline.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>();
        match token {
            "mod" if tokens.get(at + 2).is_some_and(|next| next == "{") => {
                pending_module = Some(tokens[at + 1].clone());
                at += 2;
                continue;
            }
            "{" => {
                depth += 1;
                if let Some(name) = pending_module.take() {
                    inline.push((name, depth));
                }
            }
            "}" => {
                if inline.last().is_some_and(|(_, opened)| *opened == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            "use" => {
                at += 1;
                let mut trees = Vec::new();
                use_tree(&tokens, &mut at, Vec::new(), &mut trees);
                found.extend(trees.into_iter().map(|path| (here(&inline), path)));
                continue;
            }
            "crate" | "super" | "self" if tokens.get(at + 1).is_some_and(|next| next == "::") => {
                let mut path = vec![token.to_owned()];
                at += 1;
                while tokens.get(at).is_some_and(|next| next == "::")
                    && tokens.get(at + 1).is_some_and(|segment| is_word(segment))
                {
                    path.push(tokens[at + 1].clone());
                    at += 2;
                }
                found.push((here(&inline), path));
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    found
}

/// Expands the use tree at `at` (`a::{b, c::{d as e, *}}`) into the paths it names.
fn use_tree(tokens: &[String], at: &mut usize, prefix: Vec<String>, found: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    while let Some(token) = tokens.get(*at) {
        match token.as_str() {
            "::" => *at += 1,
            "*" => {
                *at += 1;
                break;
            }
            "{" => {
                *at += 1;
                while tokens.get(*at).is_some_and(|token| token != "}") {
                    let before = *at;
                    use_tree(tokens, at, path.clone(), found);
                    // A comma, or something this scan does not know: step over it.
                    if tokens.get(*at).is_some_and(|token| token == ",") || *at == before {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            "as" => {
                *at += 2;
                break;
            }
            word if is_word(word) => {
                path.push(word.to_owned());
                *at += 1;
            }
            _ => break,
        }
    }
    found.push(path);
}

fn is_word(token: &str) -> bool {
    token.chars().next().is_some_and(|first| first.is_alphabetic() || first == '_')
}

/// The tokens of Rust source that matter here: words, `::`, and single punctuation characters;
/// comments, string and character literals and lifetimes are dropped.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        let next = chars.get(at + 1).copied();
        if c == '/' && next == Some('/') {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while at < chars.len() {
                if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
                    nesting += 1;
                    at += 2;
                } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
                    nesting -= 1;
                    at += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    at += 1;
                }
            }
        } else if c == '"' {
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                at += if chars[at] == '\\' { 2 } else { 1 };
            }
            at += 1;
        } else if (c == 'r' || c == 'b') && raw_string_start(&chars, at).is_some() {
            let (hashes, quote) = raw_string_start(&chars, at).expect("checked");
            at = quote + 1;
            let closing: Vec<char> = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            while at < chars.len() && !chars[at..].starts_with(&closing) {
                at += 1;
            }
            at += closing.len();
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{7f}') or a lifetime ('a).
            if next == Some('\\') {
                at += 2;
                while at < chars.len() && chars[at] != '\'' {
                    at += 1;
                }
                at += 1;
            } else if chars.get(at + 2) == Some(&'\'') {
                at += 3;
            } else {
                at += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = at;
            while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                at += 1;
            }
            tokens.push(chars[start..at].iter().collect());
        } else if c == ':' && next == Some(':') {
            tokens.push("::".to_owned());
            at += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            at += 1;
        }
    }
    tokens
}

/// For a raw string (`r"..."`, `r#"..."#`, `br"..."`) starting at `at`: its number of `#` and
/// where its opening quote is.
fn raw_string_start(chars: &[char], at: usize) -> Option<(usize, usize)> {
    if at > 0 && (chars[at - 1].is_alphanumeric() || chars[at - 1] == '_') {
        return None;
    }
    let mut cursor = at;
    if chars[cursor] == 'b' {
        cursor += 1;
    }
    if chars.get(cursor) != Some(&'r') {
        return None;
    }
    cursor += 1;
    let hashes = chars[cursor..].iter().take_while(|c| **c == '#').count();
    (chars.get(cursor + hashes) == Some(&'"')).then_some((hashes, cursor + hashes))
}
