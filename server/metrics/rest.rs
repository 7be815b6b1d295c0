//! Kubernetes API requests, with client-go's metric names: `rest_client_requests_total` and
//! `rest_client_request_duration_seconds`, by verb and resource (and code, for the count), and
//! the client-side rate limit's `rest_client_rate_limiter_duration_seconds` and
//! `rest_client_request_retries_total`. One layer ([`RestMetricsLayer`]) sits in every kube
//! client's stack, below the throttle (`runtime::kube::connect::throttle`), so that, as in
//! client-go, each attempt is counted and timed on its own and the wait for the rate limit is
//! not part of a request's duration. They read the metrics through [`super::backend`], so a
//! client built before metrics are installed, or with metrics off, costs one atomic load per
//! request.
//!
//! The duration is until the response's headers: for a watch, how long the API server took to
//! start it, not how long it stayed open (as client-go measures it).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// The labels of a request's latency.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verb: &'static str,
    /// The resource (`pods`, `services`, `pods/log`, ...), or `other`.
    pub resource: &'static str,
}

/// The labels of a request's count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestCodeLabels {
    /// The Kubernetes verb.
    pub verb: &'static str,
    /// The resource, or `other`.
    pub resource: &'static str,
    /// The HTTP status code, or `<error>` when no response came (as client-go writes it).
    pub code: String,
}

/// A resource label alone.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// The resource (`pods`, `services`, `nodes`).
    pub resource: &'static str,
}

/// The Kubernetes API request metrics.
pub struct RestMetrics {
    /// Requests by verb, resource and code.
    pub requests: Family<RequestCodeLabels, Counter>,
    /// Seconds until the response's headers, by verb and resource.
    pub duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Seconds a request waited for the client-side rate limit, by verb and resource.
    pub rate_limiter_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Requests sent again because the API server said to retry later, by verb, resource and
    /// the code of the answer that said so.
    pub retries: Family<RequestCodeLabels, Counter>,
    /// Seconds requests waited before being sent again, as the API server said (`Retry-After`),
    /// by verb and resource.
    pub retry_wait: Family<RequestLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
}

fn duration_histogram() -> Histogram {
    // client-go's buckets.
    Histogram::new([0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0])
}

impl RestMetrics {
    /// The metrics, registered under client-go's names.
    pub fn register(registry: &mut Registry) -> RestMetrics {
        let metrics = RestMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            rate_limiter_duration: Family::new_with_constructor(duration_histogram),
            retries: Family::default(),
            retry_wait: Family::default(),
        };
        registry.register(
            "rest_client_requests",
            "Number of Kubernetes API requests, partitioned by verb, resource and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "rest_client_request_duration_seconds",
            "Kubernetes API request latency in seconds (until the response headers), by verb and resource",
            metrics.duration.clone(),
        );
        registry.register(
            "rest_client_rate_limiter_duration_seconds",
            "Seconds Kubernetes API requests waited for the client-side rate limit (runtime.api_qps, runtime.api_burst), by verb and resource",
            metrics.rate_limiter_duration.clone(),
        );
        registry.register(
            "rest_client_request_retries",
            "Kubernetes API requests sent again because the API server said to retry later (429, 503, 504), by verb, resource and that answer's code",
            metrics.retries.clone(),
        );
        registry.register(
            "hydroplane_kube_retry_wait_seconds",
            "Seconds Kubernetes API requests waited before being sent again because the API server said to retry later (its Retry-After), by verb and resource",
            metrics.retry_wait.clone(),
        );
        metrics
    }
}

/// Records how long a request waited for the client-side rate limit.
pub fn observe_rate_limiter_wait(labels: RequestLabels, waited: std::time::Duration) {
    if let Some(metrics) = super::backend() {
        metrics.rest.rate_limiter_duration.get_or_create(&labels).observe(waited.as_secs_f64());
    }
}

