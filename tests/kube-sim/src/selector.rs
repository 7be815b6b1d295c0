//! Label and field selectors, parsed from query strings and matched against JSON objects.
//!
//! The grammar follows apimachinery's `labels.Parse`: comma-separated requirements of the forms
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k`.

use serde_json::Value;

/// Why a selector string was rejected; the API answers 400 BadRequest with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The requirement does not parse.
    #[error("unable to parse requirement: {0}")]
    Syntax(String),
    /// A key or value breaks label syntax rules.
    #[error("invalid label {what}: \"{text}\": {detail}")]
    InvalidLabel { what: &'static str, text: String, detail: String },
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: also true when the key is absent.
    NotEquals(String, String),
    /// `key in (v1,v2)`.
    In(String, Vec<String>),
    /// `key notin (v1,v2)`: also true when the key is absent.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, all of which must match.
    pub requirements: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Why `key` is not a valid label key, if it is not.
pub fn label_key_error(key: &str) -> Option<String> {
    match check_key(key) {
        Ok(()) => None,
        Err(error) => Some(error.to_string()),
    }
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |detail: &str| SelectorError::InvalidLabel {
        what: "key",
        text: key.to_string(),
        detail: detail.to_string(),
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || crate::validation::dns1123_subdomain_error(prefix).is_some())
    {
        return Err(invalid("prefix part must be a DNS-1123 subdomain"));
    }
    if name.is_empty() || name.len() > 63 || !is_label_value_syntax(name) {
        return Err(invalid(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ));
    }
    Ok(())
}

/// Whether `text` is a syntactically valid (possibly empty) label value.
pub fn is_label_value_syntax(text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let bytes = text.as_bytes();
    text.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if is_label_value_syntax(value) {
        Ok(())
    } else {
        Err(SelectorError::InvalidLabel {
            what: "value",
            text: value.to_string(),
            detail:
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"
                    .to_string(),
        })
    }
}

fn parse_set(text: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner =
        text.trim().strip_prefix('(').and_then(|rest| rest.strip_suffix(')')).ok_or_else(|| {
            SelectorError::Syntax(format!("{whole}: expected a parenthesised set of values"))
        })?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for value in &values {
        check_value(value)?;
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses a `labelSelector` query value; the empty string selects everything.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                return Err(SelectorError::Syntax(format!("{text}: empty requirement")));
            }
            if let Some(key) = term.strip_prefix('!') {
                let key = key.trim();
                check_key(key)?;
                requirements.push(Requirement::DoesNotExist(key.to_string()));
                continue;
            }
            let key_end = term
                .find(|c: char| c == '=' || c == '!' || c.is_whitespace() || c == '(')
                .unwrap_or(term.len());
            let key = &term[..key_end];
            let rest = term[key_end..].trim_start();
            check_key(key)?;
            let requirement = if let Some(value) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('='))
            {
                let value = value.trim();
                check_value(value)?;
                Requirement::Equals(key.to_string(), value.to_string())
            } else if let Some(value) = rest.strip_prefix("!=") {
                let value = value.trim();
                check_value(value)?;
                Requirement::NotEquals(key.to_string(), value.to_string())
            } else if let Some(set) = rest.strip_prefix("notin") {
                Requirement::NotIn(key.to_string(), parse_set(set, term)?)
            } else if let Some(set) = rest.strip_prefix("in") {
                Requirement::In(key.to_string(), parse_set(set, term)?)
            } else if rest.is_empty() {
                Requirement::Exists(key.to_string())
            } else {
                return Err(SelectorError::Syntax(format!(
                    "{term}: found '{rest}', expected: in, notin, =, ==, !="
                )));
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` (an object's `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let lookup = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => lookup(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => lookup(key) != Some(value.as_str()),
            Requirement::In(key, values) => lookup(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(key, values) => !lookup(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::Exists(key) => lookup(key).is_some(),
            Requirement::DoesNotExist(key) => lookup(key).is_none(),
        })
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels` and `matchExpressions`).
    pub fn from_object(selector: &Value) -> LabelSelector {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                requirements
                    .push(Requirement::Equals(key.clone(), value.as_str().unwrap_or_default().to_string()));
            }
        }
        for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = expression.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|values| values.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            match expression.get("operator").and_then(Value::as_str) {
                Some("In") => requirements.push(Requirement::In(key, values)),
                Some("NotIn") => requirements.push(Requirement::NotIn(key, values)),
                Some("Exists") => requirements.push(Requirement::Exists(key)),
                Some("DoesNotExist") => requirements.push(Requirement::DoesNotExist(key)),
                _ => {}
            }
        }
        LabelSelector { requirements }
    }
}

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The dotted field path, e.g. `spec.nodeName`.
    pub field: String,
    /// True for `=`/`==`, false for `!=`.
    pub equal: bool,
    /// The value compared against.
    pub value: String,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms, all of which must match.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for term in text.split(',') {
            let term = term.trim();
            let (field, equal, value) = if let Some((field, value)) = term.split_once("!=") {
                (field, false, value)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, true, value)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, true, value)
            } else {
                return Err(SelectorError::Syntax(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether `object` satisfies every term; a missing field reads as the empty string.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| (field_value(object, &r.field) == r.value) == r.equal)
    }
}

/// Reads a dotted field path as the string a field selector compares against.
pub fn field_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for part in path.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A label and a field selector together: what a list or watch filters by.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The `labelSelector`.
    pub labels: LabelSelector,
    /// The `fieldSelector`.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether the object passes both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object.pointer("/metadata/labels")) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn check(selector: &str, labels: Value, expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(parsed.matches(Some(&labels)), expected, "{selector} against {labels}");
    }

    #[test]
    fn label_selector_operators() {
        let labels = json!({"app": "web", "tier": "front", "example.com/team": "a"});
        check("app=web", labels.clone(), true);
        check("app==web", labels.clone(), true);
        check("app=db", labels.clone(), false);
        check("app!=db", labels.clone(), true);
        check("missing!=x", labels.clone(), true);
        check("app in (web, db)", labels.clone(), true);
        check("app in(db)", labels.clone(), false);
        check("app notin (db)", labels.clone(), true);
        check("missing notin (db)", labels.clone(), true);
        check("tier", labels.clone(), true);
        check("!tier", labels.clone(), false);
        check("!missing", labels.clone(), true);
        check("app=web,tier=front", labels.clone(), true);
        check("app=web,tier in (back)", labels.clone(), false);
        check("example.com/team=a", labels.clone(), true);
        check("", labels, true);
    }

    #[test]
    fn label_selector_rejects_bad_syntax() {
        for bad in ["app=we b", "app in web", "app ~ web", "-app=web", "a/b/c=d", "app=web,"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn field_selector_reads_nested_fields() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}});
        let check_fields = |text: &str| FieldSelector::parse(text).map(|s| s.matches(&pod));
        assert_eq!(check_fields("spec.nodeName=node-1"), Ok(true));
        assert_eq!(check_fields("status.phase!=Running"), Ok(false));
        assert_eq!(check_fields("metadata.name==p,status.phase=Running"), Ok(true));
        assert_eq!(check_fields("spec.schedulerName="), Ok(true));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn selector_objects_become_requirements() {
        let selector = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }));
        assert!(selector.matches(Some(&json!({"app": "web"}))));
        assert!(!selector.matches(Some(&json!({"app": "web", "tier": "db"}))));
    }
}
