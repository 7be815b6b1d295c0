//! What a caller may do: scopes, group patterns, and the [`Caller`] the guard layer hands to the
//! handlers. Pure: no I/O, no tokens (a caller carries a token's name, never its value).

use std::fmt;
use std::str::FromStr;

/// One permission a token can carry (Nomad-like).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// List and Watch (and reflection).
    Read,
    /// Start and Stop.
    Write,
    /// Reading the output of processes.
    Logs,
    /// Everything.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are shown.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Logs, Scope::Admin];

    /// The scope's name, as written in the tokens file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Logs => "logs",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == text)
            .ok_or_else(|| format!("unknown scope `{text}` (the scopes are read, write, logs and admin)"))
    }
}

/// Parses a comma-separated list of scopes (`read,write`), naming any unknown one.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    let mut scopes: Vec<Scope> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let scope = part.parse()?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("give at least one scope (read, write, logs or admin)".to_owned());
    }
    scopes.sort();
    Ok(scopes)
}

/// A group name pattern where `*` matches any run of characters (`ci-*`, `*-staging`, `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPattern(String);

impl GroupPattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a group name matches. Linear in the name's length times the pattern's stars, so
    /// no pattern can make a call expensive.
    pub fn matches(&self, group: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = group.strip_prefix(first) else { return false };
        let middle: Vec<&str> = parts.collect();
        let Some((last, middle)) = middle.split_last() else { return rest.is_empty() };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

impl FromStr for GroupPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<GroupPattern, String> {
        if text.is_empty() {
            return Err("a group pattern is empty".to_owned());
        }
        if text.len() > 63 {
            return Err(format!("group pattern `{text}` is longer than 63 characters"));
        }
        if let Some(bad) =
            text.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '*'))
        {
            return Err(format!(
                "group pattern `{text}` has `{bad}`: groups are lower-case letters, digits and `-`, and `*` matches any run of them"
            ));
        }
        Ok(GroupPattern(text.to_owned()))
    }
}

impl fmt::Display for GroupPattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// Parses a comma-separated list of group patterns (`ci-*,staging`).
pub fn parse_group_patterns(text: &str) -> Result<Vec<GroupPattern>, String> {
    let patterns: Vec<GroupPattern> = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if patterns.is_empty() {
        return Err("give at least one group pattern".to_owned());
    }
    Ok(patterns)
}

/// The groups a caller may touch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Groups {
    /// Every process, grouped or not.
    #[default]
    All,
    /// Only processes whose group matches one of these patterns; a process with no group is
    /// out of reach.
    Only(Vec<GroupPattern>),
}

impl Groups {
    /// Whether a process of this group (or of none) is in reach.
    pub fn allows(&self, group: Option<&str>) -> bool {
        match (self, group) {
            (Groups::All, _) => true,
            (Groups::Only(_), None) => false,
            (Groups::Only(patterns), Some(group)) => patterns.iter().any(|pattern| pattern.matches(group)),
        }
    }

    /// The patterns, joined for messages (`ci-*, staging`), or `every group`.
    pub fn describe(&self) -> String {
        match self {
            Groups::All => "every group".to_owned(),
            Groups::Only(patterns) => {
                patterns.iter().map(GroupPattern::as_str).collect::<Vec<_>>().join(", ")
            }
        }
    }
}

/// Who is calling, as the guard layer established it: a token's name, scopes and groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; without a tokens file, `anonymous@` and the peer (its address, or
    /// `uid-N` on a Unix socket), so that per-caller limits are shared per peer.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Which groups it may touch.
    pub groups: Groups,
}

impl Caller {
    /// The caller of a server without tokens: anyone who can reach a listener may do anything.
    pub fn anonymous() -> Caller {
        Caller::unrestricted("anonymous")
    }

    /// A caller that may do anything, such as the server's own culler.
    pub fn unrestricted(name: &str) -> Caller {
        Caller { name: name.to_owned(), scopes: vec![Scope::Admin], groups: Groups::All }
    }

    /// Whether the caller holds a scope (`admin` holds them all).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|held| *held == scope || *held == Scope::Admin)
    }

    /// Whether a process is in the caller's reach (its group, or its lack of one).
    pub fn reaches(&self, process: &crate::spec::ProcessInfo) -> bool {
        self.groups.allows(process.group.as_deref())
    }

    /// Refuses a process of this group (or of none) out of the caller's reach, saying why.
    pub fn check_group(&self, group: Option<&str>) -> Result<(), Denied> {
        if self.groups.allows(group) {
            return Ok(());
        }
        Err(Denied {
            caller: self.name.clone(),
            missing: match group {
                Some(group) => format!("group `{group}` (it may touch {})", self.groups.describe()),
                None => format!(
                    "processes with no group (it may touch only {}; those need an unrestricted token)",
                    self.groups.describe()
                ),
            },
        })
    }
}

/// A refusal: the caller lacks a scope or a group.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("token `{caller}` may not touch {missing}")]
pub struct Denied {
    /// The token's name.
    pub caller: String,
    /// What it lacks, for the message.
    pub missing: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_match(pattern: &str, group: &str, expected: bool) {
        let pattern: GroupPattern = pattern.parse().expect("pattern");
        assert_eq!(pattern.matches(group), expected, "`{pattern}` against `{group}`");
    }

    #[test]
    fn patterns_match_any_run_of_characters_at_the_stars() {
        check_match("ci-*", "ci-1", true);
        check_match("ci-*", "ci-", true);
        check_match("ci-*", "prod-x", false);
        check_match("ci-*", "xci-1", false);
        check_match("*", "anything", true);
        check_match("*-staging", "web-staging", true);
        check_match("*-staging", "web-staging-2", false);
        check_match("a*b*c", "abc", true);
        check_match("a*b*c", "axxbyyc", true);
        check_match("a*b*c", "acb", false);
        check_match("ab*ba", "aba", false);
        check_match("exact", "exact", true);
        check_match("exact", "exactly", false);
    }

    #[test]
    fn bad_patterns_and_scopes_are_named() {
        assert!("CI-*".parse::<GroupPattern>().unwrap_err().contains("`C`"));
        assert!(parse_group_patterns(" , ").is_err());
        assert_eq!(parse_scopes("write,read,read").unwrap(), vec![Scope::Read, Scope::Write]);
        assert!(parse_scopes("read,delete").unwrap_err().contains("`delete`"));
        assert!(parse_scopes("").is_err());
    }

    #[test]
    fn a_restricted_caller_reaches_only_its_groups() {
        let caller = Caller {
            name: "ci".into(),
            scopes: vec![Scope::Read],
            groups: Groups::Only(parse_group_patterns("ci-*").unwrap()),
        };
        assert!(caller.check_group(Some("ci-7")).is_ok());
        let denied = caller.check_group(Some("prod")).unwrap_err().to_string();
        assert!(denied.contains("group `prod`") && denied.contains("ci-*"), "{denied}");
        assert!(caller.check_group(None).unwrap_err().to_string().contains("no group"));
        assert!(caller.has(Scope::Read) && !caller.has(Scope::Write));
        assert!(Caller::anonymous().has(Scope::Logs));
    }
}
