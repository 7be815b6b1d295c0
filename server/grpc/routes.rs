//! `hydroplane.v1.ProcessService` as it is served: the generated router for every method but
//! List and Watch, which answer with a [`ListReply`] and [`WatchReply`]s encoded from the
//! table's entries. The generated routes can only send owned messages: a copy of every process
//! on a List's page, and of every changed process for each of its watchers (see `wire`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstDecoder;
use tower::Service;

use super::{ProcessServiceHandler, caller_of, list};
use crate::grpc::watch::WatchReplies;
use crate::grpc::wire::{ListReply, WatchReply};
use crate::proto;
use crate::proto::process_service_server::ProcessServiceServer;

/// The path of `ProcessService.List`.
const LIST_PATH: &str = "/hydroplane.v1.ProcessService/List";
/// The path of `ProcessService.Watch`.
const WATCH_PATH: &str = "/hydroplane.v1.ProcessService/Watch";

/// The process service's routes: List and Watch here, the rest in the generated server.
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
        let handler = Arc::clone(&self.handler);
        let max_request_bytes = Some(self.max_request_bytes);
        match request.uri().path() {
            LIST_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ListCodec).apply_max_message_size_config(max_request_bytes, None);
                Ok(grpc.unary(ListMethod(handler), request).await)
            }),
            WATCH_PATH => Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<WatchReply, proto::WatchRequest>::default();
                let mut grpc = Grpc::new(codec).apply_max_message_size_config(max_request_bytes, None);
                Ok(grpc.server_streaming(WatchMethod(handler), request).await)
            }),
            _ => self.generated.call(request),
        }
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
            list::handle(&handler.processes, &handler.group_answers, request.into_inner(), &caller)
                .map(Response::new)
        })
    }
}

/// Watch, answering with [`WatchReply`]s.
struct WatchMethod(Arc<ProcessServiceHandler>);

impl ServerStreamingService<proto::WatchRequest> for WatchMethod {
    type Response = WatchReply;
    type ResponseStream = WatchReplies;
    type Future = BoxFuture<'static, Result<Response<WatchReplies>, Status>>;

    fn call(&mut self, request: Request<proto::WatchRequest>) -> Self::Future {
        let handler = Arc::clone(&self.0);
        Box::pin(async move { handler.watch_replies(request).map(Response::new) })
    }
}

/// List's codec: prost's, except that an answer's buffer is allocated once, at the answer's
/// size. tonic's starts at 8 KiB and doubles, copying, until it holds the page: four copies for
/// a page of a thousand processes, and large reallocations that cost more in a larger heap.
struct ListCodec;

impl Codec for ListCodec {
    type Encode = ListReply;
    type Decode = proto::ListRequest;
    type Encoder = ListEncoder;
    type Decoder = ProstDecoder<proto::ListRequest>;

    fn encoder(&mut self) -> ListEncoder {
        ListEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<proto::ListRequest> {
        // A request is a group, a selector and a token: tens of bytes, where tonic's default
        // buffer is 8 KiB, a large allocation on every call (the buffer grows for a longer one).
        ProstDecoder::new(BufferSettings::new(REQUEST_BUFFER, YIELD_THRESHOLD))
    }
}

/// The buffer a List request is read into, at first.
pub(super) const REQUEST_BUFFER: usize = 256;

/// Writes a [`ListReply`] into a buffer first grown to its size.
struct ListEncoder;

/// tonic's default yield threshold (unused by a unary answer, which is one message).
const YIELD_THRESHOLD: usize = 32 * 1024;

impl Encoder for ListEncoder {
    type Item = ListReply;
    type Error = Status;

    fn encode(&mut self, reply: ListReply, buffer: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buffer.reserve(reply.encoded_len());
        reply
            .encode(buffer)
            .map_err(|error| Status::internal(format!("cannot encode the List answer: {error}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        // Nothing up front: `encode` reserves what the answer needs.
        BufferSettings::new(0, YIELD_THRESHOLD)
    }
}
