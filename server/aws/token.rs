//! The EKS bearer token, as `aws eks get-token` makes it: a SigV4-presigned STS
//! `GetCallerIdentity` URL for the region's STS host, with the header `x-k8s-aws-id: <cluster>`
//! signed and `X-Amz-Expires=60`, encoded as `k8s-aws-v1.` + base64url without padding. The
//! cluster's authenticator replays the URL against STS to learn who we are.
//!
//! Pure: the credentials and the clock come from the caller, so a test can compare the token
//! with botocore's for the same keys and instant, byte for byte.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The prefix of every EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// How long the presigned URL says it is valid, as `aws eks get-token` sets it.
const PRESIGNED_EXPIRY: Duration = Duration::from_secs(60);

/// The characters SigV4 leaves unencoded: letters, digits and `-_.~`.
const SIGV4_QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The signing parameters were incomplete.
    #[error("cannot set up SigV4 signing: {0}")]
    Parameters(String),
    /// Signing failed.
    #[error("cannot sign the STS request: {0}")]
    Signing(String),
}

/// The STS host the token is made for: the region's.
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

/// Makes the bearer token for `cluster_name` in `region`, signed with `credentials` at `now`.
pub fn eks_token(
    credentials: &Credentials,
    region: &str,
    cluster_name: &str,
    now: SystemTime,
) -> Result<zeroize::Zeroizing<String>, TokenError> {
    let host = sts_host(region);
    let url = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGNED_EXPIRY);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|error| TokenError::Parameters(error.to_string()))?
        .into();
    let headers = [("host", host.as_str()), ("x-k8s-aws-id", cluster_name)];
    let request = SignableRequest::new("GET", &url, headers.into_iter(), SignableBody::Bytes(&[]))
        .map_err(|error| TokenError::Signing(error.to_string()))?;
    let (instructions, _signature) =
        sign(request, &params).map_err(|error| TokenError::Signing(error.to_string()))?.into_parts();
    let (_, signed_params) = instructions.into_parts();

    // The query in botocore's order: the request's own parameters, the signing ones, then the
    // session token (for temporary credentials) and the signature last.
    const ORDER: [&str; 9] = [
        "Action",
        "Version",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ];
    let mut query: Vec<(String, String)> =
        vec![("Action".into(), "GetCallerIdentity".into()), ("Version".into(), "2011-06-15".into())];
    query.extend(signed_params.iter().map(|(name, value)| ((*name).to_owned(), value.to_string())));
    query.sort_by_key(|(name, _)| ORDER.iter().position(|known| known == name).unwrap_or(ORDER.len()));
    let query = query
        .iter()
        .map(|(name, value)| {
            format!("{}={}", utf8_percent_encode(name, SIGV4_QUERY), utf8_percent_encode(value, SIGV4_QUERY))
        })
        .collect::<Vec<_>>()
        .join("&");
    let presigned = zeroize::Zeroizing::new(format!("https://{host}/?{query}"));
    Ok(zeroize::Zeroizing::new(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(presigned.as_bytes())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(token: &str) -> String {
        let encoded = token.strip_prefix(TOKEN_PREFIX).expect("prefix");
        String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).expect("base64url"),
        )
        .expect("utf-8")
    }

    #[test]
    fn the_token_is_a_presigned_get_caller_identity_url() {
        let credentials =
            Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None, None, "test");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_787_045); // 2025-01-02T03:04:05Z
        let token = eks_token(&credentials, "us-west-2", "hydro-eks", now).expect("token");
        assert!(!token.contains('='), "no padding");
        let url = decode(&token);
        assert!(
            url.starts_with(
                "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&\
                 X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20250102%2Fus-west-2%2Fsts%2Faws4_request&\
                 X-Amz-Date=20250102T030405Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature="
            ),
            "{url}"
        );
        // The same inputs make the same token; another cluster makes another.
        assert_eq!(*token, *eks_token(&credentials, "us-west-2", "hydro-eks", now).expect("token"));
        assert_ne!(*token, *eks_token(&credentials, "us-west-2", "other", now).expect("token"));
    }

    #[test]
    fn temporary_credentials_carry_their_session_token() {
        let credentials =
            Credentials::new("ASIAEXAMPLE", "secret", Some("session/token+=".into()), None, "test");
        let url = decode(&eks_token(&credentials, "eu-west-1", "c", SystemTime::UNIX_EPOCH).expect("token"));
        assert!(
            url.contains("&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Security-Token=session%2Ftoken%2B%3D&X-Amz-Signature="),
            "{url}"
        );
        assert!(!url.contains("secret"));
    }
}
