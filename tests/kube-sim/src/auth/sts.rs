//! The second half of EKS token review for credentials the simulator does not know (temporary
//! ones from AssumeRole): replay the presigned URL against an STS endpoint (moto on loopback,
//! through the test launcher), as aws-iam-authenticator does against AWS, and accept only a 200
//! whose body is a GetCallerIdentity response with an ARN the simulator was told to allow.
//! Identities are mapped as EKS maps them: an assumed-role session is its role.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an STS answer may take.
const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why STS did not vouch for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    /// The endpoint could not be reached or answered garbage.
    #[error("cannot reach STS at {endpoint}: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// STS refused the URL.
    #[error("STS refused the pre-signed URL with status {status}")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// A 200 that is not a GetCallerIdentity response.
    #[error("STS answered 200 but not with a GetCallerIdentity response")]
    NotAnIdentity,
    /// An identity that is not allowed on this cluster.
    #[error("ARN {0} is not mapped to any user of this cluster")]
    NotAllowed(String),
}

/// Replays presigned URLs against an STS endpoint, caching each token's verdict until the
/// token expires.
#[derive(Debug)]
pub struct StsReplay {
    /// The endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Canonical ARNs (users, or roles for assumed-role sessions) allowed on the cluster.
    pub allowed_arns: Vec<String>,
    cache: Mutex<HashMap<String, (String, jiff::Timestamp)>>,
}

impl StsReplay {
    /// A replayer against `endpoint` allowing `allowed_arns`.
    pub fn new(endpoint: String, allowed_arns: Vec<String>) -> StsReplay {
        StsReplay { endpoint, allowed_arns, cache: Mutex::new(HashMap::new()) }
    }

    /// Asks STS who signed `path_and_query` (the presigned URL without scheme and host), sending
    /// the signed `x-k8s-aws-id: cluster` header along as aws-iam-authenticator does; `expires`
    /// is when the token stops being valid, for the cache.
    pub async fn identify(
        &self,
        path_and_query: &str,
        cluster: &str,
        expires: jiff::Timestamp,
    ) -> Result<String, StsError> {
        let now = jiff::Timestamp::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            cache.retain(|_, (_, until)| *until > now);
            if let Some((arn, _)) = cache.get(path_and_query) {
                return Ok(arn.clone());
            }
        }
        let (status, body) = tokio::time::timeout(STS_TIMEOUT, self.get(path_and_query, cluster))
            .await
            .map_err(|_| self.unreachable("timed out".to_string()))??;
        if status != 200 {
            return Err(StsError::Refused { status });
        }
        if !body.contains("<GetCallerIdentityResponse") {
            return Err(StsError::NotAnIdentity);
        }
        let arn = element(&body, "Arn").ok_or(StsError::NotAnIdentity)?;
        let canonical = canonical_arn(&arn);
        if !self.allowed_arns.contains(&canonical) {
            return Err(StsError::NotAllowed(canonical));
        }
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(path_and_query.to_string(), (canonical.clone(), expires));
        Ok(canonical)
    }

    fn unreachable(&self, message: String) -> StsError {
        StsError::Unreachable { endpoint: self.endpoint.clone(), message }
    }

    /// A plain HTTP/1.1 GET on loopback: the endpoint is a test fixture, never the internet.
    async fn get(&self, path_and_query: &str, cluster: &str) -> Result<(u16, String), StsError> {
        let authority = self
            .endpoint
            .strip_prefix("http://")
            .ok_or_else(|| self.unreachable("only http:// endpoints are supported".to_string()))?
            .trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|error| self.unreachable(error.to_string()))?;
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nx-k8s-aws-id: {cluster}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|error| self.unreachable(error.to_string()))?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|error| self.unreachable(error.to_string()))?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| self.unreachable("not an HTTP response".to_string()))?;
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }
}

/// The text of the first `<name>` element.
fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim().to_string())
}

/// The ARN EKS maps an identity to: an assumed-role session is its role.
pub fn canonical_arn(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6 && parts[2] == "sts" {
        let resource: Vec<&str> = parts[5].split('/').collect();
        if resource.len() >= 2 && resource[0] == "assumed-role" {
            return format!("arn:{}:iam::{}:role/{}", parts[1], parts[4], resource[1]);
        }
    }
    arn.to_string()
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_role_sessions_map_to_their_role() {
        assert_eq!(
            canonical_arn("arn:aws:sts::123456789012:assumed-role/EKSAdmin/hydroplane"),
            "arn:aws:iam::123456789012:role/EKSAdmin"
        );
        assert_eq!(
            canonical_arn("arn:aws:iam::123456789012:user/alice"),
            "arn:aws:iam::123456789012:user/alice"
        );
        assert_eq!(element("<a><Arn> x </Arn></a>", "Arn").as_deref(), Some("x"));
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