/// Counts a request sent again after an answer with this status, and the wait before it.
pub fn count_retry(labels: RequestLabels, status: http::StatusCode, wait: std::time::Duration) {
    if let Some(metrics) = super::backend() {
        metrics.rest.retry_wait.get_or_create(&labels).inc_by(wait.as_secs_f64());
        let RequestLabels { verb, resource } = labels;
        let code = status.as_u16().to_string();
        metrics.rest.retries.get_or_create(&RequestCodeLabels { verb, resource, code }).inc();
    }
}

/// The resources the runtime uses; any other path is `other`, so the label stays bounded.
const RESOURCES: &[&str] = &[
    "statefulsets",
    "jobs",
    "pods",
    "pods/log",
    "pods/status",
    "services",
    "nodes",
    "secrets",
    "events",
    "namespaces",
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
];

/// The verb and resource of a request to the Kubernetes API.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> RequestLabels {
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    // `/api/v1/...` or `/apis/GROUP/VERSION/...`.
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    // `namespaces/NS/RESOURCE...`, unless the namespace itself is the object.
    let rest = match rest {
        ["namespaces", _namespace, resource, more @ ..] => {
            let mut owned = vec![*resource];
            owned.extend_from_slice(more);
            owned
        }
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, subresource, ..] => (format!("{resource}/{subresource}"), true),
        _ => (String::new(), false),
    };
    let resource = RESOURCES.iter().find(|known| **known == resource).copied().unwrap_or("other");
    let watching =
        query.is_some_and(|query| query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
    let verb = match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    RequestLabels { verb, resource }
}

/// The layer that measures a kube client's requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestMetricsLayer;

impl<S> Layer<S> for RestMetricsLayer {
    type Service = RestMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RestMetricsService { inner }
    }
}

/// The service [`RestMetricsLayer`] makes.
#[derive(Clone)]
pub struct RestMetricsService<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for RestMetricsService<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: 'static,
    S::Error: 'static,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let Some(metrics) = super::backend() else {
            return Box::pin(self.inner.call(request));
        };
        let labels = classify(request.method(), request.uri().path(), request.uri().query());
        let begin = tokio::time::Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "<error>".to_owned(),
            };
            let RequestLabels { verb, resource } = labels;
            metrics.rest.requests.get_or_create(&RequestCodeLabels { verb, resource, code }).inc();
            metrics.rest.duration.get_or_create(&labels).observe(begin.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(method: http::Method, path: &str, query: Option<&str>, verb: &str, resource: &str) {
        let labels = classify(&method, path, query);
        assert_eq!((labels.verb, labels.resource), (verb, resource), "{method} {path}");
    }

    #[test]
    fn requests_are_classified_by_verb_and_bounded_resource() {
        check(http::Method::GET, "/api/v1/namespaces/default/pods", Some("labelSelector=a"), "list", "pods");
        check(http::Method::GET, "/api/v1/namespaces/default/pods", Some("watch=true&x=1"), "watch", "pods");
        check(http::Method::GET, "/api/v1/nodes", Some("watch=true"), "watch", "nodes");
        check(http::Method::GET, "/api/v1/namespaces/default/pods/web/log", None, "get", "pods/log");
        check(http::Method::POST, "/api/v1/namespaces/default/services", None, "create", "services");
        check(http::Method::DELETE, "/api/v1/namespaces/default/pods/web", None, "delete", "pods");
        check(http::Method::DELETE, "/api/v1/namespaces/default/pods", None, "deletecollection", "pods");
        check(
            http::Method::POST,
            "/apis/apps/v1/namespaces/default/statefulsets",
            None,
            "create",
            "statefulsets",
        );
        check(http::Method::DELETE, "/apis/batch/v1/namespaces/default/jobs/web", None, "delete", "jobs");
        check(http::Method::GET, "/api/v1/namespaces/default", None, "get", "namespaces");
        check(http::Method::GET, "/apis/apps/v1/namespaces/x/deployments", None, "list", "other");
        check(http::Method::GET, "/version", None, "list", "other");
    }
}
