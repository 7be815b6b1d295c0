//! Kubernetes-style labels and label selectors: the rules a label key and a label value follow
//! ([`label_key_rule`], [`label_value_rule`]), and [`LabelSelector`], parsed from the selector
//! syntax of `kubectl get -l` and matched against a process's labels. Start with
//! [`LabelSelector::parse`].
//!
//! The rules are Kubernetes' own (apimachinery's `IsQualifiedName` and `IsValidLabelValue`), so a
//! label accepted here is one Kubernetes accepts. The grammar is apimachinery's `labels.Parse`, and a
//! selector means what it means there, with these differences, none of which changes what a
//! selector Kubernetes accepts selects:
//! - `>` and `<` are refused: labels here are names, not numbers.
//! - `==` is read as `=`, and shown as `=`.
//! - Requirements are kept sorted (by key, operator, then values), and a requirement given twice
//!   is kept once.
//! - In a value list, every slot between `(`, commas and `)` is a value, the empty one included,
//!   so `(a,,)` is `(,a)`; apimachinery reads the slots the same way but, by accident of its
//!   parser, refuses a list that ends in two commas.
//!
//! The canonical form ([`LabelSelector`]'s `Display`, and [`LabelSelector::to_kubernetes`]) is
//! one that apimachinery parses to the same selector.
//!
//! Parsing is one pass over at most [`MAX_SELECTOR_BYTES`] bytes with one token of lookahead, and
//! a selector has at most [`MAX_REQUIREMENTS`] requirements, so no text makes it slow.
//!
//! Architecture invariant: pure; no I/O, no protobuf, no kube types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The longest selector text, in bytes.
pub const MAX_SELECTOR_BYTES: usize = 4096;

/// The most requirements one selector may have.
pub const MAX_REQUIREMENTS: usize = 100;

/// The longest label value, and the longest name part of a label key, in characters.
const MAX_NAME_CHARACTERS: usize = 63;

/// The longest prefix of a label key (a DNS-1123 subdomain), in characters.
const MAX_PREFIX_CHARACTERS: usize = 253;

/// The pattern of a label value and of a key's name part, as a rule.
const NAME_PATTERN: &str =
    "start and end with a letter or digit and contain only letters, digits, '-', '_' and '.'";

// === Rules ===

/// Checks a label key: an optional DNS-1123 subdomain prefix (at most 253 characters) and `/`,
/// then a name of 1 to 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or
/// digit (Kubernetes' qualified name).
pub fn label_key_rule(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let Some((prefix, name)) = key.split_once('/') else {
        return match name_rule(key) {
            Ok(()) => Ok(()),
            Err(NameProblem::TooLong(length)) => {
                Err(format!("must be at most {MAX_NAME_CHARACTERS} characters, got {length}"))
            }
            Err(NameProblem::Pattern) => Err(format!("must {NAME_PATTERN}")),
        };
    };
    if name.contains('/') {
        return Err("must have at most one '/', between a DNS subdomain prefix and the name".to_owned());
    }
    if prefix.is_empty() {
        return Err("has an empty prefix before '/'".to_owned());
    }
    let prefix_length = prefix.chars().count();
    if prefix_length > MAX_PREFIX_CHARACTERS {
        return Err(format!(
            "must have a prefix of at most {MAX_PREFIX_CHARACTERS} characters before '/', got {prefix_length}"
        ));
    }
    if !is_dns_subdomain(prefix) {
        return Err("must have a DNS-1123 subdomain before '/': lower-case letters, digits, '-' and '.', \
                    each part starting and ending with a letter or digit"
            .to_owned());
    }
    if name.is_empty() {
        return Err("has an empty name after '/'".to_owned());
    }
    match name_rule(name) {
        Ok(()) => Ok(()),
        Err(NameProblem::TooLong(length)) => Err(format!(
            "must have a name of at most {MAX_NAME_CHARACTERS} characters after '/', got {length}"
        )),
        Err(NameProblem::Pattern) => {
            Err("must have a name after '/' that starts and ends with a letter or digit and contains only \
             letters, digits, '-', '_' and '.'"
                .to_owned())
        }
    }
}

/// Checks a label value: empty, or 1 to 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
pub fn label_value_rule(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    match name_rule(value) {
        Ok(()) => Ok(()),
        Err(NameProblem::TooLong(length)) => {
            Err(format!("must be at most {MAX_NAME_CHARACTERS} characters, got {length}"))
        }
        Err(NameProblem::Pattern) => Err(format!("must be empty or {NAME_PATTERN}")),
    }
}

/// Why a non-empty text is not a label name (or value).
enum NameProblem {
    /// It has this many characters, more than 63.
    TooLong(usize),
    /// It breaks the pattern.
    Pattern,
}

/// Checks a non-empty name against `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` and its length.
/// Kubernetes counts bytes; counting characters refuses the same texts (a text with more bytes
/// than characters is not ASCII, so it breaks the pattern) and tells people what they count.
fn name_rule(name: &str) -> Result<(), NameProblem> {
    let length = name.chars().count();
    if length > MAX_NAME_CHARACTERS {
        return Err(NameProblem::TooLong(length));
    }
    let end = |c: char| c.is_ascii_alphanumeric();
    let valid = name.starts_with(end)
        && name.ends_with(end)
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid { Ok(()) } else { Err(NameProblem::Pattern) }
}

