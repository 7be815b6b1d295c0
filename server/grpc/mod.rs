//! The gRPC face of the server: `hydroplane.v1.ProcessService`, with gRPC health and server
//! reflection beside it. Handlers are thin: parse the request, call [`Processes`], let
//! [`error`] turn domain errors into status codes.

pub mod audit;
pub mod closing;
pub mod convert;
pub mod describe;
pub mod error;
pub mod group_answers;
pub mod guard;
pub mod list;
pub mod listen;
pub mod logs;
pub mod routes;
pub mod start;
pub mod stop;
pub mod watch;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::app::Processes;
use crate::config::LimitSettings;
use crate::grpc::guard::Guard;
use crate::grpc::listen::Listener;
use crate::proto;
use crate::proto::process_service_server::{ProcessService, ProcessServiceServer};
use crate::security::access::Caller;
use crate::transport::connections::Peer;

/// The `ProcessService` implementation.
pub struct ProcessServiceHandler {
    processes: Processes,
    /// Answers to Lists of whole groups, kept until the group changes.
    group_answers: group_answers::GroupAnswers,
    /// Closed when the server shuts down, which ends every Watch and followed Logs stream: a
    /// graceful shutdown waits for open streams, and those never end on their own.
    closing: closing::Closing,
}

impl ProcessServiceHandler {
    /// A handler over the process service; its Watch and followed Logs streams end when
    /// `closing` closes.
    pub fn new(processes: Processes, closing: closing::Closing) -> ProcessServiceHandler {
        ProcessServiceHandler { processes, group_answers: group_answers::GroupAnswers::default(), closing }
    }

    /// A Watch's events, ending when the server shuts down (a graceful shutdown waits for
    /// open streams, and a watch never ends on its own).
    fn watch_replies(&self, request: Request<proto::WatchRequest>) -> Result<watch::WatchReplies, Status> {
        let (caller, _) = caller_of(&request)?;
        let stream = watch::handle(&self.processes, request.into_inner(), &caller)?;
        Ok(futures::StreamExt::boxed(self.closing.until_closed(stream)))
    }
}

/// The caller the guard layer attached to a request. Its absence is the server's mistake (a
/// service mounted without the guard), so it fails closed.
fn caller_of<T>(request: &Request<T>) -> Result<(Caller, Peer), Status> {
    let caller = request.extensions().get::<Caller>().cloned();
    let peer = request.extensions().get::<Peer>().cloned().unwrap_or_default();
    match caller {
        Some(caller) => Ok((caller, peer)),
        None => {
            tracing::error!("a call reached a handler without passing the guard layer; refused");
            Err(Status::internal("internal error; the server's log has the details"))
        }
    }
}

#[tonic::async_trait]
impl ProcessService for ProcessServiceHandler {
    async fn start(
        &self,
        request: Request<proto::StartRequest>,
    ) -> Result<Response<proto::StartResponse>, Status> {
        let (caller, peer) = caller_of(&request)?;
        start::handle(&self.processes, request.into_inner(), &caller, &peer).await.map(Response::new)
    }

    async fn stop(
        &self,
        request: Request<proto::StopRequest>,
    ) -> Result<Response<proto::StopResponse>, Status> {
        let (caller, peer) = caller_of(&request)?;
        stop::handle(&self.processes, request.into_inner(), &caller, &peer).await.map(Response::new)
    }

    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        // The server answers List through `routes`, without this copy; this serves in-process
        // callers of the trait.
        let (caller, _) = caller_of(&request)?;
        list::handle(&self.processes, &self.group_answers, request.into_inner(), &caller)
            .map(|reply| Response::new(reply.into_proto()))
    }

    async fn describe(
        &self,
        request: Request<proto::DescribeRequest>,
    ) -> Result<Response<proto::ProcessDetail>, Status> {
        let (caller, peer) = caller_of(&request)?;
        describe::handle(&self.processes, request.into_inner(), &caller, &peer).await.map(Response::new)
    }

    type LogsStream = logs::LogsStream;

    async fn logs(&self, request: Request<proto::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let (caller, peer) = caller_of(&request)?;
        let stream = logs::handle(&self.processes, request.into_inner(), &caller, &peer).await?;
        // A follower ends with the server, as a Watch does.
        Ok(Response::new(futures::StreamExt::boxed(self.closing.until_closed(stream))))
    }

    type WatchStream = watch::WatchStream;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // The server answers Watch through `routes`, without this copy per watcher; this serves
        // in-process callers of the trait.
        let replies = self.watch_replies(request)?;
        Ok(Response::new(futures::StreamExt::boxed(futures::StreamExt::map(replies, |reply| {
            reply.map(wire::WatchReply::into_proto)
        }))))
    }
}

