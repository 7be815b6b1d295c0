//! The documentation points at things that exist: every relative Markdown link of the README,
//! ARCHITECTURE.md, the pages of `docs/` (decision records included), `benches/README.md`,
//! `deploy/README.md` and the simulator's README names a file or directory of the repository (and,
//! for an anchor into a Markdown file, one of its headings); and every long flag the docs give
//! `hydroplane`, `hpctl` or `kube-sim` (in a code block or an inline code span, after the command
//! and its subcommands) is one that binary's command line accepts.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

/// Pages that work in progress elsewhere adds, which the docs already link to. A link to one is
/// checked like any other once the page exists; until then it is allowed to point nowhere.
const PENDING_PAGES: &[&str] = &["docs/runtime-docker.md"];

/// The Markdown documents checked, relative to the repository's root.
fn documents() -> Vec<String> {
    let root = common::repo_root();
    let mut files: Vec<String> = ["README.md", "ARCHITECTURE.md", "benches/README.md", "deploy/README.md"]
        .iter()
        .map(|file| file.to_string())
        .chain(std::iter::once("tests/kube-sim/README.md".to_owned()))
        .collect();
    for directory in ["docs", "docs/decisions"] {
        let mut pages: Vec<String> = std::fs::read_dir(root.join(directory))
            .unwrap_or_else(|error| panic!("read {directory}: {error}"))
            .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".md"))
            .map(|name| format!("{directory}/{name}"))
            .collect();
        pages.sort();
        files.extend(pages);
    }
    files
}

fn read(file: &str) -> String {
    std::fs::read_to_string(common::repo_root().join(file))
        .unwrap_or_else(|error| panic!("read {file}: {error}"))
}

/// A document split into what is prose and what is code.
struct Parts {
    /// Prose lines outside fenced blocks, with their inline code spans, and their line numbers.
    prose: Vec<(usize, String)>,
    /// The lines of fenced blocks.
    code_lines: Vec<String>,
}

fn parts(text: &str) -> Parts {
    let (mut prose, mut code_lines) = (Vec::new(), Vec::new());
    let mut in_block = false;
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if in_block {
            code_lines.push(line.to_owned());
        } else {
            prose.push((index + 1, line.to_owned()));
        }
    }
    Parts { prose, code_lines }
}

/// The inline code spans of a prose line (single backticks; a double-backtick span's content too).
fn code_spans(line: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = "`".repeat(ticks);
        let after = &rest[start + ticks..];
        match after.find(&fence) {
            Some(end) => {
                spans.push(after[..end].to_owned());
                rest = &after[end + ticks..];
            }
            None => break,
        }
    }
    spans
}

/// A prose line without its inline code spans (a link inside code is no link).
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = "`".repeat(ticks);
        let after = &rest[start + ticks..];
        match after.find(&fence) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                rest = after;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the inline links `[text](target)` and images of a line of prose.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']);
        targets.push(target.to_owned());
        rest = &after[end..];
    }
    targets
}

/// The anchors GitHub gives the headings of a Markdown text: lower case, punctuation dropped,
/// spaces as `-`, and `-1`, `-2`... after a repeated one.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in parts(text).prose {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_default();
        anchors.insert(if *count == 0 { slug.clone() } else { format!("{slug}-{count}") });
        *count += 1;
    }
    anchors
}

