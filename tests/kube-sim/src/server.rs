//! The network side: binds the listener, serves HTTP/1.1 (optionally inside TLS) with hyper,
//! and implements the "refuse connections" fault by closing the listener and every open
//! connection, then listening again on the same address.
//!
//! Start at [`serve`]: it takes a bound listener and a shutdown future, so tests and `main`
//! control its lifetime.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, AppState};

/// Binds `address` with SO_REUSEADDR, so the same port can be bound again after a refusal.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Serves until `shutdown` completes. Requests to refuse connections arrive on `refusals`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    mut refusals: mpsc::UnboundedReceiver<Duration>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let address = listener.local_addr()?;
    let mut listener = listener;
    let (close_connections, _) = watch::channel(0u64);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let state = state.clone();
                let tls = tls.clone();
                let closed = close_connections.subscribe();
                tokio::spawn(async move { serve_connection(stream, state, tls, closed).await });
            }
            Some(duration) = refusals.recv() => {
                tracing::info!(?duration, "refusing connections");
                drop(listener);
                close_connections.send_modify(|generation| *generation += 1);
                state.faults.drop_watches_now();
                tokio::select! {
                    _ = tokio::time::sleep(duration) => {}
                    _ = &mut shutdown => return Ok(()),
                }
                listener = rebind(address).await?;
                tracing::info!(%address, "accepting connections again");
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}

async fn rebind(address: SocketAddr) -> io::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match bind(address) {
            Ok(listener) => return Ok(listener),
            Err(error) if attempts < 50 => {
                attempts += 1;
                tracing::warn!(%error, "rebinding failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
    closed: watch::Receiver<u64>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => drive(tls_stream, state, closed).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
        None => drive(stream, state, closed).await,
    }
}

async fn drive<I>(io: I, state: Arc<AppState>, mut closed: watch::Receiver<u64>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(api::handle(state, request).await) }
    });
    let connection = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = &mut connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        // Dropping the connection closes the socket: that is the fault being simulated.
        _ = closed.changed() => {}
    }
}
