//! EKS token review, as aws-iam-authenticator's verifier does it, with the STS call replaced by
//! checking the SigV4 signature ourselves against known static keys.
//!
//! A token is `k8s-aws-v1.` + base64url (no padding) of a presigned STS `GetCallerIdentity`
//! URL whose signed headers include `x-k8s-aws-id: <cluster name>`. [`EksVerifier::verify`]
//! checks, in the authenticator's order: length <= 4096; prefix; https; the region's (or the
//! global) STS host; path `/`; only allowed query parameters, each once;
//! `Action=GetCallerIdentity`; `x-k8s-aws-id` among the signed headers; `X-Amz-Expires` in
//! 0..=900; `X-Amz-Date` present and less than 15 minutes old; then the signature, recomputed
//! with our cluster name as the header value (so a token for another cluster fails), accepting
//! either payload hash SDKs use for presigned URLs: the SHA-256 of the empty body (what
//! botocore, and so `aws eks get-token`, signs for STS) or `UNSIGNED-PAYLOAD`.
//! [`presign_token`] makes tokens the same way botocore does, for tests.

use std::collections::BTreeMap;

use base64::Engine;
use ring::{digest, hmac};

/// The prefix of every EKS bearer token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

const MAX_TOKEN_BYTES: usize = 4096;
const CLUSTER_HEADER: &str = "x-k8s-aws-id";
const VALIDITY_SECONDS: i64 = 15 * 60;
const ALLOWED_PARAMETERS: [&str; 9] = [
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
];

/// Why an EKS token was rejected (the client only ever sees 401 Unauthorized).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EksTokenError {
    /// Longer than 4096 bytes.
    #[error("token is too large")]
    TooLarge,
    /// Not `k8s-aws-v1.`.
    #[error("token is missing expected \"k8s-aws-v1.\" prefix")]
    MissingPrefix,
    /// Not base64url or not UTF-8.
    #[error("token is not valid base64url: {0}")]
    Encoding(String),
    /// Not https.
    #[error("unexpected scheme {0:?} in pre-signed URL")]
    Scheme(String),
    /// Not an STS host for our region.
    #[error("unexpected hostname {0:?} in pre-signed URL")]
    Host(String),
    /// Path other than `/`.
    #[error("unexpected path in pre-signed URL")]
    Path,
    /// A query parameter outside the allowed list.
    #[error("non-whitelisted query parameter {0:?}")]
    Parameter(String),
    /// A parameter given more than once.
    #[error("query parameter with multiple values not supported")]
    Repeated,
    /// Action is not GetCallerIdentity.
    #[error("unexpected action parameter in pre-signed URL")]
    Action,
    /// `x-k8s-aws-id` not signed.
    #[error("client did not sign the x-k8s-aws-id header in the pre-signed URL")]
    ClusterHeaderNotSigned,
    /// X-Amz-Expires missing or outside 0..=900.
    #[error("invalid X-Amz-Expires parameter in pre-signed URL: {0:?}")]
    Expires(String),
    /// X-Amz-Date missing or malformed.
    #[error("X-Amz-Date parameter must be present and valid in pre-signed URL")]
    Date,
    /// Older than 15 minutes.
    #[error("X-Amz-Date parameter is expired (15 minute expiration)")]
    Expired,
    /// Malformed X-Amz-Credential or algorithm.
    #[error("malformed X-Amz-Credential or X-Amz-Algorithm")]
    Credential,
    /// The access key is not one we know.
    #[error("the security token included in the request is invalid (unknown access key {0})")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("the request signature we calculated does not match the signature provided")]
    Signature,
}

/// Verifies EKS tokens for one cluster.
#[derive(Debug, Clone)]
pub struct EksVerifier {
    /// The cluster name expected in `x-k8s-aws-id`.
    pub cluster_name: String,
    /// The STS region.
    pub region: String,
    /// Known keys: (access key id, secret access key).
    pub keys: Vec<(String, String)>,
    /// Extra STS host names accepted besides the region's and the global one.
    pub extra_hosts: Vec<String>,
    /// Accept tokens signed with unknown temporary credentials (carrying
    /// `X-Amz-Security-Token`) without checking their signature, for assumed roles whose
    /// secrets only the STS emulator knows. Every other check still applies.
    pub trust_session_tokens: bool,
    /// Replays tokens of unknown keys against an STS endpoint, when set.
    pub sts: Option<std::sync::Arc<super::sts::StsReplay>>,
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters stay, the rest is `%XX`.
fn aws_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes()).as_ref().to_vec()
}

