//! Which secret names the local store accepts. A name is also a file name, so the rules keep it
//! inside its directory and apart from the store's own files (which start with a dot or live
//! elsewhere).

use super::SecretError;

/// The longest secret name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a secret name: 1 to 128 characters of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_secret_name(name: &str) -> Result<(), SecretError> {
    let invalid = |reason: &'static str| SecretError::InvalidName { name: name.to_owned(), reason };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 128 characters"));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(invalid("it contains a path separator"));
    }
    if name.starts_with('.') {
        // This also refuses `.` and `..`, and keeps names apart from the store's temporary files.
        return Err(invalid("it starts with a dot"));
    }
    if name.contains("..") {
        return Err(invalid("it contains `..`"));
    }
    if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')) {
        return Err(invalid("only letters, digits, `.`, `_` and `-` are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(name: &str, expected_reason: Option<&str>) {
        match (validate_secret_name(name), expected_reason) {
            (Ok(()), None) => {}
            (Err(SecretError::InvalidName { name: got, reason }), Some(expected)) => {
                assert_eq!(got, name);
                assert_eq!(reason, expected);
            }
            (result, expected) => panic!("{name:?}: got {result:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn names() {
        check("aws-credentials", None);
        check("A.b_c-9", None);
        check(&"x".repeat(128), None);
        check("", Some("it is empty"));
        check(&"x".repeat(129), Some("it is longer than 128 characters"));
        check("a/b", Some("it contains a path separator"));
        check("a\\b", Some("it contains a path separator"));
        check("/etc/passwd", Some("it contains a path separator"));
        check(".", Some("it starts with a dot"));
        check("..", Some("it starts with a dot"));
        check(".hidden", Some("it starts with a dot"));
        check("a..b", Some("it contains `..`"));
        check("with space", Some("only letters, digits, `.`, `_` and `-` are allowed"));
        check("nul\0byte", Some("only letters, digits, `.`, `_` and `-` are allowed"));
        check("é", Some("only letters, digits, `.`, `_` and `-` are allowed"));
    }
}
