//! The gRPC face of the server: `hydroplane.v1.ProcessService`, with gRPC health and server
//! reflection beside it. Handlers are thin: parse the request, call [`Processes`], let
//! [`error`] turn domain errors into status codes.

pub mod convert;
pub mod error;
pub mod list;
pub mod start;
pub mod stop;
pub mod watch;

use std::future::Future;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::app::Processes;
use crate::proto;
use crate::proto::process_service_server::{ProcessService, ProcessServiceServer};

/// The `ProcessService` implementation.
pub struct ProcessServiceHandler {
    processes: Processes,
    /// Turns true when the server shuts down, which ends every Watch stream: a graceful
    /// shutdown waits for open streams, and a watch never ends on its own.
    shutting_down: tokio::sync::watch::Receiver<bool>,
}

impl ProcessServiceHandler {
    /// A handler over the process service; its Watch streams end when `shutting_down` turns
    /// true.
    pub fn new(
        processes: Processes,
        shutting_down: tokio::sync::watch::Receiver<bool>,
    ) -> ProcessServiceHandler {
        ProcessServiceHandler { processes, shutting_down }
    }
}

#[tonic::async_trait]
impl ProcessService for ProcessServiceHandler {
    async fn start(
        &self,
        request: Request<proto::StartRequest>,
    ) -> Result<Response<proto::StartResponse>, Status> {
        start::handle(&self.processes, request.into_inner()).await.map(Response::new)
    }

    async fn stop(
        &self,
        request: Request<proto::StopRequest>,
    ) -> Result<Response<proto::StopResponse>, Status> {
        stop::handle(&self.processes, request.into_inner()).await.map(Response::new)
    }

    async fn list(
        &self,
        request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        list::handle(&self.processes, request.into_inner()).map(Response::new)
    }

    type WatchStream = watch::WatchStream;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut shutting_down = self.shutting_down.clone();
        let stream = watch::handle(&self.processes, request.into_inner())?;
        let shutdown = async move {
            let _ = shutting_down.wait_for(|shutting_down| *shutting_down).await;
        };
        Ok(Response::new(futures::StreamExt::boxed(futures::StreamExt::take_until(stream, shutdown))))
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

/// The accepted connections of a listener, with Nagle's algorithm off: small gRPC frames
/// otherwise wait for delayed ACKs (40 ms on Linux) when a response spans several packets.
fn incoming(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |connection| {
        let connection = connection?;
        connection.set_nodelay(true)?;
        Ok(connection)
    })
}

/// Serves the process service, health and reflection on `listener` until `shutdown` resolves;
/// then stops accepting, lets calls in flight finish, and returns.
pub async fn serve(
    listener: TcpListener,
    processes: Processes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<ProcessServiceServer<ProcessServiceHandler>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let reflection_v1 = reflection.build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let (shutting_down_sender, shutting_down) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        shutting_down_sender.send_replace(true);
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ProcessServiceServer::new(ProcessServiceHandler::new(processes, shutting_down)))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}
