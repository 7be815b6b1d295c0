//! The AWS calls that find an EKS cluster: STS GetCallerIdentity (are the credentials good?)
//! and EKS DescribeCluster (its endpoint and CA), with messages built from what AWS answered.

use crate::aws::credentials::AwsError;
use crate::config::EksSettings;
use crate::report::error_chain;

/// Why the cluster could not be found or described. Messages name clusters and regions.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No cluster of that name in that region.
    #[error("there is no EKS cluster `{cluster}` in region {region} (EKS says: {message})")]
    ClusterNotFound {
        /// The cluster's name.
        cluster: String,
        /// The region.
        region: String,
        /// EKS's message.
        message: String,
    },
    /// DescribeCluster failed otherwise.
    #[error("cannot describe the EKS cluster `{cluster}` in region {region}: {message}")]
    DescribeCluster {
        /// The cluster's name.
        cluster: String,
        /// The region.
        region: String,
        /// What failed.
        message: String,
    },
    /// The cluster has no endpoint or CA yet.
    #[error("the EKS cluster `{cluster}` has an unusable {what}: {message}")]
    BadCluster {
        /// The cluster's name.
        cluster: String,
        /// `endpoint` or `certificate authority`.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// Asks STS who the credentials belong to, and returns that principal's ARN (what the cluster's
/// access entries must name): unknown keys are refused here, by name; an STS that cannot be
/// reached is said to be so, since nothing is then known of the keys.
pub async fn check_identity(
    config: &aws_config::SdkConfig,
    sts_endpoint: Option<&str>,
    access_key_id: &str,
) -> Result<String, AwsError> {
    let mut sts = aws_sdk_sts::config::Builder::from(config);
    if let Some(endpoint) = sts_endpoint {
        sts = sts.endpoint_url(endpoint);
    }
    let client = aws_sdk_sts::Client::from_conf(sts.build());
    match client.get_caller_identity().send().await {
        Ok(identity) => {
            let arn = identity.arn().unwrap_or("?").to_owned();
            tracing::info!(%arn, "authenticated with AWS");
            Ok(arn)
        }
        Err(error) => {
            let message = sdk_error_message(&error);
            if is_unreachable(&error) {
                let endpoint = match sts_endpoint {
                    Some(endpoint) => endpoint.to_owned(),
                    None => format!(
                        "https://sts.{}.amazonaws.com",
                        config.region().map(|region| region.as_ref()).unwrap_or("?")
                    ),
                };
                return Err(AwsError::StsUnreachable { endpoint, message });
            }
            Err(AwsError::InvalidKeys { access_key_id: access_key_id.to_owned(), message })
        }
    }
}

/// Whether a call got no answer at all: the connection failed or timed out.
pub fn is_unreachable<E, R>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    matches!(error, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_))
}

/// What went wrong in an AWS call, for people: the service's error code and message, read
/// from the raw answer when the SDK could not parse it (endpoints that answer in another
/// dialect, such as private STS endpoints behind proxies), and the HTTP status.
pub fn sdk_error_message<E>(
    error: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
{
    let parsed = error.as_service_error().map(|service| (service.code(), service.message()));
    if let Some((Some(code), message)) = parsed {
        return match message {
            Some(message) => format!("{code}: {message}"),
            None => code.to_owned(),
        };
    }
    let Some(raw) = error.raw_response() else { return error_chain(error) };
    let status = raw.status().as_u16();
    let body = raw.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
    let element = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].trim().to_owned())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
        (Some(code), None) => format!("{code} (HTTP {status})"),
        _ => format!("HTTP {status}: {}", error_chain(error)),
    }
}

/// The cluster's endpoint and CA (base64 of the PEM), from EKS DescribeCluster.
pub async fn describe_cluster(
    config: &aws_config::SdkConfig,
    settings: &EksSettings,
) -> Result<(String, String), ClusterError> {
    let mut eks = aws_sdk_eks::config::Builder::from(config);
    if let Some(endpoint) = &settings.eks_endpoint {
        eks = eks.endpoint_url(endpoint.clone());
    }
    let client = aws_sdk_eks::Client::from_conf(eks.build());
    let cluster = settings.cluster_name.clone();
    let region = settings.region.clone();
    let described = client.describe_cluster().name(&cluster).send().await.map_err(|error| {
        let message = sdk_error_message(&error);
        match error.as_service_error() {
            Some(service) if service.is_resource_not_found_exception() => {
                ClusterError::ClusterNotFound { cluster: cluster.clone(), region: region.clone(), message }
            }
            _ => ClusterError::DescribeCluster { cluster: cluster.clone(), region: region.clone(), message },
        }
    })?;
    let details = described.cluster().ok_or_else(|| ClusterError::DescribeCluster {
        cluster: cluster.clone(),
        region: region.clone(),
        message: "the answer has no cluster".to_owned(),
    })?;
    let endpoint = details.endpoint().filter(|endpoint| !endpoint.is_empty()).ok_or_else(|| {
        ClusterError::BadCluster {
            cluster: cluster.clone(),
            what: "endpoint",
            message: "it has none yet (is the cluster still being created?)".to_owned(),
        }
    })?;
    let certificate_authority =
        details.certificate_authority().and_then(|ca| ca.data()).ok_or_else(|| ClusterError::BadCluster {
            cluster: cluster.clone(),
            what: "certificate authority",
            message: "it has none".to_owned(),
        })?;
    Ok((endpoint.to_owned(), certificate_authority.to_owned()))
}

#[cfg(test)]
mod tests {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;

    use super::*;

    #[tokio::test]
    async fn an_sts_endpoint_that_refuses_the_connection_is_named_not_the_keys() {
        // A loopback port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("port")
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let keys = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let config =
            crate::aws::credentials::sdk_config("us-west-2", Some(SharedCredentialsProvider::new(keys)))
                .await;
        let error =
            check_identity(&config, Some(&endpoint), "AKIDEXAMPLE").await.expect_err("nothing listens");
        let message = error.to_string();
        assert!(matches!(error, AwsError::StsUnreachable { .. }), "{message}");
        assert!(message.starts_with(&format!("cannot reach the AWS STS endpoint {endpoint}: ")), "{message}");
        assert!(!message.contains("refused the access key"), "{message}");
    }
}