/// Whether `text` matches Kubernetes' DNS-1123 subdomain pattern: dot-separated parts of
/// lower-case letters, digits and `-`, each starting and ending with a letter or digit. The
/// length is checked by the caller; Kubernetes sets no limit on one part of a subdomain.
fn is_dns_subdomain(text: &str) -> bool {
    let end = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    text.split('.')
        .all(|part| part.starts_with(end) && part.ends_with(end) && part.chars().all(|c| end(c) || c == '-'))
}

// === Selector ===

/// How a requirement relates a label's value to its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value` (or `key==value`): the label is there with that value.
    Equals,
    /// `key!=value`: the label is absent, or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is there with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent, or has none of the values.
    NotIn,
    /// `key`: the label is there, with any value.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

/// One condition of a selector on one label; a selector is the conjunction of its requirements.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    /// The label key (it passed [`label_key_rule`]).
    pub key: String,
    /// How the label's value is compared to `values`.
    pub operator: Operator,
    /// The values, sorted and without repeats (matching relies on it): one for `Equals` and
    /// `NotEquals`, at least one for `In` and `NotIn` (the empty value counts), none for `Exists`
    /// and `DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    /// A requirement on `key`, its values sorted and without repeats as matching needs. Neither
    /// the key nor the values are checked against the label rules: for selectors that come as
    /// objects (a Kubernetes `LabelSelector`'s `matchExpressions`), not as text.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Requirement {
        let mut values: Vec<String> = values.into_iter().collect();
        values.sort();
        values.dedup();
        Requirement { key: key.into(), operator, values }
    }

    /// Whether `labels` meet this requirement; as in Kubernetes, `NotEquals` and `NotIn` are met
    /// when the label is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_label(labels.get(&self.key).map(String::as_str))
    }

    /// Whether a label of this requirement's key with the value `label` (`None`: no such label)
    /// meets it.
    pub fn matches_label(&self, label: Option<&str>) -> bool {
        match self.operator {
            Operator::Equals | Operator::In => label.is_some_and(|value| self.has_value(value)),
            Operator::NotEquals | Operator::NotIn => label.is_none_or(|value| !self.has_value(value)),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
        }
    }

    fn has_value(&self, value: &str) -> bool {
        self.values.binary_search_by(|candidate| candidate.as_str().cmp(value)).is_ok()
    }

    /// Appends this requirement in Kubernetes' syntax, with `key` for its key.
    fn render(&self, key: &str, out: &mut String) {
        let values = self.values.join(",");
        let (before, after) = match self.operator {
            Operator::Equals => ("", "="),
            Operator::NotEquals => ("", "!="),
            Operator::In => ("", " in ("),
            Operator::NotIn => ("", " notin ("),
            Operator::Exists => ("", ""),
            Operator::DoesNotExist => ("!", ""),
        };
        out.push_str(before);
        out.push_str(key);
        out.push_str(after);
        match self.operator {
            Operator::Equals | Operator::NotEquals => out.push_str(&values),
            Operator::In | Operator::NotIn => {
                out.push_str(&values);
                out.push(')');
            }
            Operator::Exists | Operator::DoesNotExist => {}
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.render(&self.key, &mut out);
        f.write_str(&out)
    }
}

/// A Kubernetes label selector: the labels a process must (or must not) have to be selected.
/// The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// Sorted and without repeats, so that equal selectors compare equal and show alike.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses Kubernetes' selector syntax, e.g. `tier=web,env in (dev,test),!canary`; the empty
    /// text (or only whitespace) is the selector that selects everything.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::TooLong { bytes: text.len() });
        }
        LabelSelector::parse_at_most(text, MAX_REQUIREMENTS)
    }

    /// Parses as [`LabelSelector::parse`] does but without its limits on length and number of
    /// requirements, as a Kubernetes API server reads the selectors it is sent (the simulator's),
    /// which a server makes from a user's selector and its own requirements.
    pub fn parse_unlimited(text: &str) -> Result<LabelSelector, SelectorError> {
        LabelSelector::parse_at_most(text, usize::MAX)
    }

    /// The parser behind both: one pass, at most `max_requirements` requirements.
    fn parse_at_most(text: &str, max_requirements: usize) -> Result<LabelSelector, SelectorError> {
        let mut parser = Parser::new(text);
        let mut requirements = Vec::new();
        if parser.peek().0 == Token::End {
            return Ok(LabelSelector { requirements });
        }
        let mut expected_key = "a label key or `!`";
        loop {
            if requirements.len() == max_requirements {
                let (_, offset) = parser.peek();
                return Err(SelectorError::TooManyRequirements { position: parser.position(offset) });
            }
            requirements.push(parser.requirement(expected_key)?);
            match parser.next() {
                (Token::End, _) => break,
                (Token::Comma, _) => expected_key = "a label key or `!` after `,`",
                (found, offset) => {
                    return Err(parser.unexpected(offset, "`,` or the end after a requirement", found));
                }
            }
        }
        requirements.sort();
        requirements.dedup();
        Ok(LabelSelector { requirements })
    }

    /// The selector of these requirements, sorted and without repeats as a parsed one.
    pub fn from_requirements(requirements: impl IntoIterator<Item = Requirement>) -> LabelSelector {
        let mut requirements: Vec<Requirement> = requirements.into_iter().collect();
        requirements.sort();
        requirements.dedup();
        LabelSelector { requirements }
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|requirement| requirement.matches(labels))
    }

    /// Whether the labels that `label_of` looks up by key meet every requirement: for labels
    /// kept in another shape than a map of strings, such as a Kubernetes object's JSON.
    pub fn matches_by<'a>(&self, label_of: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|requirement| requirement.matches_label(label_of(&requirement.key)))
    }

    /// The requirements, sorted by key (then operator and values), for planning lookups:
    /// `Equals`, `In` and `Exists` narrow by key; the others only filter.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// This selector in Kubernetes' syntax with every key replaced by `map_key(key)`, for a
    /// server-side selector over labels that are stored under other keys. `map_key` must return
    /// valid label keys for the result to be a valid selector.
    pub fn to_kubernetes(&self, map_key: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for (index, requirement) in self.requirements.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            requirement.render(&map_key(&requirement.key), &mut out);
        }
        out
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form, e.g. `a=b,c!=d,e in (x,y),!f`, which parses back to this selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_kubernetes(str::to_owned))
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(text)
    }
}

