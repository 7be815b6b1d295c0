//! The API server's protection on our side: every request of a kube client waits for a token of
//! one bucket (`runtime.api_qps` per second, `runtime.api_burst` at once, as client-go's `QPS`
//! and `Burst`), and an answer that says "later" (`429 Too Many Requests`, and the `503` and
//! `504` kube-rs used to retry) is sent again after the server's `Retry-After`, up to
//! [`MAX_RETRIES`] times and for at most [`MAX_RETRY_WAIT`] in all. A burst of Starts is thereby
//! spread out instead of overloading the API server, and an API server that sheds load (API
//! Priority and Fairness answers 429 with `Retry-After: 1`) slows the burst down instead of
//! failing it.
//!
//! Why it is shaped this way:
//! - kube-rs 5 has no client-side rate limit, but it does retry: `Config::default_retry` (on by
//!   default) puts `RetryPolicy::server_retry()` deep in the client's stack: 429, 503 and 504,
//!   up to 15 times, with a backoff from 5 ms doubling up to 1000 s, and `Retry-After` only
//!   when it is longer than that backoff. Nothing bounds the total, so one request could hang for
//!   many minutes; its retries are invisible to our metrics; and they would skip this layer's
//!   bucket. So every client the server builds turns it off ([`client_builder`]) and this layer
//!   does the retrying, where the bucket and the metrics see every attempt.
//! - Waiting is never failing: a request waits for its token however long that takes (the
//!   caller's own deadline bounds it), as client-go's `Wait` does.
//! - Waiters take turns through one FIFO lock, and only the first in line watches the bucket:
//!   a thousand waiters cost one timer, not a thousand that all wake for each token.
//! - Only requests whose body can be copied are sent again: all of the runtime's are (kube-rs
//!   sends bytes, and a watch or a log follow is a GET with an empty body, whose 429 comes before
//!   any of its stream); a streaming body, which kube-rs makes only for upgrades, is sent once.
//! - The bucket's time is `tokio::time` (a [`TokioClock`] for `governor`), so the tests pause it.
//! - With neither `api_qps` nor `api_burst` set the limit is automatic: the bucket applies only
//!   until an answer carries one of API Priority and Fairness's headers ([`APF_HEADERS`]), which
//!   say the API server sheds load itself (on by default since Kubernetes 1.20). From then on
//!   nothing waits, as controller-runtime, Flux and cert-manager do; the server's 429s are
//!   still waited out. Behind a proxy that strips them, or on an API server without APF, the
//!   conservative bucket stays.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{Request, Response, StatusCode};
use kube::client::{Body, ClientBuilder, DynBody};
use tower::util::BoxService;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::backoff::Backoff;
use crate::config::ApiRateSettings;
use crate::metrics::rest::{RestMetricsLayer, RestMetricsService};

/// The most times one request is sent again. client-go's `maxRetries` is 10, but an API server
/// that sheds a third of its requests (APF under load) then fails one request in 177,000 after
/// ten straight 429s, a Start among a few thousand; the caller's real bound is the time spent,
/// [`MAX_RETRY_WAIT`], which the usual `Retry-After: 1` reaches after 30 retries.
const MAX_RETRIES: u32 = 30;

/// The longest one request waits in all between its attempts; a `Retry-After` that would go
/// beyond it is passed on to the caller at once instead.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The wait before a retry when the answer has no usable `Retry-After`: 0.5, 1, 2, then 4 s.
fn default_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(4))
}

/// The response headers by which an API server with API Priority and Fairness names the flow
/// schema and priority level that admitted a request.
pub const APF_HEADERS: [&str; 2] = ["x-kubernetes-pf-flowschema-uid", "x-kubernetes-pf-prioritylevel-uid"];

/// Whether an answer comes from an API server that protects itself with APF.
fn reports_apf<B>(response: &Response<B>) -> bool {
    APF_HEADERS.iter().any(|name| response.headers().contains_key(*name))
}

