//! The metrics listener: plain HTTP/1.1 (hyper), `GET /metrics` answered with the text
//! exposition, anything else 404. It is a listener of its own, apart from gRPC, so that a
//! scraper needs no token and no gRPC, and metrics can be exposed on another interface than the
//! API. Metrics carry no secret (no token, no process name, no secret value), so any address
//! may be given; loopback is the default in the examples.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{CONTENT_TYPE, Metrics};
use crate::transport::connections::{ConnectionLimits, next_admitted};

/// Why the metrics listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {address} (metrics.listen)")]
pub struct BindError {
    /// The address asked for.
    pub address: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Binds the metrics listener; port 0 picks a free one (see [`TcpListener::local_addr`]).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address).await.map_err(|source| BindError { address, source })
}

/// The answer to one request.
fn respond(metrics: &Metrics, request: &http::Request<Incoming>) -> http::Response<String> {
    let response = |status: http::StatusCode, content_type: &'static str, body: String| {
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        response
    };
    if request.uri().path() != "/metrics" {
        return response(
            http::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".to_owned(),
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return response(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        );
    }
    match metrics.encode() {
        Ok(text) => response(http::StatusCode::OK, CONTENT_TYPE, text),
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "cannot encode the metrics\n".to_owned(),
            )
        }
    }
}

/// Serves `GET /metrics` on the listener until `shutdown` resolves, under the server's
/// connection limits (a cap in total and per peer, and the idle timeout: a scraper that
/// connects and says nothing, or keeps a connection open between scrapes, is closed).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    limits: Arc<ConnectionLimits>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, slot) = tokio::select! {
            admitted = next_admitted(&listener, &limits) => admitted,
            () = &mut shutdown => return,
        };
        let stream = limits.gate(stream, slot);
        let connection = stream.info().clone();
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                // The answer is made whole, at once: the connection is busy while it is made.
                let _in_progress = connection.begin_call();
                let answer = respond(&metrics, &request);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "a metrics connection failed");
            }
        });
    }
}

/// Binds the listener the settings name, prints its address on stdout (tests and scripts read
/// it, as they read the gRPC address) and serves it in a task until the server ends.
pub async fn start(
    settings: &crate::config::MetricsSettings,
    metrics: &Arc<Metrics>,
    limits: Arc<ConnectionLimits>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), BindError> {
    let listener = bind(settings.listen).await?;
    let address = listener.local_addr().map_err(|source| BindError { address: settings.listen, source })?;
    let task = tokio::spawn(serve(listener, Arc::clone(metrics), limits, std::future::pending()));
    Ok((address, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(address: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn metrics_are_served_at_their_path_and_nothing_else() {
        let metrics = Arc::new(Metrics::new());
        metrics.domain.watch_resets.inc();
        let settings = crate::config::MetricsSettings { listen: "127.0.0.1:0".parse().expect("address") };
        let limits = ConnectionLimits::new(&crate::config::LimitSettings::default(), None);
        let (address, task) = start(&settings, &metrics, limits).await.expect("bind");
        let scraped = get(address, "/metrics").await;
        assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
        assert!(scraped.contains("application/openmetrics-text"), "{scraped}");
        assert!(scraped.contains("hydroplane_watch_resets_total 1"), "{scraped}");
        assert!(scraped.contains("process_resident_memory_bytes"), "{scraped}");
        assert!(scraped.trim_end().ends_with("# EOF"), "{scraped}");
        assert!(get(address, "/").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
