//! `hpctl`: the command-line client of a Hydroplane server, built on the `hydroplane-client` crate
//! (`client/rust/`), which connects, calls and resumes watches, and on `hydroplane-core` (`core/`)
//! for the spec files it reads; its own package, so it links no kube, AWS SDK or server.
//!
//! Each subcommand has its own file; `connect.rs` turns the connection flags into the crate's
//! options (a plain, TLS (`https://`, optionally with a client certificate) or Unix-socket
//! (`unix:PATH`) server, a bearer token sent with every call, and `--timeout`) and its errors
//! into one line with hints that name the flags. Output is JSON on stdout (one object per line
//! for `watch`) unless `-o` (`format.rs`), `HPCTL_OUTPUT` or the config file (`config.rs`) asks
//! for YAML, a table or names; errors are one clear line on stderr and a non-zero exit code, and
//! never show the token. The Python hpctl's spellings (`list --group_name`, `stop NAME -g`, `-d/--debug`) are
//! accepted, so that its scripts keep working.

mod config;
mod connect;
mod describe;
mod format;
mod list;
mod logs;
mod output;
mod start;
mod stop;
mod wait_ready;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{RunError, warn};

/// Controls the processes of a Hydroplane server.
#[derive(Debug, Parser)]
#[command(name = "hpctl", version, about)]
struct Cli {
    /// Where the server is, what to trust there, the token to send and how long to wait.
    #[command(flatten)]
    connection: connect::ConnectArgs,
    /// The Python hpctl's flag for stack traces; accepted so that its scripts keep working
    /// (errors are one complete line either way).
    #[arg(short, long, global = true, hide = true)]
    debug: bool,
    /// How to print: json (the default), yaml, table, wide (the table with labels, image and
    /// node) or name (names only, one per line) [default: HPCTL_OUTPUT, else the config file's
    /// `output`, else json].
    #[arg(short = 'o', long = "output", global = true, env = "HPCTL_OUTPUT", value_name = "FORMAT")]
    output: Option<format::Format>,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Lists processes as a JSON array (or as -o says).
    List(list::ListArgs),
    /// Starts a process from a Hydroplane JSON spec and prints it.
    Start(start::StartArgs),
    /// Stops a process, every process of a group, or every process a label selector matches, and
    /// prints the names stopped.
    Stop(stop::StopArgs),
    /// Follows process changes, one JSON object per line, until interrupted.
    Watch(watch::WatchArgs),
    /// Prints one process, its spec (secret references only) and its history as a JSON object.
    Describe(describe::DescribeArgs),
    /// Prints what a process wrote to stdout and stderr, raw; with -f, follows it.
    Logs(logs::LogsArgs),
    /// Waits until the server answers its health check with SERVING (at most --timeout seconds),
    /// retrying while it is not listening yet: for scripts that start `hydroplane &`.
    WaitReady,
    /// Prints a completion script for a shell: `source <(hpctl completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The exit code for a stdout that closed (`hpctl list | head -1`): the one a shell reports for
/// a program that SIGPIPE ended (128 + 13), which is what tools that write to a pipe do.
const STDOUT_CLOSED: u8 = 141;

/// The exit code for wrong flags, as clap's own.
const USAGE: u8 = 2;

/// The exit code of `start --wait` for a process that did not start: it ended FAILED, or EXITED
/// with a non-zero code (the process is printed on stdout as usual, the reason on stderr).
const PROCESS_FAILED: u8 = 3;

/// Parses the flags, runs the subcommand and prints any failure as one line.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            warn(&format!("error: cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::StdoutClosed) => ExitCode::from(STDOUT_CLOSED),
        Err(RunError::ProcessFailed(why)) => {
            warn(&format!("error: {why}"));
            ExitCode::from(PROCESS_FAILED)
        }
        Err(RunError::Call(status)) => {
            // Only reached before a plan exists, which cannot happen: run explains every call.
            warn(&format!("error: {}", status.message()));
            ExitCode::FAILURE
        }
        Err(RunError::Other(error)) => {
            warn(&format!("error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Prints clap's error as one line (its usage and `--help` advice left out), or the help or
/// version it asked for as is.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.use_stderr() { ExitCode::from(USAGE) } else { ExitCode::SUCCESS };
    }
    warn(&one_line(&error.render().to_string()));
    ExitCode::from(USAGE)
}

/// Clap's message on one line: its lines up to the usage, with its tips in parentheses.
fn one_line(rendered: &str) -> String {
    let lines = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty());
    let (tips, text): (Vec<&str>, Vec<&str>) = lines.partition(|line| line.starts_with("tip: "));
    let text = if text.is_empty() { "error: invalid arguments".to_owned() } else { text.join(" ") };
    if tips.is_empty() {
        text
    } else {
        let tips: Vec<&str> = tips.iter().map(|tip| tip.trim_start_matches("tip: ")).collect();
        format!("{text} ({})", tips.join("; "))
    }
}

/// Connects and runs the subcommand.
async fn run(mut cli: Cli) -> Result<(), RunError> {
    if let Command::Completion { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "hpctl", &mut script);
        return format::print_text(&String::from_utf8_lossy(&script));
    }
    let config = match config::path() {
        Some(path) => config::load(&path)?,
        None => config::Config::default(),
    };
    cli.connection.apply(&config);
    let output = cli.output.or(config.output).unwrap_or_default();
    // Mistakes in the flags or the spec file are reported before any connection is tried.
    let plan = cli.connection.plan().map_err(anyhow::Error::from)?;
    if let Some(warning) = plan.clear_text_token_warning() {
        eprintln!("{warning}");
    }
    let command = match cli.command {
        Command::Start(args) => Ready::Start(Box::new(start::read_request(&args, &cli.connection.timeout)?)),
        Command::Stop(args) => Ready::Stop(args.target()?),
        Command::List(args) => Ready::List(args),
        Command::Watch(args) => Ready::Watch(args),
        Command::Describe(args) => Ready::Describe(args),
        Command::Logs(args) => Ready::Logs(args),
        Command::Completion { .. } => return Ok(()),
        Command::WaitReady => {
            return match wait_ready::run(&plan).await {
                Err(RunError::Call(status)) => Err(RunError::Other(plan.explain(status).into())),
                other => other,
            };
        }
    };
    let client = plan.connect().await.map_err(anyhow::Error::from)?;
    let result = match command {
        Ready::List(args) => list::run(&client, args, output).await,
        Ready::Start(request) => start::run(&client, *request, output).await,
        Ready::Stop(target) => stop::run(&client, target, output).await,
        Ready::Watch(args) => watch::run(&client, args, output).await,
        Ready::Describe(args) => describe::run(&client, args, output).await,
        Ready::Logs(args) => logs::run(&client, args).await,
    };
    match result {
        Err(RunError::Call(status)) => Err(RunError::Other(plan.explain(status).into())),
        other => other,
    }
}