/// How many requests may wait for the client's connection stack at once (the waits for a token
/// are not among them: they happen before).
const REQUEST_QUEUE: usize = 1024;

/// The service kube-rs builds for a config, as [`ClientBuilder::try_from`] gives it.
type KubeStack = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// Every client's stack below its bearer layer (if any): kube-rs's, measured per attempt, throttled.
pub(super) type Throttled = Throttle<
    tower::buffer::Buffer<Request<Body>, <RestMetricsService<KubeStack> as Service<Request<Body>>>::Future>,
>;

/// The builder of every kube client of the server: kube-rs's own retry off (this layer
/// replaces it), each attempt measured ([`RestMetricsLayer`]) and throttled ([`ThrottleLayer`]).
/// A bearer layer, when there is one, goes on top, so its retry after a 401 waits its turn too.
pub(super) fn client_builder(
    mut config: kube::Config,
    rate: ApiRateSettings,
) -> Result<ClientBuilder<Throttled>, kube::Error> {
    config.default_retry = false;
    Ok(ClientBuilder::try_from(config)?.with_layer(&RestMetricsLayer).with_layer(&ThrottleLayer::new(rate)))
}

// === The bucket ===

/// `tokio::time` as `governor`'s clock: the time since the bucket was made.
#[derive(Clone, Debug)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// The token bucket every request of one client waits for.
struct Bucket {
    tokens: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    /// Waiters in the order they came; the holder is the only one watching `tokens`.
    line: tokio::sync::Mutex<()>,
    /// The limit is automatic: it is lifted when an answer reports APF.
    automatic: bool,
    /// An answer reported APF (automatic limits only): nothing waits any more.
    lifted: AtomicBool,
    /// Wakes the waiter watching `tokens` when the limit is lifted.
    lift: tokio::sync::Notify,
}

impl Bucket {
    /// The bucket of these settings; none when `qps` is 0 (no limit).
    fn new(rate: ApiRateSettings) -> Option<Bucket> {
        if rate.qps <= 0.0 {
            return None;
        }
        // The settings keep `qps` within 0.1..=100000 and `burst` at least 1, so the period is
        // 10 µs to 10 s and the quota exists.
        let period = Duration::try_from_secs_f64(1.0 / rate.qps).ok()?;
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)?.allow_burst(burst);
        let clock = TokioClock { origin: tokio::time::Instant::now() };
        Some(Bucket {
            tokens: RateLimiter::direct_with_clock(quota, clock),
            line: tokio::sync::Mutex::new(()),
            automatic: rate.automatic,
            lifted: AtomicBool::new(false),
            lift: tokio::sync::Notify::new(),
        })
    }

    /// Whether the limit no longer applies.
    fn is_lifted(&self) -> bool {
        self.lifted.load(Ordering::Relaxed)
    }

    /// Lifts an automatic limit when `response` reports APF; the first time, says so.
    fn note_answer<B>(&self, response: &Response<B>) {
        if self.automatic
            && !self.is_lifted()
            && reports_apf(response)
            && !self.lifted.swap(true, Ordering::Relaxed)
        {
            self.lift.notify_waiters();
            tracing::info!(
                "the Kubernetes API server protects itself with API Priority and Fairness: no client-side rate limit \
                 (set runtime.api_qps to keep one)"
            );
        }
    }

    /// Waits for a token, in turn; returns how long that took, or `None` when the limit has
    /// been lifted (what waits in line when it is lifted goes at once).
    async fn take(&self) -> Option<Duration> {
        if self.is_lifted() {
            return None;
        }
        let begin = tokio::time::Instant::now();
        let _turn = self.line.lock().await;
        while let Err(not_until) = self.tokens.check() {
            let lifted = self.lift.notified();
            if self.is_lifted() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(not_until.wait_time_from(self.tokens.clock().now())) => {}
                () = lifted => break,
            }
        }
        Some(begin.elapsed())
    }
}

// === The layer ===

