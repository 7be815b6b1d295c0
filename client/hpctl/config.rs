//! hpctl's optional config file, `$XDG_CONFIG_HOME/hpctl/config.yaml` (else
//! `~/.config/hpctl/config.yaml`): the defaults a person would
//! otherwise give on every command line.
//!
//! ```yaml
//! output: table                      # json | yaml | table | wide | name
//! server: https://hydroplane.example:50051
//! ca_cert: ~/.config/hpctl/ca.pem    # used only for an https:// server
//! token_file: ~/.config/hpctl/token  # used only when no token is given otherwise
//! ```
//!
//! A flag or its variable always wins over the file. A file that does not exist is no error; one
//! that cannot be read or parsed is, naming the file, so that a typo is not silently ignored.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::format::Format;

/// The settings of the config file; every one optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The output format when neither `-o` nor `HPCTL_OUTPUT` gives one.
    pub output: Option<Format>,
    /// The server when neither `-s` nor `HYDROPLANE_SERVER` gives one.
    pub server: Option<String>,
    /// The CA certificate for an https:// server when neither `--ca-cert` nor
    /// `HYDROPLANE_CA_CERT` gives one.
    pub ca_cert: Option<PathBuf>,
    /// The token file when no token is given otherwise.
    pub token_file: Option<PathBuf>,
}

/// Where the config file is: `$XDG_CONFIG_HOME/hpctl/config.yaml`, else
/// `$HOME/.config/hpctl/config.yaml`; `None` when there is no home to look in.
pub fn path() -> Option<PathBuf> {
    let variable = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    // XDG: a relative XDG_CONFIG_HOME is invalid and ignored.
    let base = variable("XDG_CONFIG_HOME")
        .filter(|path| path.is_absolute())
        .or_else(|| variable("HOME").map(|home| home.join(".config")))?;
    Some(base.join("hpctl").join("config.yaml"))
}

/// Reads the config file at `path`; the defaults when it does not exist.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read hpctl's config file {}", path.display()));
        }
    };
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    let mut config: Config = serde_saphyr::from_str(&text).map_err(|error| {
        anyhow::anyhow!("invalid hpctl config file {}: {}", path.display(), one_line(&error.to_string()))
    })?;
    config.ca_cert = config.ca_cert.map(expand_home);
    config.token_file = config.token_file.map(expand_home);
    Ok(config)
}

/// `~/x` as `$HOME/x`, as a shell would have written it on a command line.
fn expand_home(path: PathBuf) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path,
    }
}

/// A parser's message on one line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Result<Config, &str>) {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("config.yaml");
        std::fs::write(&path, text).expect("write");
        let loaded = load(&path).map_err(|error| error.to_string());
        match (loaded, expected) {
            (Ok(loaded), Ok(expected)) => assert_eq!(loaded, expected),
            (Err(error), Err(expected)) => assert!(error.contains(expected), "{error}"),
            (loaded, expected) => panic!("{loaded:?} but expected {expected:?}"),
        }
    }

    #[test]
    fn the_config_file_holds_output_server_ca_and_token_file() {
        check("", Ok(Config::default()));
        check(
            "output: wide\nserver: https://h:1\nca_cert: /etc/ca.pem\ntoken_file: /t\n",
            Ok(Config {
                output: Some(Format::Wide),
                server: Some("https://h:1".to_owned()),
                ca_cert: Some("/etc/ca.pem".into()),
                token_file: Some("/t".into()),
            }),
        );
        check("output: tables\n", Err("invalid hpctl config file"));
        check("outptu: table\n", Err("outptu"));
        let missing = load(Path::new("/nonexistent/hpctl/config.yaml")).expect("no file is no error");
        assert_eq!(missing, Config::default());
    }
}