/// A subcommand whose arguments are checked, ready to run.
enum Ready {
    /// `list`.
    List(list::ListArgs),
    /// `start`, with its spec read.
    Start(Box<start::StartRequest>),
    /// `stop`, with its target.
    Stop(stop::Target),
    /// `watch`.
    Watch(watch::WatchArgs),
    /// `describe`.
    Describe(describe::DescribeArgs),
    /// `logs`.
    Logs(logs::LogsArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses an hpctl command line; the subcommand, or the one-line error.
    fn parse(line: &str) -> Result<Cli, String> {
        let words = std::iter::once("hpctl").chain(line.split_whitespace());
        Cli::try_parse_from(words).map_err(|error| one_line(&error.render().to_string()))
    }

    #[track_caller]
    fn check_stop(line: &str, expected: Result<stop::Target, &str>) {
        let target = match parse(line).unwrap_or_else(|error| panic!("{line}: {error}")).command {
            Command::Stop(args) => args.target().map_err(|error| error.to_string()),
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(target, expected.map_err(str::to_owned), "{line}");
    }

    #[test]
    fn stop_takes_ours_and_the_python_spellings() {
        use stop::Target::{Group, Process, Selected};
        check_stop("stop web", Ok(Process("web".into())));
        check_stop("stop -g site", Ok(Group("site".into())));
        check_stop("stop --group site", Ok(Group("site".into())));
        check_stop("stop --group=site", Ok(Group("site".into())));
        // The Python hpctl: `-g` is a switch saying that NAME is a group.
        check_stop("stop site -g", Ok(Group("site".into())));
        check_stop("stop site --group", Ok(Group("site".into())));
        check_stop("-s h:1 stop site -g", Ok(Group("site".into())));
        check_stop(
            "stop web -g site",
            Err("give a process name or -g GROUP, not both (got `web` and -g `site`)"),
        );
        check_stop("stop -g", Err("-g needs a group: `hpctl stop -g GROUP`"));
        check_stop(
            "stop",
            Err(
                "give a process name, -g GROUP or -l SELECTOR: `hpctl stop NAME`, `hpctl stop -g GROUP` or `hpctl stop -l SELECTOR`",
            ),
        );
        check_stop("stop -l tier=web", Ok(Selected("tier=web".into())));
        check_stop("stop --selector tier!=web,!canary", Ok(Selected("tier!=web,!canary".into())));
        check_stop("stop --selector=example.com/team", Ok(Selected("example.com/team".into())));
        // An empty selector goes to the server, which refuses it in its own words.
        check_stop("stop --selector=", Ok(Selected(String::new())));
        check_stop("stop -l -tier=web", Ok(Selected("-tier=web".into())));
        check_stop(
            "stop web -l tier=web",
            Err("give one of a process name, -g GROUP or -l SELECTOR (got `web` and -l `tier=web`)"),
        );
        check_stop(
            "stop -g site -l tier=web",
            Err("give one of a process name, -g GROUP or -l SELECTOR (got -g `site` and -l `tier=web`)"),
        );
        check_stop(
            "stop -l tier=web -g",
            Err("give one of a process name, -g GROUP or -l SELECTOR (got -g and -l `tier=web`)"),
        );
    }

    /// Parses `list` or `watch` and checks that its arguments, as Debug shows them, contain each
    /// of `expected`.
    #[track_caller]
    fn check_filters(line: &str, expected: &[&str]) {
        let cli = parse(line).unwrap_or_else(|error| panic!("{line}: {error}"));
        let args = match cli.command {
            Command::List(args) => format!("{args:?}"),
            Command::Watch(args) => format!("{args:?}"),
            other => panic!("{line}: {other:?}"),
        };
        for part in expected {
            assert!(args.contains(part), "{line}: {args} lacks {part}");
        }
    }

    #[test]
    fn list_and_watch_take_a_selector_and_list_a_page_size() {
        check_filters("list", &["selector: None", "page_size: None"]);
        check_filters("list -l tier=web", &["selector: Some(\"tier=web\")"]);
        check_filters(
            "list --selector=tier!=web -g site",
            &["selector: Some(\"tier!=web\")", "group: Some(\"site\")"],
        );
        check_filters(
            "list -l !canary --page-size 2",
            &["selector: Some(\"!canary\")", "page_size: Some(2)"],
        );
        check_filters(
            "watch -l tier=web --process web",
            &["selector: Some(\"tier=web\")", "process_name: Some(\"web\")"],
        );
        check_error(
            "list --page-size 0",
            "error: invalid value '0' for '--page-size <N>': 0 is not in 1..=4294967295",
        );
        check_error(
            "list --page-size many",
            "error: invalid value 'many' for '--page-size <N>': invalid digit found in string",
        );
        check_error(
            "list -l",
            "error: a value is required for '--selector <SELECTOR>' but none was supplied",
        );
    }

    #[track_caller]
    fn check_list_group(line: &str, expected: Option<&str>) {
        let cli = parse(line).unwrap_or_else(|error| panic!("{line}: {error}"));
        let group = match cli.command {
            Command::List(args) => format!("{args:?}"),
            Command::Watch(args) => format!("{args:?}"),
            other => panic!("{line}: {other:?}"),
        };
        let expected = match expected {
            Some(group) => format!("group: Some({group:?})"),
            None => "group: None".to_owned(),
        };
        assert!(group.contains(&expected), "{line}: {group}");
    }

    #[test]
    fn list_and_watch_take_the_python_group_name_flag() {
        check_list_group("list", None);
        check_list_group("list -g site", Some("site"));
        check_list_group("list --group site", Some("site"));
        check_list_group("list --group_name site", Some("site"));
        check_list_group("list -s h:1 --group_name=site", Some("site"));
        check_list_group("watch --group_name site", Some("site"));
    }

    #[test]
    fn the_python_debug_flag_is_accepted_before_or_after_the_subcommand() {
        for line in ["-d list", "--debug list", "list -d", "start --debug f.json"] {
            assert!(parse(line).expect(line).debug, "{line}");
        }
    }

    #[track_caller]
    fn check_error(line: &str, expected: &str) {
        let error = parse(line).err().unwrap_or_else(|| panic!("{line} parsed"));
        assert_eq!(error, expected, "{line}");
    }

    #[test]
    fn timeout_is_global_and_a_wrong_one_is_quoted_with_its_flag() {
        for line in [
            "--timeout 2.5 list",
            "list --timeout 2.5",
            "start --wait --timeout 2.5 f.json",
            "watch --timeout=2.5",
        ] {
            let cli = parse(line).expect(line);
            assert_eq!(cli.connection.timeout.duration(), Duration::from_millis(2500), "{line}");
            assert_eq!(cli.connection.timeout.text(), "2.5", "{line}");
        }
        assert_eq!(parse("list").expect("list").connection.timeout.duration(), Duration::from_secs(60));
        check_error(
            "start --wait --timeout -1 f.json",
            "error: invalid value '-1' for '--timeout <SECONDS>': the number of seconds must be above 0",
        );
        check_error(
            "list --timeout 0",
            "error: invalid value '0' for '--timeout <SECONDS>': the number of seconds must be above 0",
        );
        check_error(
            "list --timeout soon",
            "error: invalid value 'soon' for '--timeout <SECONDS>': not a number of seconds",
        );
        check_error(
            "list --timeout NaN",
            "error: invalid value 'NaN' for '--timeout <SECONDS>': the number of seconds must be above 0",
        );
        check_error(
            "list --timeout 1e30",
            "error: invalid value '1e30' for '--timeout <SECONDS>': too many seconds",
        );
    }

    #[test]
    fn usage_errors_are_one_line() {
        check_error(
            "lst",
            "error: unrecognized subcommand 'lst' (some similar subcommands exist: 'stop', 'list')",
        );
        check_error("list --bogus", "error: unexpected argument '--bogus' found");
        check_error(
            "watch --since -1",
            "error: invalid value '-1' for '--since <REVISION>': invalid digit found in string",
        );
        check_error("start", "error: the following required arguments were not provided: <FILE>");
        check_error("list extra", "error: unexpected argument 'extra' found");
        check_error("describe", "error: the following required arguments were not provided: <NAME>");
        check_error("describe a b", "error: unexpected argument 'b' found");
        check_error("logs", "error: the following required arguments were not provided: <NAME>");
        check_error(
            "logs web --tail x",
            "error: invalid value 'x' for '--tail <N>': give a number of lines (0 or more), or -1 for all",
        );
        check_error(
            "logs web --stream both",
            "error: invalid value 'both' for '--stream <STREAM>' [possible values: stdout, stderr, all]",
        );
    }

    #[test]
    fn describe_takes_one_name() {
        match parse("describe web").expect("describe web").command {
            Command::Describe(args) => {
                assert_eq!(format!("{args:?}"), "DescribeArgs { process_name: \"web\" }")
            }
            other => panic!("describe web: {other:?}"),
        }
    }

    use std::time::Duration;
}