/// Throttles and retries the requests of a kube client (see the module's doc).
pub(super) struct ThrottleLayer {
    bucket: Option<Arc<Bucket>>,
}

impl ThrottleLayer {
    /// A layer with its own bucket: one per client, shared by the client's clones.
    pub(super) fn new(rate: ApiRateSettings) -> ThrottleLayer {
        ThrottleLayer { bucket: Bucket::new(rate).map(Arc::new) }
    }
}

impl<S, B> Layer<S> for ThrottleLayer
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Service = Throttle<tower::buffer::Buffer<Request<Body>, S::Future>>;

    fn layer(&self, inner: S) -> Self::Service {
        // A retry calls the stack again from the same future, which needs a handle that can be
        // cloned; the buffer gives one over the (uncloneable) kube stack.
        Throttle { inner: tower::buffer::Buffer::new(inner, REQUEST_QUEUE), bucket: self.bucket.clone() }
    }
}

/// The service [`ThrottleLayer`] makes.
pub(super) struct Throttle<S> {
    inner: S,
    bucket: Option<Arc<Bucket>>,
}

impl<S: Clone> Clone for Throttle<S> {
    fn clone(&self) -> Self {
        Throttle { inner: self.inner.clone(), bucket: self.bucket.clone() }
    }
}

impl<S, B> Service<Request<Body>> for Throttle<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<B>, S::Error>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Always ready: the call waits for its token first and only then for the inner service,
        // so that no waiter holds a slot of the buffer below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        let bucket = self.bucket.clone();
        let labels =
            crate::metrics::rest::classify(request.method(), request.uri().path(), request.uri().query());
        Box::pin(async move {
            let mut request = request;
            let mut backoff = default_backoff();
            let mut waited = Duration::ZERO;
            let mut retries = 0;
            loop {
                // The copy for a retry is made before the request is sent; a streaming body has
                // none, and its request is sent once.
                let copy = (retries < MAX_RETRIES).then(|| copy_request(&request)).flatten();
                if let Some(bucket) = &bucket
                    && let Some(took) = bucket.take().await
                {
                    crate::metrics::rest::observe_rate_limiter_wait(labels, took);
                    if took >= Duration::from_secs(1) {
                        tracing::debug!(
                            verb = labels.verb,
                            resource = labels.resource,
                            seconds = took.as_secs_f64(),
                            "waited for the Kubernetes client's rate limit (runtime.api_qps, runtime.api_burst)"
                        );
                    }
                }
                let response = inner.ready().await?.call(request).await?;
                if let Some(bucket) = &bucket {
                    bucket.note_answer(&response);
                }
                let Some(delay) = retry_delay(&response, &mut backoff) else { return Ok(response) };
                let Some(next) = copy else { return Ok(response) };
                if waited + delay > MAX_RETRY_WAIT {
                    tracing::debug!(
                        status = response.status().as_u16(),
                        verb = labels.verb,
                        resource = labels.resource,
                        "the API server still says to retry later; giving up after {retries} retries"
                    );
                    return Ok(response);
                }
                crate::metrics::rest::count_retry(labels, response.status(), delay);
                tracing::debug!(
                    status = response.status().as_u16(),
                    verb = labels.verb,
                    resource = labels.resource,
                    delay_seconds = delay.as_secs_f64(),
                    "the API server said to retry later; sending the request again"
                );
                drop(response);
                tokio::time::sleep(delay).await;
                waited += delay;
                retries += 1;
                request = next;
            }
        })
    }
}

/// How long to wait before sending the request again, when its answer says to.
fn retry_delay<B>(response: &Response<B>, backoff: &mut Backoff) -> Option<Duration> {
    if !matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    ) {
        return None;
    }
    // Seconds, as the API server writes it; an HTTP date or anything else gets the backoff.
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let backoff_delay = backoff.next_delay();
    Some(retry_after.map_or(backoff_delay, Duration::from_secs))
}