/// Where a relative link of `file` leads, relative to the repository's root, without `..`.
fn resolve(file: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Path::new(file).parent().map_or(Vec::new(), |parent| {
        parent.to_str().expect("utf-8").split('/').filter(|part| !part.is_empty()).collect()
    });
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// The problem with one link of `file`, if it has one.
fn link_problem(file: &str, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("an empty link".to_owned());
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let linked = if path.is_empty() { file.to_owned() } else { resolve(file, path) };
    let on_disk = common::repo_root().join(&linked);
    if !on_disk.exists() {
        if PENDING_PAGES.contains(&linked.as_str()) {
            return None;
        }
        return Some(format!("`{linked}` does not exist"));
    }
    match anchor {
        Some(anchor) if linked.ends_with(".md") => {
            let known = anchors(&read(&linked));
            (!known.contains(anchor))
                .then(|| format!("`{linked}` has no heading `#{anchor}`; it has {known:?}"))
        }
        _ => None,
    }
}

#[test]
fn every_relative_link_of_the_docs_leads_somewhere() {
    let mut problems = Vec::new();
    let mut count = 0;
    for file in documents() {
        for (number, line) in parts(&read(&file)).prose {
            for target in link_targets(&line) {
                count += 1;
                if let Some(problem) = link_problem(&file, &target) {
                    problems.push(format!("{file}:{number}: ({target}): {problem}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
    assert!(count > 50, "only {count} links found: is the parser reading the docs?");
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    assert_eq!(link_problem("docs/hpctl.md", "grpc-api.md#rust-client"), None);
    assert_eq!(link_problem("docs/hpctl.md", "../README.md#quickstart-local-runtime"), None);
    assert_eq!(link_problem("README.md", "https://example.com/nowhere"), None);
    assert!(link_problem("docs/hpctl.md", "no-such-page.md").is_some());
    assert!(link_problem("docs/hpctl.md", "grpc-api.md#no-such-heading").is_some());
    assert!(link_problem("docs/hpctl.md", "#no-such-heading").is_some());
    let headings = anchors("# A: `b` (c)\n## A: `b` (c)\n```\n# not a heading\n```\n### 150,000 pods\n");
    assert_eq!(
        headings,
        BTreeSet::from(["a-b-c".to_owned(), "a-b-c-1".to_owned(), "150000-pods".to_owned()])
    );
}

/// The binaries whose flags the docs give, and where each is.
fn binary(name: &str) -> Option<PathBuf> {
    match name {
        "hydroplane" => Some(PathBuf::from(env!("CARGO_BIN_EXE_hydroplane"))),
        "hpctl" => Some(common::hpctl_binary()),
        "kube-sim" => Some(common::kube_sim_binary()),
        _ => None,
    }
}

/// A command the docs show: the binary, and its arguments.
#[derive(Debug, PartialEq)]
struct Invocation {
    program: String,
    args: Vec<String>,
}

/// The invocations of our binaries in one piece of shell (a block's line or an inline span).
fn invocations(text: &str) -> Vec<Invocation> {
    // A table cell writes `|` as `\|`; a shell comment is no command.
    let text = text.replace("\\|", "/");
    let text = text.split(" #").next().unwrap_or("");
    let mut found = Vec::new();
    let mut segments = vec![text.to_owned()];
    for separator in [" | ", " && ", " || ", "; ", "$(", "<(", " & "] {
        segments = segments.iter().flat_map(|segment| segment.split(separator).map(str::to_owned)).collect();
    }
    for segment in segments {
        let mut words = segment
            .split_whitespace()
            .map(|word| word.trim_start_matches(['(', '$']))
            .filter(|word| !word.is_empty());
        let mut first = words.next();
        // Environment assignments before the command.
        while first.is_some_and(|word| word.contains('=') && !word.starts_with('-')) {
            first = words.next();
        }
        let Some(first) = first else { continue };
        let rest: Vec<String> = words.map(str::to_owned).collect();
        let program = first.rsplit('/').next().unwrap_or(first);
        if program == "cargo" {
            // `cargo run -p kube-sim -- ARGS` or `cargo run --bin hydroplane -- ARGS`.
            let named = rest
                .windows(2)
                .find(|pair| pair[0] == "-p" || pair[0] == "--bin")
                .map(|pair| pair[1].clone());
            if rest.first().is_some_and(|word| word == "run")
                && let Some(named) = named.filter(|named| binary(named).is_some())
            {
                let args = rest.iter().skip_while(|word| *word != "--").skip(1).cloned().collect();
                found.push(Invocation { program: named, args });
            }
        } else if binary(program).is_some() {
            found.push(Invocation { program: program.to_owned(), args: rest });
        }
    }
    found
}

/// The long flags of an invocation, each with the subcommands before it (`hpctl logs --tail`
/// gives `(["logs"], "--tail")`). A word that names a subcommand of the command so far is one.
fn flags(
    invocation: &Invocation,
    subcommands: &mut dyn FnMut(&[String]) -> Vec<String>,
) -> Vec<(Vec<String>, String)> {
    let mut path: Vec<String> = Vec::new();
    let mut found = Vec::new();
    for word in &invocation.args {
        let word = word.trim_matches(['[', ']', '(', ')', '\'', '"', ',', '`']);
        for part in word.split(['/', '|']) {
            if let Some(name) = part.strip_prefix("--") {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((path.clone(), format!("--{name}")));
                }
            }
        }
        if !word.starts_with('-') && subcommands(&path).iter().any(|command| command == word) {
            path.push(word.to_owned());
        }
    }
    found
}

/// What `program path... --help` prints.
fn help(program: &str, path: &[String]) -> String {
    let output = Command::new(binary(program).expect("one of ours"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap_or_else(|error| panic!("run {program} --help: {error}"));
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The subcommands a help text lists under `Commands:`.
fn commands_of(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|command| *command != "help")
        .map(|command| command.trim_end_matches(',').to_owned())
        .collect()
}

/// Whether `text` names `flag` as a whole word.
fn names(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        let after = text[at + flag.len()..].chars().next();
        let before = text[..at].chars().next_back();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Whether the command line of `program path...` takes `flag`: its help (or a parent's, for a
/// global flag) names it, or, for a hidden alias, the parser does not call it unexpected.
fn accepts(
    program: &str,
    path: &[String],
    flag: &str,
    helps: &mut HashMap<(String, Vec<String>), String>,
) -> bool {
    let mut help_of = |path: &[String]| {
        helps.entry((program.to_owned(), path.to_vec())).or_insert_with(|| help(program, path)).clone()
    };
    if (0..=path.len()).any(|depth| names(&help_of(&path[..depth]), flag)) {
        return true;
    }
    // With a value attached, the next word cannot be taken for one, so `--help` ends the
    // parse; a server that would be reached anyway is none.
    let output = Command::new(binary(program).expect("one of ours"))
        .args(path)
        .args([&format!("{flag}=x"), "--help"])
        .env("HYDROPLANE_SERVER", "unix:/nonexistent/hydroplane.sock")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {program}: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    !stderr.contains(&format!("unexpected argument '{flag}'"))
}

#[test]
fn every_flag_the_docs_give_our_binaries_exists() {
    let mut helps: HashMap<(String, Vec<String>), String> = HashMap::new();
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for file in documents() {
        let text = read(&file);
        let parts = parts(&text);
        let pieces =
            parts.code_lines.iter().cloned().chain(parts.prose.iter().flat_map(|(_, line)| code_spans(line)));
        for piece in pieces {
            for invocation in invocations(&piece) {
                let program = invocation.program.clone();
                let mut subcommands = |path: &[String]| {
                    let help = helps
                        .entry((program.clone(), path.to_vec()))
                        .or_insert_with(|| help(&program, path))
                        .clone();
                    commands_of(&help)
                };
                for (path, flag) in flags(&invocation, &mut subcommands) {
                    if !checked.insert((program.clone(), path.clone(), flag.clone())) {
                        continue;
                    }
                    if !accepts(&program, &path, &flag, &mut helps) {
                        let command = std::iter::once(program.as_str())
                            .chain(path.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(" ");
                        problems
                            .push(format!("{file}: `{command}` has no flag {flag} (in `{}`)", piece.trim()));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "flags the docs give that the binaries do not take:\n{}",
        problems.join("\n")
    );
    for program in ["hydroplane", "hpctl", "kube-sim"] {
        let count = checked.iter().filter(|(name, _, _)| name == program).count();
        assert!(count >= 3, "only {count} flags of {program} found in the docs: is the parser reading them?");
    }
}

#[test]
fn the_flag_checker_reads_commands_as_a_shell_would() {
    let found = invocations(
        "export T=$(hydroplane token create --tokens-file t.yml) && hpctl --token \"$T\" list -l a=b | head -1",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].program, "hydroplane");
    assert_eq!(found[1].args, ["--token", "\"$T\"", "list", "-l", "a=b"]);
    let found = invocations("cargo run -p kube-sim -- --kubeconfig-out /tmp/kubeconfig");
    assert_eq!(
        found,
        [Invocation {
            program: "kube-sim".into(),
            args: vec!["--kubeconfig-out".into(), "/tmp/kubeconfig".into()]
        }]
    );
    assert!(invocations("kubectl -n hydroplane --context x port-forward svc/hydroplane 50051").is_empty());
    let invocation = invocations("hpctl logs NAME [-f/--follow] [--since DURATION\\|TIME]").remove(0);
    let mut subcommands =
        |path: &[String]| if path.is_empty() { vec!["logs".to_owned()] } else { Vec::new() };
    let found = flags(&invocation, &mut subcommands);
    let logs = vec!["logs".to_owned()];
    assert_eq!(found, [(logs.clone(), "--follow".to_owned()), (logs, "--since".to_owned())]);
    // A flag no binary has is caught, through the help text and through the parser.
    let mut helps = HashMap::new();
    assert!(!accepts("hpctl", &["list".to_owned()], "--no-such-flag", &mut helps));
    assert!(accepts("hpctl", &["list".to_owned()], "--selector", &mut helps));
}