/// Why a selector text was refused. Every message reads after a field path, and positions count
/// characters from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text is longer than [`MAX_SELECTOR_BYTES`].
    #[error("must be at most {MAX_SELECTOR_BYTES} bytes, got {bytes}")]
    TooLong {
        /// The text's length in bytes.
        bytes: usize,
    },
    /// The text has more than [`MAX_REQUIREMENTS`] requirements.
    #[error("at position {position}: a selector may have at most {MAX_REQUIREMENTS} requirements")]
    TooManyRequirements {
        /// Where the first requirement over the limit starts.
        position: usize,
    },
    /// A token the grammar does not allow where it is.
    #[error("at position {position}: expected {expected}, found {found}")]
    Unexpected {
        /// Where the token starts (one past the end for the end of the text).
        position: usize,
        /// What the grammar allows there.
        expected: &'static str,
        /// The token, quoted, or `end of input`.
        found: String,
    },
    /// `>` or `<`, which Kubernetes has for numeric labels and this server does not.
    #[error(
        "at position {position}: the `{operator}` operator is not supported here; use `=`, `==`, `!=`, \
         `in`, `notin`, a key alone or `!` and a key"
    )]
    UnsupportedOperator {
        /// Where the operator is.
        position: usize,
        /// The operator.
        operator: &'static str,
    },
    /// A label key that breaks [`label_key_rule`].
    #[error("at position {position}: label key `{key}`: {rule}")]
    InvalidKey {
        /// Where the key starts.
        position: usize,
        /// The key, shortened when long.
        key: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A label value that breaks [`label_value_rule`].
    #[error("at position {position}: label value `{value}`: {rule}")]
    InvalidValue {
        /// Where the value starts.
        position: usize,
        /// The value, shortened when long.
        value: String,
        /// The rule it breaks.
        rule: String,
    },
}

impl SelectorError {
    /// The 1-based character position of the error, when it has one.
    pub fn position(&self) -> Option<usize> {
        match self {
            SelectorError::TooLong { .. } => None,
            SelectorError::TooManyRequirements { position }
            | SelectorError::Unexpected { position, .. }
            | SelectorError::UnsupportedOperator { position, .. }
            | SelectorError::InvalidKey { position, .. }
            | SelectorError::InvalidValue { position, .. } => Some(*position),
        }
    }
}

// === Parser ===

/// A token of the selector syntax. Words are keys, values and the operators `in` and `notin`,
/// told apart by where they stand (so `in in (in)` is a valid selector, as in Kubernetes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Comma,
    OpenParenthesis,
    CloseParenthesis,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    End,
}

impl Token<'_> {
    /// The token as an error message quotes it.
    fn found(self) -> String {
        let symbol = match self {
            Token::Word(word) => return format!("`{}`", shown(word)),
            Token::End => return "end of input".to_owned(),
            Token::Comma => ",",
            Token::OpenParenthesis => "(",
            Token::CloseParenthesis => ")",
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Greater => ">",
            Token::Less => "<",
        };
        format!("`{symbol}`")
    }
}