/// A copy of a request to send again, when its body can be copied.
fn copy_request(request: &Request<Body>) -> Option<Request<Body>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A stand-in for the kube stack: answers each request with the next status of `script`
    /// (200 once it runs out; a status with a `Retry-After` is written `429:2`), and records
    /// when each request came.
    fn cluster(
        script: &[&'static str],
        seen: Arc<Mutex<Vec<tokio::time::Instant>>>,
    ) -> impl Service<Request<Body>, Response = Response<String>, Error = BoxError, Future: Send> + Send + 'static
    {
        cluster_with_apf(script, seen, false)
    }

    /// [`cluster`], whose answers carry APF's flow-schema header when `apf` is set.
    fn cluster_with_apf(
        script: &[&'static str],
        seen: Arc<Mutex<Vec<tokio::time::Instant>>>,
        apf: bool,
    ) -> impl Service<Request<Body>, Response = Response<String>, Error = BoxError, Future: Send> + Send + 'static
    {
        let script = Arc::new(Mutex::new(script.iter().rev().copied().collect::<Vec<_>>()));
        tower::service_fn(move |_request: Request<Body>| {
            seen.lock().expect("lock").push(tokio::time::Instant::now());
            let next = script.lock().expect("lock").pop().unwrap_or("200");
            async move {
                let (status, retry_after) = match next.split_once(':') {
                    Some((status, retry_after)) => (status, Some(retry_after)),
                    None => (next, None),
                };
                let mut response = Response::builder().status(status.parse::<u16>().expect("a status"));
                if let Some(retry_after) = retry_after {
                    response = response.header(http::header::RETRY_AFTER, retry_after);
                }
                if apf {
                    response = response.header(APF_HEADERS[0], "6c3f4e9a-0000-4000-8000-000000000001");
                }
                Ok::<_, BoxError>(response.body(String::new()).expect("response"))
            }
        })
    }

    fn create() -> Request<Body> {
        Request::post("https://cluster/api/v1/namespaces/default/pods")
            .body(Body::from(b"{}".to_vec()))
            .expect("request")
    }

    fn unlimited() -> ApiRateSettings {
        ApiRateSettings { qps: 0.0, burst: 1, automatic: false }
    }

    /// The seconds from `begin` at which the requests came.
    fn seconds(begin: tokio::time::Instant, seen: &Mutex<Vec<tokio::time::Instant>>) -> Vec<f64> {
        let seen = seen.lock().expect("lock");
        seen.iter().map(|at| (at.duration_since(begin).as_secs_f64() * 1000.0).round() / 1000.0).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_burst_wait_at_the_configured_rate() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let service = ThrottleLayer::new(ApiRateSettings { qps: 2.0, burst: 3, automatic: false })
            .layer(cluster(&[], Arc::clone(&seen)));
        let begin = tokio::time::Instant::now();
        let calls =
            (0..7).map(|_| {
                let mut service = service.clone();
                async move {
                    service.ready().await.expect("ready").call(create()).await.expect("answered").status()
                }
            });
        let statuses = futures::future::join_all(calls).await;
        assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
        // Three at once (the burst), then one every half second (2 per second), none failed.
        assert_eq!(seconds(begin, &seen), [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0]);
    }

    /// Seven concurrent requests through a layer of `rate` over `cluster`: the seconds at which
    /// the cluster saw them.
    async fn seven_at_once(rate: ApiRateSettings, apf: bool) -> Vec<f64> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let service = ThrottleLayer::new(rate).layer(cluster_with_apf(&[], Arc::clone(&seen), apf));
        let begin = tokio::time::Instant::now();
        let calls =
            (0..7).map(|_| {
                let mut service = service.clone();
                async move {
                    service.ready().await.expect("ready").call(create()).await.expect("answered").status()
                }
            });
        let statuses = futures::future::join_all(calls).await;
        assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
        seconds(begin, &seen)
    }

    #[tokio::test(start_paused = true)]
    async fn an_automatic_limit_is_lifted_by_the_first_answer_that_reports_apf() {
        let automatic = ApiRateSettings { qps: 2.0, burst: 3, automatic: true };
        // The burst goes at once; its answers report APF, so the waiters go at once too (the
        // one watching the bucket is woken), not at 0.5, 1.0, ... seconds.
        assert_eq!(seven_at_once(automatic, true).await, [0.0; 7]);
        // Without APF's headers the conservative limit stays.
        assert_eq!(seven_at_once(automatic, false).await, [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0]);
        // An explicit limit is honoured whatever the API server says.
        let explicit = ApiRateSettings { automatic: false, ..automatic };
        assert_eq!(seven_at_once(explicit, true).await, [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_nothing_waits() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let service = ThrottleLayer::new(unlimited()).layer(cluster(&[], Arc::clone(&seen)));
        let begin = tokio::time::Instant::now();
        let calls = (0..50).map(|_| {
            let mut service = service.clone();
            async move { service.ready().await.expect("ready").call(create()).await.expect("answered") }
        });
        futures::future::join_all(calls).await;
        assert!(seconds(begin, &seen).iter().all(|at| *at == 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_sent_again_after_its_retry_after_and_succeeds() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service = ThrottleLayer::new(ApiRateSettings { qps: 50.0, burst: 100, automatic: false })
            .layer(cluster(&["429:2"], Arc::clone(&seen)));
        let begin = tokio::time::Instant::now();
        let response = service.ready().await.expect("ready").call(create()).await.expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(seconds(begin, &seen), [0.0, 2.0], "the retry came after Retry-After: 2");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_usable_retry_after_the_backoff_decides() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service =
            ThrottleLayer::new(unlimited()).layer(cluster(&["429", "503:soon", "504"], Arc::clone(&seen)));
        let begin = tokio::time::Instant::now();
        let response = service.ready().await.expect("ready").call(create()).await.expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(seconds(begin, &seen), [0.0, 0.5, 1.5, 3.5]);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_429s_are_passed_on_after_the_cap() {
        // Retry-After 10 s every time: three retries make 30 s; a fourth would pass the cap.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service = ThrottleLayer::new(unlimited()).layer(cluster(&["429:10"; 20], Arc::clone(&seen)));
        let begin = tokio::time::Instant::now();
        let response = service.ready().await.expect("ready").call(create()).await.expect("answered");
        assert_eq!(response.status(), 429, "the last answer is the caller's");
        assert_eq!(seconds(begin, &seen), [0.0, 10.0, 20.0, 30.0]);
        assert_eq!(begin.elapsed(), MAX_RETRY_WAIT, "no wait that could not end in a retry");

        // Short waits: the number of retries is the bound.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service = ThrottleLayer::new(unlimited()).layer(cluster(&["429:1"; 40], Arc::clone(&seen)));
        let response = service.ready().await.expect("ready").call(create()).await.expect("answered");
        assert_eq!(response.status(), 429);
        assert_eq!(seen.lock().expect("lock").len(), 1 + MAX_RETRIES as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn other_answers_are_never_sent_twice() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service =
            ThrottleLayer::new(unlimited()).layer(cluster(&["500", "409", "401"], Arc::clone(&seen)));
        for expected in [500, 409, 401, 200] {
            let response = service.ready().await.expect("ready").call(create()).await.expect("answered");
            assert_eq!(response.status(), expected);
        }
        assert_eq!(seen.lock().expect("lock").len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_for_their_token_too() {
        // One token a second, none left: the retry after Retry-After: 0 still waits its turn.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service = ThrottleLayer::new(ApiRateSettings { qps: 1.0, burst: 1, automatic: false })
            .layer(cluster(&["429:0"], Arc::clone(&seen)));
        let begin = tokio::time::Instant::now();
        let response = service.ready().await.expect("ready").call(create()).await.expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(seconds(begin, &seen), [0.0, 1.0]);
    }
}