/// The SigV4 signature of a presigned GET to `https://host/?<parameters>`.
fn signature(
    secret: &str,
    host: &str,
    cluster: &str,
    parameters: &BTreeMap<String, String>,
    payload_hash: &str,
) -> Option<String> {
    let mut pairs: Vec<(String, String)> = parameters
        .iter()
        .filter(|(key, _)| !key.eq_ignore_ascii_case("x-amz-signature"))
        .map(|(key, value)| (aws_encode(key), aws_encode(value)))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let signed_headers = lookup(parameters, "x-amz-signedheaders")?;
    let mut canonical_headers = String::new();
    for header in signed_headers.split(';') {
        let value = match header {
            "host" => host,
            CLUSTER_HEADER => cluster,
            _ => "",
        };
        canonical_headers.push_str(&format!("{header}:{}\n", value.trim()));
    }
    let canonical_request =
        format!("GET\n/\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}", query.join("&"));
    let date = lookup(parameters, "x-amz-date")?;
    let credential = lookup(parameters, "x-amz-credential")?;
    let scope = credential.split_once('/')?.1;
    let mut scope_parts = scope.split('/');
    let (day, region, service) = (scope_parts.next()?, scope_parts.next()?, scope_parts.next()?);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let key = hmac_sha256(format!("AWS4{secret}").as_bytes(), day);
    let key = hmac_sha256(&key, region);
    let key = hmac_sha256(&key, service);
    let key = hmac_sha256(&key, "aws4_request");
    Some(hex(&hmac_sha256(&key, &string_to_sign)))
}

fn lookup<'a>(parameters: &'a BTreeMap<String, String>, lowercase_key: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(lowercase_key))
        .map(|(_, value)| value.as_str())
}

fn parse_amz_date(text: &str) -> Option<jiff::Timestamp> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let datetime = jiff::civil::DateTime::new(
        i16::try_from(number(0..4)?).ok()?,
        i8::try_from(number(4..6)?).ok()?,
        i8::try_from(number(6..8)?).ok()?,
        i8::try_from(number(9..11)?).ok()?,
        i8::try_from(number(11..13)?).ok()?,
        i8::try_from(number(13..15)?).ok()?,
        0,
    )
    .ok()?;
    datetime.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|zoned| zoned.timestamp())
}

