//! The bearer token on every request of a kube client, from a source that can make a new one:
//! EKS tokens signed afresh ([`super::eks`]), or a service account's token file re-read when
//! the kubelet rotates it ([`super::in_cluster`]). When the API server answers 401 the source
//! is asked for a new token at once and the request is sent once more: a token that expired
//! between two renewals costs one round trip, not a failed call.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use kube::client::Body;
use tower::{Layer, Service, ServiceExt};

/// Where the `Authorization` header comes from.
pub(super) trait BearerSource: Send + Sync + 'static {
    /// The header value to send now; `renew` after a 401, when the last one was refused.
    fn header(&self, renew: bool) -> Result<HeaderValue, tower::BoxError>;

    /// What the token is, for the log line of a refusal (`EKS token`).
    fn name(&self) -> &'static str;
}

/// Adds the bearer token of `T` to every request of the kube client.
pub(super) struct BearerLayer<T> {
    tokens: Arc<T>,
}

impl<T> BearerLayer<T> {
    /// A layer over this source.
    pub(super) fn new(tokens: Arc<T>) -> BearerLayer<T> {
        BearerLayer { tokens }
    }
}

/// How many requests may wait for the client's connection stack at once.
const REQUEST_QUEUE: usize = 1024;

impl<S, B, T> Layer<S> for BearerLayer<T>
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError> + Send + Sync,
    B: Send + 'static,
    T: BearerSource,
{
    type Service = Bearer<tower::buffer::Buffer<Request<Body>, S::Future>, T>;

    fn layer(&self, inner: S) -> Self::Service {
        // The retry after a 401 calls the stack a second time from the same future, which needs
        // a handle that can be cloned; the buffer gives one over the (uncloneable) kube stack.
        Bearer { inner: tower::buffer::Buffer::new(inner, REQUEST_QUEUE), tokens: Arc::clone(&self.tokens) }
    }
}

/// The service [`BearerLayer`] makes.
pub(super) struct Bearer<S, T> {
    inner: S,
    tokens: Arc<T>,
}

impl<S: Clone, T> Clone for Bearer<S, T> {
    fn clone(&self) -> Self {
        Bearer { inner: self.inner.clone(), tokens: Arc::clone(&self.tokens) }
    }
}

impl<S, B, T> Service<Request<Body>> for Bearer<S, T>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: From<tower::BoxError> + Send,
    B: Send + 'static,
    T: BearerSource,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<B>, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The service that was polled ready serves this call; a clone stands in for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = Arc::clone(&self.tokens);
        // A second copy for the one retry after a 401; watch bodies cannot be copied, but
        // requests with such bodies are GETs with empty ones, which can.
        let retry = request.body().try_clone().map(|body| {
            let mut copy = Request::new(body);
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.version_mut() = request.version();
            *copy.headers_mut() = request.headers().clone();
            copy
        });
        Box::pin(async move {
            let header = tokens.header(false).map_err(S::Error::from)?;
            request.headers_mut().insert(http::header::AUTHORIZATION, header);
            let response = inner.call(request).await?;
            if response.status() != http::StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let Some(mut retry) = retry else { return Ok(response) };
            tracing::info!(
                token = tokens.name(),
                "the cluster refused the bearer token; sending the request once more with a new one"
            );
            let header = tokens.header(true).map_err(S::Error::from)?;
            retry.headers_mut().insert(http::header::AUTHORIZATION, header);
            inner.ready().await?.call(retry).await
        })
    }
}
