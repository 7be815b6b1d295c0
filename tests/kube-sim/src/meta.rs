//! Small helpers for object metadata: timestamps, UIDs, generated names and typed accessors
//! over `serde_json::Value` objects.

use serde_json::{Map, Value};

/// The current time as the RFC 3339 string Kubernetes uses (second precision, UTC).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A random UID in the 8-4-4-4-12 hex form real servers use.
pub fn new_uid() -> String {
    let value = fastrand::u128(..);
    let hex = format!("{value:032x}");
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// Five characters from the alphabet apiserver's `generateName` uses (no vowels, no look-alikes).
pub fn random_suffix(length: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..length).map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())])).collect()
}

/// `metadata.<field>` as a string, or "" when absent.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or_default()
}

/// The object's name.
pub fn name(object: &Value) -> &str {
    meta_str(object, "name")
}

/// The object's UID.
pub fn uid(object: &Value) -> &str {
    meta_str(object, "uid")
}

/// `metadata` as a mutable map, created when missing or not an object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let Value::Object(map) = object else { unreachable!("object was made an object above") };
    let metadata = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    match metadata {
        Value::Object(metadata) => metadata,
        _ => unreachable!("metadata was made an object above"),
    }
}

/// A mutable object at `object[key]`, created when missing or not an object.
pub fn object_mut<'a>(object: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let Value::Object(map) = object else { unreachable!("object was made an object above") };
    let child = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    match child {
        Value::Object(child) => child,
        _ => unreachable!("child was made an object above"),
    }
}

/// The UIDs named in `metadata.ownerReferences`.
pub fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_string).collect()
        })
        .unwrap_or_default()
}

/// The object's resourceVersion as a number, 0 when absent or malformed.
pub fn resource_version(object: &Value) -> u64 {
    meta_str(object, "resourceVersion").parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_suffixes_have_the_real_shape() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
        let suffix = random_suffix(5);
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert!(now().ends_with('Z'));
    }
}