impl EksVerifier {
    fn host_allowed(&self, host: &str) -> bool {
        let region = &self.region;
        let standard = [
            "sts.amazonaws.com".to_string(),
            format!("sts.{region}.amazonaws.com"),
            format!("sts-fips.{region}.amazonaws.com"),
            format!("sts.{region}.amazonaws.com.cn"),
        ];
        standard.iter().chain(self.extra_hosts.iter()).any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// Checks `token` at time `now`, returning the caller's ARN.
    pub fn verify(&self, token: &str, now: jiff::Timestamp) -> Result<String, EksTokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(EksTokenError::TooLarge);
        }
        let encoded = token.strip_prefix(TOKEN_PREFIX).ok_or(EksTokenError::MissingPrefix)?;
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|e| EksTokenError::Encoding(e.to_string()))?;
        let url = String::from_utf8(decoded).map_err(|e| EksTokenError::Encoding(e.to_string()))?;
        let (scheme, rest) = url.split_once("://").ok_or_else(|| EksTokenError::Scheme(String::new()))?;
        if scheme != "https" {
            return Err(EksTokenError::Scheme(scheme.to_string()));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host, path_and_query) = rest.split_at(authority_end);
        if !self.host_allowed(host) {
            return Err(EksTokenError::Host(host.to_string()));
        }
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        if path != "/" {
            return Err(EksTokenError::Path);
        }
        let mut parameters = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let lower = key.to_ascii_lowercase();
            if !ALLOWED_PARAMETERS.contains(&lower.as_str()) {
                return Err(EksTokenError::Parameter(key.into_owned()));
            }
            if !seen.insert(lower) {
                return Err(EksTokenError::Repeated);
            }
            parameters.insert(key.into_owned(), value.into_owned());
        }
        if lookup(&parameters, "action") != Some("GetCallerIdentity") {
            return Err(EksTokenError::Action);
        }
        let signed_headers = lookup(&parameters, "x-amz-signedheaders").unwrap_or_default();
        if !signed_headers.split(';').any(|header| header == CLUSTER_HEADER) {
            return Err(EksTokenError::ClusterHeaderNotSigned);
        }
        let expires = lookup(&parameters, "x-amz-expires").unwrap_or_default();
        if !expires.parse::<i64>().is_ok_and(|seconds| (0..=900).contains(&seconds)) {
            return Err(EksTokenError::Expires(expires.to_string()));
        }
        let date = parse_amz_date(lookup(&parameters, "x-amz-date").unwrap_or_default())
            .ok_or(EksTokenError::Date)?;
        if now.as_second() > date.as_second() + VALIDITY_SECONDS {
            return Err(EksTokenError::Expired);
        }
        if lookup(&parameters, "x-amz-algorithm") != Some("AWS4-HMAC-SHA256") {
            return Err(EksTokenError::Credential);
        }
        let credential = lookup(&parameters, "x-amz-credential").unwrap_or_default();
        let parts: Vec<&str> = credential.split('/').collect();
        if parts.len() != 5 || parts[3] != "sts" || parts[4] != "aws4_request" {
            return Err(EksTokenError::Credential);
        }
        let access_key = parts[0];
        let session = lookup(&parameters, "x-amz-security-token").is_some();
        let Some((_, secret)) = self.keys.iter().find(|(id, _)| id == access_key) else {
            if session && self.trust_session_tokens {
                return Ok(format!("arn:aws:sts::000000000000:assumed-role/kube-sim/{access_key}"));
            }
            return Err(EksTokenError::UnknownKey(access_key.to_string()));
        };
        let provided = lookup(&parameters, "x-amz-signature").unwrap_or_default();
        let empty_body = hex(digest::digest(&digest::SHA256, b"").as_ref());
        let matches = ["UNSIGNED-PAYLOAD", empty_body.as_str()].into_iter().any(|payload| {
            signature(secret, host, &self.cluster_name, &parameters, payload).as_deref() == Some(provided)
        });
        if !matches {
            return Err(EksTokenError::Signature);
        }
        Ok(format!("arn:aws:iam::000000000000:user/{access_key}"))
    }
}

/// The path and query to replay against STS for a token that passed [`EksVerifier::verify`]'s
/// local checks, and when the token stops being valid.
pub fn replay_target(token: &str) -> Result<(String, jiff::Timestamp), EksTokenError> {
    let encoded = token.strip_prefix(TOKEN_PREFIX).ok_or(EksTokenError::MissingPrefix)?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|e| EksTokenError::Encoding(e.to_string()))?;
    let url = String::from_utf8(decoded).map_err(|e| EksTokenError::Encoding(e.to_string()))?;
    let rest =
        url.split_once("://").map(|(_, rest)| rest).ok_or_else(|| EksTokenError::Scheme(String::new()))?;
    let path_and_query = &rest[rest.find('/').ok_or(EksTokenError::Path)?..];
    let query = path_and_query.split_once('?').map(|(_, query)| query).unwrap_or_default();
    let date = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key.eq_ignore_ascii_case("x-amz-date"))
        .and_then(|(_, value)| parse_amz_date(&value))
        .ok_or(EksTokenError::Date)?;
    let expires =
        jiff::Timestamp::from_second(date.as_second() + VALIDITY_SECONDS).map_err(|_| EksTokenError::Date)?;
    Ok((path_and_query.to_string(), expires))
}

