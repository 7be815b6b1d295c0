//! A Rust client of Hydroplane's gRPC API (`proto/hydroplane/v1/process.proto`).
//!
//! - [`proto`]: the messages, the generated client and the generated server trait, compiled
//!   from the contract with protox (no system `protoc`) in `hydroplane-core`.
//! - [`Client`]: connects ([`ConnectOptions`]: `http://`, `https://` with a CA and a client
//!   certificate, `unix:PATH`; a bearer [`Token`]) and starts, stops (by name, group or label
//!   selector), lists (every page of a listing: [`Listing`]), describes, watches and reads logs;
//!   its [`Watch`] resumes from the last revision when the stream breaks.
//!
//! It depends on tonic, prost, rustls (on ring) and `hydroplane-core` only: no Kubernetes or AWS
//! crates and not the server, so that a service can depend on it cheaply. `hpctl` is built on it.
//!
//! # Example
//!
//! Hidden lines start a toy in-memory server on a free loopback port, so that the example runs on
//! its own; against a real server, `server` would be its URL, as in `HYDROPLANE_SERVER`.
//!
//! To keep a copy of the processes up to date, list then watch: [`Client::list`] reads every
//! page of one listing, all at the listing's `revision`, and a watch with `since_revision` set
//! to it sends exactly the changes made after the listing, then SYNCED.
//!
//! ```
//! # use std::collections::BTreeMap;
//! # use std::sync::Mutex;
//! # use hydroplane_client::proto::process_service_server::{ProcessService, ProcessServiceServer};
//! # use hydroplane_client::proto::*;
//! # use tonic::{Request, Response, Status};
//! #
//! # /// Processes by name and every change so far; every call needs the token `hp_example`.
//! # #[derive(Default)]
//! # struct Toy(Mutex<(BTreeMap<String, ProcessInfo>, Vec<WatchEvent>)>);
//! #
//! # fn check<T>(request: &Request<T>) -> Result<(), Status> {
//! #     match request.metadata().get("authorization") {
//! #         Some(value) if value == "Bearer hp_example" => Ok(()),
//! #         _ => Err(Status::unauthenticated("no valid bearer token")),
//! #     }
//! # }
//! #
//! # /// Whether a process matches a selector; the toy knows only `key=value`.
//! # fn selects(selector: &Option<String>, process: &ProcessInfo) -> bool {
//! #     let Some(selector) = selector else { return true };
//! #     let (key, value) = selector.split_once('=').unwrap_or((selector, ""));
//! #     process.labels.get(key).map(String::as_str) == Some(value)
//! # }
//! #
//! # impl Toy {
//! #     /// Records a change, at the next revision.
//! #     fn record(history: &mut Vec<WatchEvent>, r#type: WatchEventType, process: ProcessInfo) {
//! #         let revision = history.len() as u64 + 1;
//! #         history.push(WatchEvent { r#type: r#type.into(), process: Some(process), revision });
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
//! #             labels: spec.labels,
//! #             status: ProcessStatus::Running.into(),
//! #             ..ProcessInfo::default()
//! #         };
//! #         let (processes, history) = &mut *self.0.lock().unwrap();
//! #         processes.insert(spec.process_name, process.clone());
//! #         Toy::record(history, WatchEventType::Added, process.clone());
//! #         Ok(Response::new(StartResponse { process: Some(process), created: true }))
//! #     }
//! #
//! #     async fn stop(&self, request: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
//! #         check(&request)?;
//! #         let (processes, history) = &mut *self.0.lock().unwrap();
//! #         let names: Vec<String> = match request.into_inner().target {
//! #             Some(stop_request::Target::ProcessName(name)) if processes.contains_key(&name) => vec![name],
//! #             Some(stop_request::Target::ProcessName(name)) => {
//! #                 return Err(Status::not_found(format!("process `{name}` does not exist")));
//! #             }
//! #             Some(stop_request::Target::LabelSelector(selector)) => {
//! #                 let selector = Some(selector);
//! #                 processes.values().filter(|p| selects(&selector, p)).map(|p| p.process_name.clone()).collect()
//! #             }
//! #             _ => return Err(Status::unimplemented("only stop by name or selector")),
//! #         };
//! #         for name in &names {
//! #             let process = processes.remove(name).expect("listed");
//! #             Toy::record(history, WatchEventType::Deleted, process);
//! #         }
//! #         Ok(Response::new(StopResponse { stopped: names }))
//! #     }
//! #
//! #     async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
//! #         check(&request)?;
//! #         let request = request.into_inner();
//! #         let (processes, history) = &*self.0.lock().unwrap();
//! #         let selected: Vec<ProcessInfo> =
//! #             processes.values().filter(|p| selects(&request.label_selector, p)).cloned().collect();
//! #         // The token is where the page starts (a real server's also names a snapshot).
//! #         let start: usize = request.page_token.map_or(Ok(0), |token| token.parse())
//! #             .map_err(|_| Status::invalid_argument("page_token: not one of ours"))?;
//! #         let end = (start + request.page_size.max(1) as usize).min(selected.len());
//! #         Ok(Response::new(ListResponse {
//! #             processes: selected[start..end].to_vec(),
//! #             next_page_token: (end < selected.len()).then(|| end.to_string()),
//! #             revision: history.len() as u64,
//! #             ..ListResponse::default()
//! #         }))
//! #     }
//! #
//! #     async fn describe(&self, request: Request<DescribeRequest>) -> Result<Response<ProcessDetail>, Status> {
//! #         check(&request)?;
//! #         let name = request.into_inner().process_name;
//! #         let process = self.0.lock().unwrap().0.get(&name).cloned();
//! #         let process = process.ok_or_else(|| Status::not_found(format!("process `{name}` does not exist")))?;
//! #         Ok(Response::new(ProcessDetail { process: Some(process), ..ProcessDetail::default() }))
//! #     }
//! #
//! #     type LogsStream = tokio_stream::Iter<std::vec::IntoIter<Result<LogChunk, Status>>>;
//! #
//! #     async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
//! #         check(&request)?;
//! #         let name = request.into_inner().process_name;
//! #         if !self.0.lock().unwrap().0.contains_key(&name) {
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
//! #         let request = request.into_inner();
//! #         let (processes, history) = &*self.0.lock().unwrap();
//! #         let revision = history.len() as u64;
//! #         let selected = |event: &WatchEvent| event.process.as_ref().is_some_and(|p| selects(&request.label_selector, p));
//! #         // The changes after `since_revision`, or a snapshot; then SYNCED.
//! #         let mut events: Vec<WatchEvent> = match request.since_revision {
//! #             Some(since) => history.iter().filter(|e| e.revision > since && selected(e)).cloned().collect(),
//! #             None => processes.values().map(|p| WatchEvent { r#type: WatchEventType::Added.into(), process: Some(p.clone()), revision }).filter(selected).collect(),
//! #         };
//! #         events.push(WatchEvent { r#type: WatchEventType::Synced.into(), process: None, revision });
//! #         Ok(Response::new(tokio_stream::iter(events.into_iter().map(Ok).collect::<Vec<_>>())))
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
//! use hydroplane_client::proto::{
//!     ContainerSpec, ListRequest, LogsRequest, ProcessSpec, ProcessStatus, WatchEventType, WatchRequest,
//! };
//! use hydroplane_client::{Client, ConnectOptions, Token, Wait};
//! use tokio_stream::StreamExt;
//!
//! let options = ConnectOptions::new(&server)?.token(Token::new("hp_example"));
//! let client = Client::connect(options).await?;
//!
//! for (name, tier) in [("web", "front"), ("api", "back"), ("worker", "back")] {
//!     let spec = ProcessSpec {
//!         process_name: name.to_owned(),
//!         group: Some("site".to_owned()),
//!         labels: [("tier".to_owned(), tier.to_owned())].into(),
//!         container: Some(ContainerSpec {
//!             image_uri: "python:3.11".to_owned(),
//!             command: ["python3", "-m", "http.server", "8000"].map(str::to_owned).to_vec(),
//!             ..ContainerSpec::default()
//!         }),
//!         ..ProcessSpec::default()
//!     };
//!     let started = client.start(spec, Wait::UntilStarted).await?;
//!     assert_eq!(started.process.expect("the process").status(), ProcessStatus::Running);
//! }
//!
//! // Every page of one listing (pages of one process here, to show it), at one revision.
//! let request = ListRequest { label_selector: Some("tier=back".to_owned()), page_size: 1, ..ListRequest::default() };
//! let listing = client.list(request).await?;
//! let names: Vec<&str> = listing.processes.iter().map(|process| process.process_name.as_str()).collect();
//! assert_eq!(names, ["api", "worker"]);
//!
//! // What it printed: raw bytes, chunk by chunk (`follow: true` would go on as it prints).
//! let request = LogsRequest { process_name: "web".to_owned(), tail_lines: Some(10), ..LogsRequest::default() };
//! let mut output = client.logs(request).await?;
//! let first = output.next().await.expect("a chunk")?;
//! assert!(first.data.starts_with(b"Serving HTTP"));
//!
//! // Something changes after the listing...
//! assert_eq!(client.stop_selected("tier=back").await?, ["api", "worker"]);
//!
//! // ...and a watch from the listing's revision sends exactly that, then SYNCED; a broken
//! // stream would be resumed.
//! let since = WatchRequest {
//!     label_selector: Some("tier=back".to_owned()),
//!     since_revision: Some(listing.revision),
//!     ..WatchRequest::default()
//! };
//! let mut events = client.watch(since);
//! for name in ["api", "worker"] {
//!     let deleted = events.next().await.expect("an event")?;
//!     assert_eq!((deleted.r#type(), deleted.process.expect("a process").process_name.as_str()), (WatchEventType::Deleted, name));
//! }
//! assert_eq!(events.next().await.expect("an event")?.r#type(), WatchEventType::Synced);
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
/// (`process_service_client`) and the server trait (`process_service_server`), from
/// `hydroplane-core`, so that the server and its clients share one set of types.
pub use hydroplane_core::proto;

pub use client::{Client, Listing, MAX_LIST_RESTARTS, Wait};
pub use connect::{
    Auth, ClientIdentity, ConnectError, ConnectOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SERVER, Failure,
    FileError, FileProblem, NoAnswer, Pem, START_WAIT_MARGIN, Target, TlsFailure, TlsFile, TlsSetupProblem,
    Token, TokenError, Unreachable, UrlError,
};
pub use tonic::{Code, Status};
pub use watch::{Notice, Resume, Watch};

/// The generated client with the token interceptor, as [`Client::grpc`] hands it out.
pub type GrpcClient = proto::process_service_client::ProcessServiceClient<AuthService>;

/// A connection with the token interceptor, as [`Client::service`] hands it out.
pub type AuthService = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>;
