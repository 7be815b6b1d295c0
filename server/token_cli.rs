//! `hydroplane token`: creates, lists and revokes the API tokens of a tokens file. A new token
//! is printed once, alone on the last line of stdout; the file keeps only its hash.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use hydroplane::config::Settings;
use hydroplane::security::access::{Groups, parse_group_patterns, parse_scopes};
use hydroplane::security::tokens::{self, TokenRequest};

/// What to do with tokens.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Makes a new random token, prints it once, and stores only its hash.
    Create {
        #[command(flatten)]
        file: TokensFileArg,
        /// The token's name, shown in audit lines (lower-case letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: read (List, Watch, Describe, reflection), write (Start, Stop),
        /// logs (Logs), admin (everything).
        #[arg(long = "scope", visible_alias = "scopes", value_name = "SCOPES")]
        scope: String,
        /// Comma-separated group patterns the token is limited to (`*` matches any run of
        /// characters); every group, and processes without one, when not given.
        #[arg(long, value_name = "PATTERNS")]
        groups: Option<String>,
    },
    /// Lists the tokens of the file (names, scopes, groups; never a token).
    List {
        #[command(flatten)]
        file: TokensFileArg,
    },
    /// Removes a token; a running server refuses it within a second.
    Revoke {
        #[command(flatten)]
        file: TokensFileArg,
        /// The token's name.
        #[arg(long)]
        name: String,
    },
}

/// Which tokens file: `--tokens-file`, else the settings' `auth.tokens_file`.
#[derive(Debug, clap::Args)]
pub struct TokensFileArg {
    /// The tokens file; by default the `auth.tokens_file` of the settings given with -c.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
}

/// Runs a token command; errors are one line on stderr and exit code 1.
pub fn run(command: TokenCommand, config: Option<&Path>) -> ExitCode {
    match execute(command, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: TokenCommand, config: Option<&Path>) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { file, name, scope, groups } => {
            let path = file.resolve(config)?;
            let scopes = parse_scopes(&scope).map_err(|problem| anyhow::anyhow!("--scope: {problem}"))?;
            let groups = groups
                .map(|groups| parse_group_patterns(&groups))
                .transpose()
                .map_err(|problem| anyhow::anyhow!("--groups: {problem}"))?;
            let request = TokenRequest { name, scopes, groups, created: jiff::Timestamp::now().to_string() };
            let token = tokens::create(&path, &request)?;
            let groups = request.groups.map(Groups::Only).unwrap_or(Groups::All);
            let scopes: Vec<&str> = request.scopes.iter().map(|scope| scope.name()).collect();
            eprintln!(
                "created token `{}` in {} (scopes: {}; groups: {}). It is shown once, below: keep it now.",
                request.name,
                path.display(),
                scopes.join(", "),
                groups.describe()
            );
            println!("{}", token.expose());
            Ok(())
        }
        TokenCommand::List { file } => {
            let path = file.resolve(config)?;
            let book = tokens::load(&path)?;
            let listed: Vec<serde_json::Value> = book
                .callers()
                .map(|caller| {
                    serde_json::json!({
                        "name": caller.name,
                        "scopes": caller.scopes.iter().map(|scope| scope.name()).collect::<Vec<_>>(),
                        "groups": match &caller.groups {
                            Groups::All => serde_json::Value::Null,
                            Groups::Only(patterns) => patterns.iter().map(|pattern| pattern.as_str()).collect(),
                        },
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&listed).context("encode the list")?);
            Ok(())
        }
        TokenCommand::Revoke { file, name } => {
            let path = file.resolve(config)?;
            if !tokens::revoke(&path, &name)? {
                anyhow::bail!("{} has no token named `{name}`", path.display());
            }
            eprintln!("revoked token `{name}`; a running server refuses it within a second");
            Ok(())
        }
    }
}

impl TokensFileArg {
    fn resolve(self, config: Option<&Path>) -> anyhow::Result<PathBuf> {
        if let Some(path) = self.tokens_file {
            return Ok(path);
        }
        let Some(config) = config else {
            anyhow::bail!("give --tokens-file FILE (or -c CONFIG whose settings have auth.tokens_file)");
        };
        match Settings::load(config)?.auth {
            Some(auth) => Ok(auth.tokens_file),
            None => anyhow::bail!("{} has no auth.tokens_file; give --tokens-file FILE", config.display()),
        }
    }
}