/// Makes an EKS token as `aws eks get-token` (botocore) does: a presigned GetCallerIdentity
/// URL for `sts.<region>.amazonaws.com`, valid 60 seconds, signed at `now`.
pub fn presign_token(
    access_key: &str,
    secret: &str,
    session_token: Option<&str>,
    region: &str,
    cluster: &str,
    now: jiff::Timestamp,
) -> String {
    let host = format!("sts.{region}.amazonaws.com");
    let date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let day = &date[..8];
    // botocore's order, so tokens are byte-for-byte the same; signing sorts them anyway.
    let mut ordered = vec![
        ("Action", "GetCallerIdentity".to_string()),
        ("Version", "2011-06-15".to_string()),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_string()),
        ("X-Amz-Credential", format!("{access_key}/{day}/{region}/sts/aws4_request")),
        ("X-Amz-Date", date.clone()),
        ("X-Amz-Expires", "60".to_string()),
        ("X-Amz-SignedHeaders", format!("host;{CLUSTER_HEADER}")),
    ];
    if let Some(session_token) = session_token {
        ordered.push(("X-Amz-Security-Token", session_token.to_string()));
    }
    let parameters: BTreeMap<String, String> =
        ordered.iter().map(|(key, value)| (key.to_string(), value.clone())).collect();
    let empty_body = hex(digest::digest(&digest::SHA256, b"").as_ref());
    let signed = signature(secret, &host, cluster, &parameters, &empty_body).unwrap_or_default();
    let mut query: Vec<String> =
        ordered.iter().map(|(key, value)| format!("{}={}", aws_encode(key), aws_encode(value))).collect();
    query.push(format!("X-Amz-Signature={signed}"));
    let url = format!("https://{host}/?{}", query.join("&"));
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// Made by botocore 1.44.8 (`generate_presigned_url` with the `x-k8s-aws-id` header, as
    /// `aws eks get-token`) for AKIDEXAMPLE, cluster `hydro`, us-east-1, at 2026-01-02T03:04:05Z.
    const BOTOCORE_TOKEN: &str = "k8s-aws-v1.aHR0cHM6Ly9zdHMudXMtZWFzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eSZWZXJzaW9uPTIwMTEtMDYtMTUmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD1BS0lERVhBTVBMRSUyRjIwMjYwMTAyJTJGdXMtZWFzdC0xJTJGc3RzJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNjAxMDJUMDMwNDA1WiZYLUFtei1FeHBpcmVzPTYwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCUzQngtazhzLWF3cy1pZCZYLUFtei1TaWduYXR1cmU9ZmIwZTdlN2FiNzg4NmQ2ZTgwMmNmODEyZTRmNjk3N2ZhNDg3OGU3ZWJmMDk0YzQ1MGM5ZGE0NDJmMjc0OTE3OA";
    /// The same with session token `FwoGZXIvYXdzEJr//////////wEaDA+example=`.
    const BOTOCORE_SESSION_TOKEN: &str = "k8s-aws-v1.aHR0cHM6Ly9zdHMudXMtZWFzdC0xLmFtYXpvbmF3cy5jb20vP0FjdGlvbj1HZXRDYWxsZXJJZGVudGl0eSZWZXJzaW9uPTIwMTEtMDYtMTUmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD1BS0lERVhBTVBMRSUyRjIwMjYwMTAyJTJGdXMtZWFzdC0xJTJGc3RzJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNjAxMDJUMDMwNDA1WiZYLUFtei1FeHBpcmVzPTYwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCUzQngtazhzLWF3cy1pZCZYLUFtei1TZWN1cml0eS1Ub2tlbj1Gd29HWlhJdllYZHpFSnIlMkYlMkYlMkYlMkYlMkYlMkYlMkYlMkYlMkYlMkZ3RWFEQSUyQmV4YW1wbGUlM0QmWC1BbXotU2lnbmF0dXJlPWQ1NWYxNTM2MmE4NmZlMDhhMmQxNWYyMDhhZWY5NmMzN2UwNGFhOTQ0YTRlNjZmM2RmYzlkODYxZGEwMjM1NTk";
    const SESSION: &str = "FwoGZXIvYXdzEJr//////////wEaDA+example=";

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn verifier(cluster: &str) -> EksVerifier {
        EksVerifier {
            cluster_name: cluster.into(),
            region: "us-east-1".into(),
            keys: vec![("AKIDEXAMPLE".into(), SECRET.into())],
            extra_hosts: vec![],
            trust_session_tokens: false,
            sts: None,
        }
    }

    fn token_for_url(url: &str) -> String {
        format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url))
    }

    fn decoded(token: &str) -> String {
        String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token[TOKEN_PREFIX.len()..]).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn botocore_tokens_verify() {
        let now = at("2026-01-02T03:10:00Z");
        assert_eq!(
            verifier("hydro").verify(BOTOCORE_TOKEN, now),
            Ok("arn:aws:iam::000000000000:user/AKIDEXAMPLE".into())
        );
        assert!(verifier("hydro").verify(BOTOCORE_SESSION_TOKEN, now).is_ok());
    }

    #[test]
    fn presigned_tokens_equal_botocore_ones() {
        let now = at("2026-01-02T03:04:05Z");
        assert_eq!(presign_token("AKIDEXAMPLE", SECRET, None, "us-east-1", "hydro", now), BOTOCORE_TOKEN);
        assert_eq!(
            presign_token("AKIDEXAMPLE", SECRET, Some(SESSION), "us-east-1", "hydro", now),
            BOTOCORE_SESSION_TOKEN
        );
    }

    #[test]
    fn tokens_for_other_clusters_keys_or_times_fail() {
        let now = at("2026-01-02T03:10:00Z");
        assert_eq!(verifier("other").verify(BOTOCORE_TOKEN, now), Err(EksTokenError::Signature));
        assert_eq!(
            verifier("hydro").verify(BOTOCORE_TOKEN, at("2026-01-02T03:19:06Z")),
            Err(EksTokenError::Expired)
        );
        let mut wrong_secret = verifier("hydro");
        wrong_secret.keys[0].1 = "not-the-secret".into();
        assert_eq!(wrong_secret.verify(BOTOCORE_TOKEN, now), Err(EksTokenError::Signature));
        let mut unknown = verifier("hydro");
        unknown.keys.clear();
        assert_eq!(unknown.verify(BOTOCORE_TOKEN, now), Err(EksTokenError::UnknownKey("AKIDEXAMPLE".into())));
        unknown.trust_session_tokens = true;
        assert_eq!(unknown.verify(BOTOCORE_TOKEN, now), Err(EksTokenError::UnknownKey("AKIDEXAMPLE".into())));
        assert!(unknown.verify(BOTOCORE_SESSION_TOKEN, now).is_ok());
        let mut other_region = verifier("hydro");
        other_region.region = "eu-west-1".into();
        assert!(matches!(other_region.verify(BOTOCORE_TOKEN, now), Err(EksTokenError::Host(_))));
    }

    #[track_caller]
    fn check_url(edit: impl Fn(String) -> String, expected: EksTokenError) {
        let url = edit(decoded(BOTOCORE_TOKEN));
        assert_eq!(
            verifier("hydro").verify(&token_for_url(&url), at("2026-01-02T03:10:00Z")),
            Err(expected),
            "{url}"
        );
    }

    #[test]
    fn malformed_tokens_fail_the_checks_in_order() {
        let now = at("2026-01-02T03:10:00Z");
        assert_eq!(verifier("hydro").verify("Bearer x", now), Err(EksTokenError::MissingPrefix));
        assert_eq!(
            verifier("hydro").verify(&format!("{TOKEN_PREFIX}{}", "A".repeat(5000)), now),
            Err(EksTokenError::TooLarge)
        );
        assert!(matches!(verifier("hydro").verify("k8s-aws-v1.!!!", now), Err(EksTokenError::Encoding(_))));
        check_url(|u| u.replacen("https", "http", 1), EksTokenError::Scheme("http".into()));
        check_url(
            |u| u.replace("sts.us-east-1.amazonaws.com", "evil.example.com"),
            EksTokenError::Host("evil.example.com".into()),
        );
        check_url(|u| u.replace(".com/?", ".com/x?"), EksTokenError::Path);
        check_url(|u| format!("{u}&Extra=1"), EksTokenError::Parameter("Extra".into()));
        check_url(|u| format!("{u}&Action=GetCallerIdentity"), EksTokenError::Repeated);
        check_url(|u| u.replace("GetCallerIdentity", "AssumeRole"), EksTokenError::Action);
        check_url(|u| u.replace("host%3Bx-k8s-aws-id", "host"), EksTokenError::ClusterHeaderNotSigned);
        check_url(
            |u| u.replace("X-Amz-Expires=60", "X-Amz-Expires=901"),
            EksTokenError::Expires("901".into()),
        );
        check_url(|u| u.replace("X-Amz-Date=20260102T030405Z", "X-Amz-Date=yesterday"), EksTokenError::Date);
        check_url(|u| u.replace("X-Amz-Signature=fb", "X-Amz-Signature=fc"), EksTokenError::Signature);
        check_url(|u| u.replace("Version=2011-06-15", "Version=2011-06-16"), EksTokenError::Signature);
    }
}
