//! `hydroplane.v1.ProcessService` as it is served: the generated router for every method but
//! List, which is answered with a [`ListReply`] encoded from the table's entries. The generated
//! route can only send an owned `proto::ListResponse`, a copy of every process on the page
//! (see `wire`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tower::Service;

use super::{ProcessServiceHandler, caller_of, list};
use crate::grpc::wire::ListReply;
use crate::proto;
use crate::proto::process_service_server::ProcessServiceServer;

/// The path of `ProcessService.List`.
const LIST_PATH: &str = "/hydroplane.v1.ProcessService/List";

/// The process service's routes: List here, the rest in the generated server.
#[derive(Clone)]
pub struct ProcessRoutes {
    generated: ProcessServiceServer<ProcessServiceHandler>,
    handler: Arc<ProcessServiceHandler>,
    max_request_bytes: usize,
}

impl ProcessRoutes {
    /// The routes of `handler`, refusing requests larger than `max_request_bytes` (a backstop:
    /// the guard refuses them first, with a clearer message).
    pub fn new(handler: ProcessServiceHandler, max_request_bytes: usize) -> ProcessRoutes {
        let handler = Arc::new(handler);
        let generated =
            ProcessServiceServer::from_arc(Arc::clone(&handler)).max_decoding_message_size(max_request_bytes);
        ProcessRoutes { generated, handler, max_request_bytes }
    }
}

impl NamedService for ProcessRoutes {
    const NAME: &'static str = <ProcessServiceServer<ProcessServiceHandler> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for ProcessRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both routes are always ready, as the generated server is.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != LIST_PATH {
            return self.generated.call(request);
        }
        let method = ListMethod(Arc::clone(&self.handler));
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<ListReply, proto::ListRequest>::default();
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(Some(max_request_bytes), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// List, answering with a [`ListReply`].
struct ListMethod(Arc<ProcessServiceHandler>);

impl UnaryService<proto::ListRequest> for ListMethod {
    type Response = ListReply;
    type Future = BoxFuture<'static, Result<Response<ListReply>, Status>>;

    fn call(&mut self, request: Request<proto::ListRequest>) -> Self::Future {
        let handler = Arc::clone(&self.0);
        Box::pin(async move {
            let (caller, _) = caller_of(&request)?;
            list::handle(&handler.processes, request.into_inner(), &caller).map(Response::new)
        })
    }
}
