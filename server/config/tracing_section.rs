//! The `tracing:` section of the settings, read by telemetry: its own file, since the endpoint's
//! checks are most of it.
//!
//! The endpoint is checked when the settings load (and by `hydroplane check`): a typo such as
//! `127.0.0.1:4317` without a scheme, or `grpc://...`, is refused with a line that names the key,
//! instead of an exporter that fails quietly in the background for the server's whole life.

use std::fmt;

use serde::Deserialize;

/// `tracing: {otlp_endpoint}`: where spans are exported over OTLP (gRPC). Without the section,
/// nothing is exported.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: OtlpEndpoint,
}

/// A checked OTLP endpoint: an `http` or `https` URL with a host, an optional port, and no path,
/// query or credentials.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    /// The endpoint as written, for the exporter.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the collector is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

/// The endpoint is shown as written: it holds no credentials (they are refused).
impl fmt::Debug for OtlpEndpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl TryFrom<String> for OtlpEndpoint {
    type Error = String;

    fn try_from(text: String) -> Result<OtlpEndpoint, String> {
        check_endpoint(&text).map_err(|rule| {
            // The value is quoted only when it cannot carry a password (it was refused for one).
            let shown =
                if text.contains('@') { "<not shown: it has credentials>".to_owned() } else { text.clone() };
            format!("tracing.otlp_endpoint {rule}, like http://127.0.0.1:4317; got `{shown}`")
        })?;
        Ok(OtlpEndpoint(text.trim_end_matches('/').to_owned()))
    }
}

/// Why `text` is no OTLP endpoint, or nothing when it is one.
fn check_endpoint(text: &str) -> Result<(), &'static str> {
    let uri: http::Uri = text.parse().map_err(|_| "must be a URL")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err("must be an http:// or https:// URL (OTLP over gRPC)"),
        None => return Err("must start with http:// or https://"),
    }
    let Some(authority) = uri.authority() else { return Err("must name a host") };
    if authority.as_str().contains('@') {
        return Err("must not hold credentials (a collector that needs them is not supported)");
    }
    if authority.host().is_empty() {
        return Err("must name a host");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must have no path or query: the gRPC exporter adds the service's path itself");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(endpoint: &str, expected: Result<&str, &str>) {
        let parsed = OtlpEndpoint::try_from(endpoint.to_owned());
        match (parsed, expected) {
            (Ok(parsed), Ok(expected)) => assert_eq!(parsed.as_str(), expected),
            (Err(message), Err(expected)) => {
                assert!(message.starts_with("tracing.otlp_endpoint "), "{message}");
                assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            }
            (parsed, expected) => panic!("{endpoint:?}: got {parsed:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn endpoints_are_http_or_https_urls_with_a_host_and_no_path() {
        check("http://127.0.0.1:4317", Ok("http://127.0.0.1:4317"));
        check("https://collector.example:4317/", Ok("https://collector.example:4317"));
        check("http://[::1]:4317", Ok("http://[::1]:4317"));
        check("127.0.0.1:4317", Err("must start with http:// or https://"));
        check("grpc://127.0.0.1:4317", Err("must be an http:// or https:// URL"));
        check("http://127.0.0.1:4317/v1/traces", Err("must have no path"));
        check("http://127.0.0.1:4317?x=1", Err("must have no path"));
        check("", Err("must be a URL"));
        check("http://user:secret@collector:4317", Err("must not hold credentials"));
    }

    #[test]
    fn a_refused_endpoint_with_credentials_is_not_quoted() {
        let message = OtlpEndpoint::try_from("http://user:secret@collector:4317".to_owned()).unwrap_err();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn the_section_parses_and_refuses_unknown_keys() {
        let settings: TracingSettings =
            serde_saphyr::from_str("otlp_endpoint: http://127.0.0.1:4317\n").expect("parses");
        assert!(!settings.otlp_endpoint.is_https());
        assert!(serde_saphyr::from_str::<TracingSettings>("otlp_endpiont: http://x:1\n").is_err());
        assert!(serde_saphyr::from_str::<TracingSettings>("{}\n").is_err());
    }
}