/// Why the gRPC server could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Server reflection could not be built from the descriptor sets.
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the process service, health and reflection on every listener, each call through the
/// guard, until `shutdown` resolves; then stops accepting, lets calls in flight finish, and
/// returns.
pub async fn serve(
    listeners: Vec<Listener>,
    processes: Processes,
    guard: Arc<Guard>,
    limits: &LimitSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ProcessServiceServer<ProcessServiceHandler>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let closing = closing::Closing::default();
    let metrics = processes.metrics().cloned();
    let process_service = routes::ProcessRoutes::new(
        ProcessServiceHandler::new(processes, closing.clone()),
        limits.max_request_bytes,
    );
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(process_service);
    let routes = routes.routes();
    // Enough streams on one connection for a caller's every Watch plus its share of calls, so
    // the guard, not the transport, says when a limit is reached.
    let streams_per_connection =
        u32::try_from(limits.max_watches_per_token.saturating_add(limits.max_concurrent_calls))
            .unwrap_or(u32::MAX);
    let mut socket_files = Vec::new();
    let mut servers: Vec<futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>>> =
        Vec::new();
    let limits_of_connections = guard.connections();
    for listener in listeners {
        let stopped = closing.closed();
        let mut server = tonic::transport::Server::builder()
            .max_concurrent_streams(streams_per_connection)
            // Pings find peers that vanished under an open stream; idle connections are closed
            // by `connections`, which knows whether a call is in progress.
            .http2_keepalive_interval(Some(crate::transport::connections::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(crate::transport::connections::KEEPALIVE_TIMEOUT))
            .layer(
                tower::ServiceBuilder::new()
                    // Outermost, so that calls the guard refuses are counted with their codes.
                    .layer(crate::metrics::grpc::layer(metrics.clone()))
                    .layer(crate::telemetry::call::CallSpanLayer)
                    .layer(guard.layer()),
            );
        let router = server.add_routes(routes.clone());
        let limits = Arc::clone(&limits_of_connections);
        servers.push(match listener {
            Listener::Tcp(listener) => Box::pin(router.serve_with_incoming_shutdown(
                crate::transport::connections::incoming(listener, limits),
                stopped,
            )),
            Listener::Tls(listener, tls) => Box::pin(router.serve_with_incoming_shutdown(
                crate::transport::tls::incoming(listener, tls, limits),
                stopped,
            )),
            Listener::InMemory(accepted) => {
                // Every in-memory connection is from the same, unknown, peer.
                let admitted = futures::StreamExt::filter_map(accepted, move |accepted| {
                    let limits = Arc::clone(&limits);
                    async move {
                        match accepted {
                            Ok(stream) => limits
                                .admit(Peer::Unknown)
                                .ok()
                                .map(|slot| Ok::<_, std::io::Error>(limits.gate(stream, slot))),
                            Err(error) => Some(Err(error)),
                        }
                    }
                });
                Box::pin(router.serve_with_incoming_shutdown(admitted, stopped))
            }
            Listener::Unix(listener, socket_file) => {
                socket_files.push(socket_file);
                Box::pin(router.serve_with_incoming_shutdown(
                    crate::transport::connections::incoming(listener, limits),
                    stopped,
                ))
            }
        });
    }
    let all = futures::future::try_join_all(servers);
    tokio::pin!(all);
    tokio::select! {
        result = &mut all => {
            result?;
            return Ok(());
        }
        () = shutdown => {
            closing.close();
        }
    }
    all.await?;
    drop(socket_files);
    Ok(())
}

#[cfg(test)]
mod tests;