/// Kubernetes' whitespace between tokens; other whitespace is part of a word (and so refused by
/// the key and value rules).
fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// The bytes that end a word.
fn is_symbol(byte: u8) -> bool {
    matches!(byte, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// A recursive-descent parser over the tokens of one text, with one token of lookahead.
struct Parser<'a> {
    text: &'a str,
    /// The byte offset where the next token is looked for.
    offset: usize,
    /// The next token and its byte offset, once looked at.
    peeked: Option<(Token<'a>, usize)>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser { text, offset: 0, peeked: None }
    }

    fn peek(&mut self) -> (Token<'a>, usize) {
        match self.peeked {
            Some(peeked) => peeked,
            None => {
                let token = self.lex();
                self.peeked = Some(token);
                token
            }
        }
    }

    fn next(&mut self) -> (Token<'a>, usize) {
        self.peeked.take().unwrap_or_else(|| self.lex())
    }

    /// Reads the token at `offset`, after any whitespace; two-character operators win over
    /// one-character ones, as in Kubernetes.
    fn lex(&mut self) -> (Token<'a>, usize) {
        let bytes = self.text.as_bytes();
        while bytes.get(self.offset).copied().is_some_and(is_whitespace) {
            self.offset += 1;
        }
        let start = self.offset;
        let Some(&first) = bytes.get(start) else {
            return (Token::End, start);
        };
        let second = bytes.get(start + 1).copied();
        let (token, length) = match (first, second) {
            (b'!', Some(b'=')) => (Token::NotEquals, 2),
            (b'=', Some(b'=')) => (Token::DoubleEquals, 2),
            (b'!', _) => (Token::Not, 1),
            (b'=', _) => (Token::Equals, 1),
            (b'(', _) => (Token::OpenParenthesis, 1),
            (b')', _) => (Token::CloseParenthesis, 1),
            (b',', _) => (Token::Comma, 1),
            (b'>', _) => (Token::Greater, 1),
            (b'<', _) => (Token::Less, 1),
            _ => {
                let rest = &bytes[start..];
                let length = rest
                    .iter()
                    .position(|&byte| is_whitespace(byte) || is_symbol(byte))
                    .unwrap_or(rest.len());
                // A word ends at an ASCII byte or at the end, so both ends are character
                // boundaries and `get` always succeeds.
                (Token::Word(self.text.get(start..start + length).unwrap_or_default()), length)
            }
        };
        self.offset = start + length;
        (token, start)
    }

    /// The 1-based character position of a byte offset, counted only when an error needs it.
    fn position(&self, offset: usize) -> usize {
        self.text.get(..offset).map_or(offset, |before| before.chars().count()) + 1
    }

    fn unexpected(&self, offset: usize, expected: &'static str, found: Token<'_>) -> SelectorError {
        SelectorError::Unexpected { position: self.position(offset), expected, found: found.found() }
    }

    /// `!key`, `key`, `key=value` (`==`, `!=`), or `key in (values)` (`notin`).
    fn requirement(&mut self, expected_key: &'static str) -> Result<Requirement, SelectorError> {
        let (mut token, mut offset) = self.next();
        let negated = token == Token::Not;
        if negated {
            (token, offset) = self.next();
        }
        let Token::Word(key) = token else {
            let expected = if negated { "a label key after `!`" } else { expected_key };
            return Err(self.unexpected(offset, expected, token));
        };
        if let Err(rule) = label_key_rule(key) {
            return Err(SelectorError::InvalidKey { position: self.position(offset), key: shown(key), rule });
        }
        let key = key.to_owned();
        if negated {
            return Ok(Requirement { key, operator: Operator::DoesNotExist, values: Vec::new() });
        }
        let (operator, values) = match self.peek() {
            (Token::End | Token::Comma, _) => (Operator::Exists, Vec::new()),
            (Token::Word("in"), _) => {
                self.next();
                (Operator::In, self.value_set("`(` after `in`")?)
            }
            (Token::Word("notin"), _) => {
                self.next();
                (Operator::NotIn, self.value_set("`(` after `notin`")?)
            }
            (Token::Equals, _) => {
                self.next();
                (Operator::Equals, vec![self.exact_value("a value, `,` or the end after `=`")?])
            }
            (Token::DoubleEquals, _) => {
                self.next();
                (Operator::Equals, vec![self.exact_value("a value, `,` or the end after `==`")?])
            }
            (Token::NotEquals, _) => {
                self.next();
                (Operator::NotEquals, vec![self.exact_value("a value, `,` or the end after `!=`")?])
            }
            (Token::Greater, offset) => {
                return Err(SelectorError::UnsupportedOperator {
                    position: self.position(offset),
                    operator: ">",
                });
            }
            (Token::Less, offset) => {
                return Err(SelectorError::UnsupportedOperator {
                    position: self.position(offset),
                    operator: "<",
                });
            }
            (found, offset) => {
                return Err(self.unexpected(
                    offset,
                    "`=`, `==`, `!=`, `in`, `notin`, `,` or the end after a label key",
                    found,
                ));
            }
        };
        Ok(Requirement { key, operator, values })
    }

    /// The value after `=`, `==` or `!=`: a word, or the empty value when a comma or the end
    /// follows (`a=` selects an empty `a`, as in Kubernetes).
    fn exact_value(&mut self, expected: &'static str) -> Result<String, SelectorError> {
        match self.peek() {
            (Token::End | Token::Comma, _) => Ok(String::new()),
            (Token::Word(value), offset) => {
                self.next();
                self.checked_value(value, offset)
            }
            (found, offset) => Err(self.unexpected(offset, expected, found)),
        }
    }

    /// `(v1, v2)`, sorted and without repeats. Every slot between the parentheses and commas is
    /// a value, so `()` and `(a,)` hold the empty value, as in Kubernetes.
    fn value_set(&mut self, expected_parenthesis: &'static str) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            (Token::OpenParenthesis, _) => {}
            (found, offset) => return Err(self.unexpected(offset, expected_parenthesis, found)),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                (Token::Word(value), offset) => {
                    values.push(self.checked_value(value, offset)?);
                    match self.next() {
                        (Token::Comma, _) => {}
                        (Token::CloseParenthesis, _) => break,
                        (found, offset) => {
                            return Err(self.unexpected(offset, "`)` or `,` after a value", found));
                        }
                    }
                }
                (Token::Comma, _) => values.push(String::new()),
                (Token::CloseParenthesis, _) => {
                    values.push(String::new());
                    break;
                }
                (found, offset) => return Err(self.unexpected(offset, "a value, `,` or `)`", found)),
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }

    fn checked_value(&self, value: &str, offset: usize) -> Result<String, SelectorError> {
        match label_value_rule(value) {
            Ok(()) => Ok(value.to_owned()),
            Err(rule) => Err(SelectorError::InvalidValue {
                position: self.position(offset),
                value: shown(value),
                rule,
            }),
        }
    }
}

/// The most characters of a key, value or word quoted in an error.
const SHOWN_CHARACTERS: usize = 64;

/// A text as an error quotes it: control characters escaped so the message stays one line, and
/// cut after 64 characters with its length, so the message stays short.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for (index, character) in text.chars().enumerate() {
        if index == SHOWN_CHARACTERS {
            out.push_str(&format!("... ({} bytes)", text.len()));
            break;
        }
        if character.is_control() {
            out.extend(character.escape_default());
        } else {
            out.push(character);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    use super::*;

    /// Parses `text` and compares the canonical form, or the error message when `expected`
    /// starts with `at position` or `must`.
    #[track_caller]
    fn check(text: &str, expected: &str) {
        let found = match LabelSelector::parse(text) {
            Ok(selector) => {
                let canonical = selector.to_string();
                assert_eq!(
                    LabelSelector::parse(&canonical).as_ref(),
                    Ok(&selector),
                    "`{canonical}` reparsed"
                );
                canonical
            }
            Err(error) => error.to_string(),
        };
        assert_eq!(found, expected, "for `{text}`");
    }

    #[test]
    fn the_unlimited_and_built_selectors_are_parsed_ones() {
        let many = (0..=MAX_REQUIREMENTS).map(|index| format!("k{index}")).collect::<Vec<_>>().join(",");
        assert!(LabelSelector::parse(&many).is_err());
        let unlimited = LabelSelector::parse_unlimited(&many).expect("no limit");
        assert_eq!(unlimited.requirements().len(), MAX_REQUIREMENTS + 1);
        let parsed = LabelSelector::parse("tier in (web,db),!canary").expect("parses");
        let built = LabelSelector::from_requirements([
            Requirement::new("tier", Operator::In, ["web", "db", "web"].map(str::to_owned)),
            Requirement::new("canary", Operator::DoesNotExist, []),
        ]);
        assert_eq!(built, parsed);
        let label = |labels: &'static [(&'static str, &'static str)]| {
            move |key: &str| labels.iter().find(|(name, _)| *name == key).map(|(_, value)| *value)
        };
        assert!(parsed.matches_by(label(&[("tier", "db")])));
        assert!(!parsed.matches_by(label(&[("tier", "db"), ("canary", "yes")])));
        assert!(!parsed.matches_by(label(&[("tier", "api")])));
    }

    #[test]
    fn valid_selectors_and_their_canonical_form() {
        for (text, canonical) in [
            // The empty selector, however spelled, selects everything.
            ("", ""),
            ("   ", ""),
            ("\t\r\n ", ""),
            ("a", "a"),
            ("  a  ", "a"),
            ("!a", "!a"),
            ("! a", "!a"),
            ("a=b", "a=b"),
            ("a==b", "a=b"),
            (" a = b ", "a=b"),
            ("a!=b", "a!=b"),
            ("a != b", "a!=b"),
            // An empty value after `=` is allowed, before a comma too.
            ("a=", "a="),
            ("a==", "a="),
            ("a!=", "a!="),
            ("a=,b", "a=,b"),
            ("a in (x,y)", "a in (x,y)"),
            ("a in ( y , x , y )", "a in (x,y)"),
            ("a in(x)", "a in (x)"),
            ("a notin (x)", "a notin (x)"),
            ("a\tnotin\t(x)", "a notin (x)"),
            // Every slot of a value list is a value, the empty one included.
            ("a in ()", "a in ()"),
            ("a in (,)", "a in ()"),
            ("a in (x,)", "a in (,x)"),
            ("a in (,x)", "a in (,x)"),
            ("a in (x,,y)", "a in (,x,y)"),
            ("a in (x,,)", "a in (,x)"),
            ("a notin ()", "a notin ()"),
            // `in` and `notin` are words like any other where a key or value stands.
            ("in in (in, notin)", "in in (in,notin)"),
            ("notin=in", "notin=in"),
            ("!in", "!in"),
            ("a=notin", "a=notin"),
            // Sorted by key, then operator and values; a requirement given twice is kept once.
            ("c=d,a=b", "a=b,c=d"),
            ("b,!a", "!a,b"),
            ("a=b,a=b", "a=b"),
            ("a==b,a=b", "a=b"),
            ("a=c,a=b", "a=b,a=c"),
            ("a in (x),a=x", "a=x,a in (x)"),
            ("a=b,c!=d,e in (x,y),!f", "a=b,c!=d,e in (x,y),!f"),
            (
                "example.com/app=web, app.kubernetes.io/name in (api)",
                "app.kubernetes.io/name in (api),example.com/app=web",
            ),
            ("A_b.c-D=E.f_G-9", "A_b.c-D=E.f_G-9"),
        ] {
            check(text, canonical);
        }
        let longest_name = "n".repeat(63);
        check(&format!("{longest_name}={longest_name}"), &format!("{longest_name}={longest_name}"));
    }

    #[test]
    fn every_error_names_its_position() {
        // The long parts of messages, whose wording the rule tests check.
        let after_key = "expected `=`, `==`, `!=`, `in`, `notin`, `,` or the end after a label key";
        let use_instead = "use `=`, `==`, `!=`, `in`, `notin`, a key alone or `!` and a key";
        let one_slash = "must have at most one '/', between a DNS subdomain prefix and the name";
        for (text, message) in [
            (",a", "at position 1: expected a label key or `!`, found `,`".to_owned()),
            ("=a", "at position 1: expected a label key or `!`, found `=`".to_owned()),
            (")", "at position 1: expected a label key or `!`, found `)`".to_owned()),
            ("a,", "at position 3: expected a label key or `!` after `,`, found end of input".to_owned()),
            ("a, ", "at position 4: expected a label key or `!` after `,`, found end of input".to_owned()),
            ("a,,b", "at position 3: expected a label key or `!` after `,`, found `,`".to_owned()),
            ("!", "at position 2: expected a label key after `!`, found end of input".to_owned()),
            ("!=a", "at position 1: expected a label key or `!`, found `!=`".to_owned()),
            ("!!a", "at position 2: expected a label key after `!`, found `!`".to_owned()),
            ("a b", format!("at position 3: {after_key}, found `b`")),
            ("a!", format!("at position 2: {after_key}, found `!`")),
            ("a (b)", format!("at position 3: {after_key}, found `(`")),
            ("a=b=c", "at position 4: expected `,` or the end after a requirement, found `=`".to_owned()),
            ("a=b c", "at position 5: expected `,` or the end after a requirement, found `c`".to_owned()),
            ("!a=b", "at position 3: expected `,` or the end after a requirement, found `=`".to_owned()),
            (
                "!a in (b)",
                "at position 4: expected `,` or the end after a requirement, found `in`".to_owned(),
            ),
            ("a in (b))", "at position 9: expected `,` or the end after a requirement, found `)`".to_owned()),
            ("a=(b)", "at position 3: expected a value, `,` or the end after `=`, found `(`".to_owned()),
            ("a==!", "at position 4: expected a value, `,` or the end after `==`, found `!`".to_owned()),
            ("a!==", "at position 4: expected a value, `,` or the end after `!=`, found `=`".to_owned()),
            ("a in", "at position 5: expected `(` after `in`, found end of input".to_owned()),
            ("a notin x", "at position 9: expected `(` after `notin`, found `x`".to_owned()),
            ("a in (", "at position 7: expected a value, `,` or `)`, found end of input".to_owned()),
            ("a in (=)", "at position 7: expected a value, `,` or `)`, found `=`".to_owned()),
            ("a in (b", "at position 8: expected `)` or `,` after a value, found end of input".to_owned()),
            ("k in(v=", "at position 7: expected `)` or `,` after a value, found `=`".to_owned()),
            ("a in (b c)", "at position 9: expected `)` or `,` after a value, found `c`".to_owned()),
            ("a>1", format!("at position 2: the `>` operator is not supported here; {use_instead}")),
            ("a < 1", format!("at position 3: the `<` operator is not supported here; {use_instead}")),
            ("a/b/c", format!("at position 1: label key `a/b/c`: {one_slash}")),
            ("x, a/b/c=d", format!("at position 4: label key `a/b/c`: {one_slash}")),
            ("/a", "at position 1: label key `/a`: has an empty prefix before '/'".to_owned()),
            ("!-a", format!("at position 2: label key `-a`: must {NAME_PATTERN}")),
            ("a=-b", format!("at position 3: label value `-b`: must be empty or {NAME_PATTERN}")),
            ("a in (x, y-)", format!("at position 10: label value `y-`: must be empty or {NAME_PATTERN}")),
            // Positions count characters, not bytes.
            ("é=1", format!("at position 1: label key `é`: must {NAME_PATTERN}")),
            ("a=é,b=ü", format!("at position 3: label value `é`: must be empty or {NAME_PATTERN}")),
            ("a=b,ü", format!("at position 5: label key `ü`: must {NAME_PATTERN}")),
            // Whitespace other than Kubernetes' four is part of a word; control characters are
            // escaped in the message.
            ("a\u{b}b", format!("at position 1: label key `a\\u{{b}}b`: must {NAME_PATTERN}")),
        ] {
            check(text, &message);
        }
        let long_value = "v".repeat(100);
        check(
            &format!("a={long_value}"),
            &format!(
                "at position 3: label value `{}... (100 bytes)`: must be at most 63 characters, got 100",
                "v".repeat(64)
            ),
        );
        check(
            &format!("a {long_value}"),
            &format!(
                "at position 3: expected `=`, `==`, `!=`, `in`, `notin`, `,` or the end after a label key, \
                 found `{}... (100 bytes)`",
                "v".repeat(64)
            ),
        );
    }

    #[test]
    fn selectors_are_limited_in_size_and_requirements() {
        let at_limit = format!("a={}", "b".repeat(MAX_SELECTOR_BYTES - 2));
        assert_eq!(at_limit.len(), MAX_SELECTOR_BYTES);
        // The size is fine; the value is not.
        assert!(matches!(
            LabelSelector::parse(&at_limit),
            Err(SelectorError::InvalidValue { position: 3, .. })
        ));
        check(&"a".repeat(MAX_SELECTOR_BYTES + 1), "must be at most 4096 bytes, got 4097");

        let keys = |count: usize| (0..count).map(|index| format!("k{index}")).collect::<Vec<_>>().join(",");
        let hundred = LabelSelector::parse(&keys(MAX_REQUIREMENTS)).expect("100 requirements");
        assert_eq!(hundred.requirements().len(), MAX_REQUIREMENTS);
        // `k0,k1,...,k99,` is 390 characters, so the 101st requirement starts at 391.
        check(&keys(MAX_REQUIREMENTS + 1), "at position 391: a selector may have at most 100 requirements");
        // The limit counts requirements as written, repeats included.
        check(
            &vec!["a"; MAX_REQUIREMENTS + 1].join(","),
            "at position 201: a selector may have at most 100 requirements",
        );

        // The worst shapes at the size limit parse (or fail) in one pass.
        let many_values = format!("a in ({})", vec!["v"; (MAX_SELECTOR_BYTES - 7) / 2].join(","));
        assert!(many_values.len() <= MAX_SELECTOR_BYTES);
        assert_eq!(LabelSelector::parse(&many_values).expect("many values").requirements()[0].values, ["v"]);
        let many_commas = format!("a in ({})", ",".repeat(MAX_SELECTOR_BYTES - 7));
        assert_eq!(LabelSelector::parse(&many_commas).expect("many commas").to_string(), "a in ()");
    }

    #[test]
    fn requirements_are_typed_sorted_and_without_repeats() {
        let selector = LabelSelector::parse("b in (y, x, y), a, !c, d notin (z), e==f, g!=h").expect("valid");
        let requirement = |key: &str, operator, values: &[&str]| Requirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|value| (*value).to_owned()).collect(),
        };
        assert_eq!(
            selector.requirements(),
            [
                requirement("a", Operator::Exists, &[]),
                requirement("b", Operator::In, &["x", "y"]),
                requirement("c", Operator::DoesNotExist, &[]),
                requirement("d", Operator::NotIn, &["z"]),
                requirement("e", Operator::Equals, &["f"]),
                requirement("g", Operator::NotEquals, &["h"]),
            ]
        );
        assert!(!selector.is_empty());
        assert!(LabelSelector::parse(" ").expect("empty").is_empty());
        assert_eq!(LabelSelector::default(), LabelSelector::parse("").expect("empty"));
        assert_eq!("a=b".parse::<LabelSelector>(), LabelSelector::parse("a=b"));
        assert_eq!(selector.requirements()[1].to_string(), "b in (x,y)");
    }

    #[test]
    fn kubernetes_form_maps_every_key() {
        let selector = LabelSelector::parse("tier=web,!canary,example.com/env in (dev,test),x notin (),y")
            .expect("valid");
        let stored = |key: &str| match key.split_once('/') {
            Some((prefix, name)) => format!("{prefix}.label.hydroplane/{name}"),
            None => format!("label.hydroplane/{key}"),
        };
        assert_eq!(
            selector.to_kubernetes(stored),
            "!label.hydroplane/canary,example.com.label.hydroplane/env in (dev,test),\
             label.hydroplane/tier=web,label.hydroplane/x notin (),label.hydroplane/y"
        );
        assert_eq!(selector.to_kubernetes(str::to_owned), selector.to_string());
        assert_eq!(LabelSelector::default().to_kubernetes(stored), "");
    }

    /// Parses `selector` and checks whether it matches `labels`.
    #[track_caller]
    fn check_match(selector: &str, labels: &[(&str, &str)], expected: bool) {
        let parsed = LabelSelector::parse(selector).expect("test selector parses");
        let labels = labels.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
        assert_eq!(parsed.matches(&labels), expected, "`{selector}` on {labels:?}");
    }

    #[test]
    fn matching_follows_kubernetes() {
        for (selector, labels, expected) in [
            ("", &[][..], true),
            ("", &[("a", "b")], true),
            ("a=b", &[("a", "b")], true),
            ("a=b", &[("a", "c")], false),
            ("a=b", &[], false),
            ("a=b", &[("A", "b")], false),
            // `!=` and `notin` match when the label is absent.
            ("a!=b", &[], true),
            ("a!=b", &[("a", "b")], false),
            ("a!=b", &[("a", "c")], true),
            ("a in (b,c)", &[("a", "c")], true),
            ("a in (b,c)", &[("a", "d")], false),
            ("a in (b,c)", &[], false),
            ("a notin (b,c)", &[], true),
            ("a notin (b,c)", &[("a", "b")], false),
            ("a notin (b,c)", &[("a", "x")], true),
            ("a", &[("a", "")], true),
            ("a", &[("b", "a")], false),
            ("!a", &[], true),
            ("!a", &[("a", "")], false),
            // The empty value is a value: `a=` and `a in ()` want `a` present and empty.
            ("a=", &[("a", "")], true),
            ("a=", &[("a", "x")], false),
            ("a=", &[], false),
            ("a in ()", &[("a", "")], true),
            ("a in ()", &[], false),
            ("a in (x,)", &[("a", "")], true),
            ("a notin ()", &[("a", "x")], true),
            ("a notin ()", &[("a", "")], false),
            // Every requirement must hold.
            ("a=b,c", &[("a", "b"), ("c", "d")], true),
            ("a=b,c", &[("a", "b")], false),
            ("a=b,a=c", &[("a", "b")], false),
            ("example.com/a=b", &[("example.com/a", "b")], true),
            ("example.com/a=b", &[("a", "b")], false),
        ] {
            check_match(selector, labels, expected);
        }
    }

    /// Checks a key rule's answer, then a value rule's (`None` when the value case does not
    /// apply).
    #[track_caller]
    fn check_rule(text: &str, key: Result<(), &str>, value: Option<Result<(), &str>>) {
        assert_eq!(label_key_rule(text).as_ref().map_err(String::as_str).copied(), key, "key `{text}`");
        if let Some(value) = value {
            assert_eq!(
                label_value_rule(text).as_ref().map_err(String::as_str).copied(),
                value,
                "value `{text}`"
            );
        }
    }

    #[test]
    fn key_and_value_rules_are_kubernetes() {
        let pattern =
            "must start and end with a letter or digit and contain only letters, digits, '-', '_' and '.'";
        let value_pattern = "must be empty or start and end with a letter or digit and contain only \
                             letters, digits, '-', '_' and '.'";
        let name_pattern = "must have a name after '/' that starts and ends with a letter or digit and \
                            contains only letters, digits, '-', '_' and '.'";
        let subdomain = "must have a DNS-1123 subdomain before '/': lower-case letters, digits, '-' and '.', \
                         each part starting and ending with a letter or digit";
        let (n63, n64) = ("n".repeat(63), "n".repeat(64));
        let (p253, p254) = ("p".repeat(253), "p".repeat(254));
        for (text, key, value) in [
            ("", Err("must not be empty"), Some(Ok(()))),
            ("a", Ok(()), Some(Ok(()))),
            ("9", Ok(()), Some(Ok(()))),
            ("A_b.c-D", Ok(()), Some(Ok(()))),
            ("a..b", Ok(()), Some(Ok(()))),
            (&n63, Ok(()), Some(Ok(()))),
            (
                &n64,
                Err("must be at most 63 characters, got 64"),
                Some(Err("must be at most 63 characters, got 64")),
            ),
            ("-a", Err(pattern), Some(Err(value_pattern))),
            ("a-", Err(pattern), Some(Err(value_pattern))),
            ("_a", Err(pattern), Some(Err(value_pattern))),
            ("a.", Err(pattern), Some(Err(value_pattern))),
            ("a b", Err(pattern), Some(Err(value_pattern))),
            ("a:b", Err(pattern), Some(Err(value_pattern))),
            ("é", Err(pattern), Some(Err(value_pattern))),
            // More bytes than 63 but not more characters: refused for the pattern, as in Kubernetes.
            (&"é".repeat(63), Err(pattern), Some(Err(value_pattern))),
            ("a/b", Ok(()), Some(Err(value_pattern))),
            ("example.com/MyName", Ok(()), None),
            ("a-1.b-2/c", Ok(()), None),
            ("a/b/c", Err("must have at most one '/', between a DNS subdomain prefix and the name"), None),
            ("/a", Err("has an empty prefix before '/'"), None),
            ("/", Err("has an empty prefix before '/'"), None),
            ("a/", Err("has an empty name after '/'"), None),
            ("Example.com/a", Err(subdomain), None),
            ("a..b/c", Err(subdomain), None),
            (".a/c", Err(subdomain), None),
            ("a-/c", Err(subdomain), None),
            ("a_b/c", Err(subdomain), None),
            ("a/-c", Err(name_pattern), None),
            ("a/c_", Err(name_pattern), None),
        ] {
            check_rule(text, key, value);
        }
        // The prefix may be 253 characters, and one part of it may be that long too.
        check_rule(&format!("{p253}/{n63}"), Ok(()), None);
        check_rule(
            &format!("{p254}/a"),
            Err("must have a prefix of at most 253 characters before '/', got 254"),
            None,
        );
        check_rule(
            &format!("a/{n64}"),
            Err("must have a name of at most 63 characters after '/', got 64"),
            None,
        );
    }

    /// Cases per property: enough to find the classes of trouble, few enough for a loaded machine.
    fn config() -> Config {
        Config { cases: 1024, failure_persistence: None, ..Config::default() }
    }

    /// Text made of the selector syntax's pieces, so that many cases parse and the others fail
    /// deep inside the grammar.
    fn selector_ish_text() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "a",
            "b",
            "x/y",
            "example.com/k",
            "in",
            "notin",
            "v",
            "",
            "=",
            "==",
            "!=",
            "!",
            "(",
            ")",
            ",",
            ">",
            "<",
            " ",
            "\t",
            "-",
            "é",
            "/",
            ".",
            "_",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    /// A selector written from valid requirements, with Kubernetes' spelling variants.
    fn written_selector() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["a", "b", "in", "notin", "x.io/k", "A-1_b.c"]);
        let value = prop::sample::select(vec!["", "v", "w", "in", "notin", "V-1_x.y"]);
        let space = prop::sample::select(vec!["", " ", "\t", "\n "]);
        let requirement = (key, 0..7usize, prop::collection::vec(value, 1..4), space.clone(), space)
            .prop_map(|(key, operator, values, before, after)| match operator {
                0 => format!("{before}{key}{after}"),
                1 => format!("!{before}{key}{after}"),
                2 => format!("{key}{before}={after}{}", values[0]),
                3 => format!("{key}{before}=={after}{}", values[0]),
                4 => format!("{key}{before}!={after}{}", values[0]),
                5 => format!("{key} in{before}({after}{})", values.join(&format!("{after},{before}"))),
                _ => format!("{key} notin ({before}{}{after})", values.join(",")),
            });
        prop::collection::vec(requirement, 0..6).prop_map(|requirements| requirements.join(","))
    }

    /// What must hold of any text: no panic; a selector shows in a form that parses back to it;
    /// an error is one line with a position inside the text (or one past its end).
    fn check_any(text: &str) -> Result<(), TestCaseError> {
        match LabelSelector::parse(text) {
            Ok(selector) => {
                let canonical = selector.to_string();
                prop_assert_eq!(LabelSelector::parse(&canonical), Ok(selector.clone()));
                prop_assert_eq!(selector.to_kubernetes(str::to_owned), canonical);
            }
            Err(error) => {
                prop_assert!(!error.to_string().contains('\n'), "{}", error);
                if let Some(position) = error.position() {
                    prop_assert!((1..=text.chars().count() + 1).contains(&position), "{}", error);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_text_never_panics(text in any::<String>()) {
            check_any(&text)?;
        }

        #[test]
        fn selector_ish_text_never_panics_and_round_trips(text in selector_ish_text()) {
            check_any(&text)?;
        }

        #[test]
        fn written_selectors_parse_and_round_trip(text in written_selector()) {
            let parsed = LabelSelector::parse(&text);
            prop_assert!(parsed.is_ok(), "`{}`: {:?}", text, parsed);
            check_any(&text)?;
        }
    }
}
