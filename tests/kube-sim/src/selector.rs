//! Label and field selectors, parsed from query strings and matched against JSON objects.
//!
//! Label selectors are `hydroplane-core`'s, the one parser of the workspace (apimachinery's
//! `labels.Parse` grammar: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`),
//! read without the limits the Hydroplane API sets, as an API server reads them. Field
//! selectors (`field=value`, `field!=value`) are the simulator's own.

pub use hydroplane_core::spec::labels::{LabelSelector, SelectorError};
use hydroplane_core::spec::labels::{Operator, Requirement};
use serde_json::Value;

/// Parses a `labelSelector` query value; the empty string selects everything.
pub fn parse_labels(text: &str) -> Result<LabelSelector, SelectorError> {
    LabelSelector::parse_unlimited(text)
}

/// Whether `labels` (an object's `metadata.labels`) satisfy every requirement of `selector`.
pub fn labels_match(selector: &LabelSelector, labels: Option<&Value>) -> bool {
    selector.matches_by(|key| labels.and_then(|labels| labels.get(key)).and_then(Value::as_str))
}

/// Builds a selector from a `LabelSelector` object (`matchLabels` and `matchExpressions`);
/// an expression with an unknown operator is left out.
pub fn selector_from_object(selector: &Value) -> LabelSelector {
    let mut requirements = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or_default().to_owned();
            requirements.push(Requirement::new(key.as_str(), Operator::Equals, [value]));
        }
    }
    for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
        let values = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned);
        let operator = match expression.get("operator").and_then(Value::as_str) {
            Some("In") => Operator::In,
            Some("NotIn") => Operator::NotIn,
            Some("Exists") => Operator::Exists,
            Some("DoesNotExist") => Operator::DoesNotExist,
            _ => continue,
        };
        let values: Vec<String> = match operator {
            Operator::In | Operator::NotIn => values.collect(),
            _ => Vec::new(),
        };
        requirements.push(Requirement::new(key, operator, values));
    }
    LabelSelector::from_requirements(requirements)
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

/// Why a field selector was rejected; the API answers 400 BadRequest with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct FieldSelectorError(String);

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms, all of which must match.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses a `fieldSelector` query value.
    pub fn parse(text: &str) -> Result<FieldSelector, FieldSelectorError> {
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
                return Err(FieldSelectorError(format!(
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
        labels_match(&self.labels, object.pointer("/metadata/labels")) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn check(selector: &str, labels: Value, expected: bool) {
        let parsed = parse_labels(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(labels_match(&parsed, Some(&labels)), expected, "{selector} against {labels}");
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
            assert!(parse_labels(bad).is_err(), "{bad} should not parse");
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
        let selector = selector_from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }));
        assert!(labels_match(&selector, Some(&json!({"app": "web"}))));
        assert!(!labels_match(&selector, Some(&json!({"app": "web", "tier": "db"}))));
    }
}
