//! A Rust client of Hydroplane's gRPC API (`proto/hydroplane/v1/process.proto`).
//!
//! - [`proto`]: the messages, the generated client and the generated server trait, compiled
//!   from the contract with protox (no system `protoc`).
//! - [`Client`]: connects ([`ConnectOptions`]: `http://`, `https://` with a CA and a client
//!   certificate, `unix:PATH`; a bearer [`Token`]) and starts, stops, lists, describes,
//!   watches and reads logs; its
//!   [`Watch`] resumes from the last revision when the stream breaks.
//!
//! It depends on tonic, prost and rustls (on ring) only: no Kubernetes or AWS crates and not the
//! server, so that a service can depend on it cheaply. `hpctl` is built on it.
//!
//! # Example
//!
//! Hidden lines start a toy in-memory server on a free loopback port, so that the example runs on
//! its own; against a real server, `server` would be its URL, as in `HYDROPLANE_SERVER`.
//!
//! ```
//! # use std::collections::BTreeMap;
//! # use std::sync::Mutex;
//! # use hydroplane_client::proto::process_service_server::{ProcessService, ProcessServiceServer};
//! # use hydroplane_client::proto::*;
//! # use tonic::{Request, Response, Status};
//! #
//! # /// Processes by name; every call needs the token `hp_example`.
//! # #[derive(Default)]
//! # struct Toy(Mutex<BTreeMap<String, ProcessInfo>>);
//! #
//! # fn check<T>(request: &Request<T>) -> Result<(), Status> {
//! #     match request.metadata().get("authorization") {
//! #         Some(value) if value == "Bearer hp_example" => Ok(()),
//! #         _ => Err(Status::unauthenticated("no valid bearer token")),
//! #     }
//! # }
//! #
//! # #[tonic::async_trait]
//! # impl ProcessService for Toy {
//! #     async fn start(&self, request: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
//! #         check(&request)?;
//! #         let spec = request.into_inner().spec.unwrap_or_default();
//! #         let process = ProcessInfo {
//! #             process_name: spec.process_name.clone(),
//! #             group: spec.group,
//! #             status: ProcessStatus::Running.into(),
//! #             ..ProcessInfo::default()
//! #         };
//! #         self.0.lock().unwrap().insert(spec.process_name, process.clone());
//! #         Ok(Response::new(StartResponse { process: Some(process), created: true }))
//! #     }
//! #
//! #     async fn stop(&self, request: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
//! #         check(&request)?;
//! #         let Some(stop_request::Target::ProcessName(name)) = request.into_inner().target else {
//! #             return Err(Status::unimplemented("only stop by name"));
//! #         };
//! #         match self.0.lock().unwrap().remove(&name) {
//! #             Some(_) => Ok(Response::new(StopResponse { stopped: vec![name] })),
//! #             None => Err(Status::not_found(format!("process `{name}` does not exist"))),
//! #         }
//! #     }
//! #
//! #     async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
//! #         check(&request)?;
//! #         let processes = self.0.lock().unwrap().values().cloned().collect();
//! #         Ok(Response::new(ListResponse { processes, ..ListResponse::default() }))
//! #     }
//! #
//! #     async fn describe(&self, request: Request<DescribeRequest>) -> Result<Response<ProcessDetail>, Status> {
//! #         check(&request)?;
//! #         let name = request.into_inner().process_name;
//! #         let process = self.0.lock().unwrap().get(&name).cloned();
//! #         let process = process.ok_or_else(|| Status::not_found(format!("process `{name}` does not exist")))?;
//! #         Ok(Response::new(ProcessDetail { process: Some(process), ..ProcessDetail::default() }))
//! #     }
//! #
//! #     type LogsStream = tokio_stream::Iter<std::vec::IntoIter<Result<LogChunk, Status>>>;
//! #
//! #     async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
//! #         check(&request)?;
//! #         let name = request.into_inner().process_name;
//! #         if !self.0.lock().unwrap().contains_key(&name) {
//! #             return Err(Status::not_found(format!("process `{name}` does not exist")));
//! #         }
//! #         let line = |text: &'static str| Ok(LogChunk { data: text.into(), stream: LogStream::Stdout.into(), timestamp: None });
//! #         Ok(Response::new(tokio_stream::iter(vec![line("Serving HTTP on 0.0.0.0 port 8000\n")])))
//! #     }
//! #
//! #     type WatchStream = tokio_stream::Iter<std::vec::IntoIter<Result<WatchEvent, Status>>>;
//! #
//! #     async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
//! #         check(&request)?;
//! #         let event = |r#type: WatchEventType, process| Ok(WatchEvent { r#type: r#type.into(), process, revision: 1 });
//! #         let mut events: Vec<_> =
//! #             self.0.lock().unwrap().values().map(|p| event(WatchEventType::Added, Some(p.clone()))).collect();
//! #         events.push(event(WatchEventType::Synced, None));
//! #         Ok(Response::new(tokio_stream::iter(events)))
//! #     }
//! # }
//! #
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let server = format!("http://{}", listener.local_addr()?);
//! # tokio::spawn(
//! #     tonic::transport::Server::builder()
//! #         .add_service(ProcessServiceServer::new(Toy::default()))
//! #         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
//! # );
//! use hydroplane_client::proto::{ContainerSpec, LogsRequest, ProcessSpec, ProcessStatus, WatchEventType, WatchRequest};
//! use hydroplane_client::{Client, ConnectOptions, Token, Wait};
//! use tokio_stream::StreamExt;
//!
//! let options = ConnectOptions::new(&server)?.token(Token::new("hp_example"));
//! let client = Client::connect(options).await?;
//!
//! let spec = ProcessSpec {
//!     process_name: "web".to_owned(),
//!     group: Some("site".to_owned()),
//!     container: Some(ContainerSpec {
//!         image_uri: "python:3.11".to_owned(),
//!         command: ["python3", "-m", "http.server", "8000"].map(str::to_owned).to_vec(),
//!         ..ContainerSpec::default()
//!     }),
//!     ..ProcessSpec::default()
//! };
//! let started = client.start(spec, Wait::UntilStarted).await?;
//! assert_eq!(started.process.expect("the process").status(), ProcessStatus::Running);
//!
//! let listed = client.list(Some("site")).await?;
//! assert_eq!(listed.processes[0].process_name, "web");
//!
//! // One ADDED per process, then SYNCED; a broken stream would be resumed.
//! let mut events = client.watch(WatchRequest::default());
//! let added = events.next().await.expect("an event")?;
//! assert_eq!((added.r#type(), added.process.expect("a process").process_name.as_str()), (WatchEventType::Added, "web"));
//! assert_eq!(events.next().await.expect("an event")?.r#type(), WatchEventType::Synced);
//!
//! // What it printed: raw bytes, chunk by chunk (`follow: true` would go on as it prints).
//! let request = LogsRequest { process_name: "web".to_owned(), tail_lines: Some(10), ..LogsRequest::default() };
//! let mut output = client.logs(request).await?;
//! let first = output.next().await.expect("a chunk")?;
//! assert!(first.data.starts_with(b"Serving HTTP"));
//!
//! assert_eq!(client.stop_process("web").await?, ["web"]);
//! let error = client.stop_process("web").await.unwrap_err();
//! assert_eq!(error.code(), hydroplane_client::Code::NotFound);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod connect;
mod watch;

/// The code generated from `proto/hydroplane/v1`: the messages, the client
/// (`process_service_client`) and the server trait (`process_service_server`).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("hydroplane.v1");
}

pub use client::{Client, Wait};
pub use connect::{
    Auth, ClientIdentity, ConnectError, ConnectOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SERVER, Failure,
    FileError, FileProblem, NoAnswer, Pem, START_WAIT_MARGIN, Target, TlsFailure, TlsFile, TlsSetupProblem,
    Token, TokenError, Unreachable, UrlError,
};
pub use tonic::{Code, Status};
pub use watch::{Notice, Resume, Watch};

/// The generated client with the token interceptor, as [`Client::grpc`] hands it out.
pub type GrpcClient = proto::process_service_client::ProcessServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;
