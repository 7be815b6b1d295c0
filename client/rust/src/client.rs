//! The typed client: one method per operation, taking and returning the generated messages.

use std::future::Future;
use std::time::Duration;

use tonic::{Code, Status};

use tonic::service::interceptor::InterceptedService;

use crate::connect::{ConnectError, ConnectOptions, NoAnswer, START_WAIT_MARGIN, Target};
use crate::proto::process_service_client::ProcessServiceClient;
use crate::proto::{
    DescribeRequest, ListRequest, ListResponse, LogChunk, LogsRequest, ProcessDetail, ProcessInfo,
    ProcessSpec, StartRequest, StartResponse, StopRequest, WatchRequest, stop_request,
};
use crate::watch::{Resume, Watch};
use crate::{AuthService, GrpcClient};

/// A connected client of a Hydroplane server. Cheap to clone: clones share the connection, which
/// is re-established as needed, and every call carries the token when one was given.
#[derive(Clone, Debug)]
pub struct Client {
    /// The generated client, with the token interceptor.
    grpc: GrpcClient,
    /// The same connection and interceptor, for the server's other services (gRPC health).
    service: AuthService,
    /// Where it is connected, for messages.
    target: Target,
    /// How long a call may wait for an answer ([`ConnectOptions::request_timeout`]).
    request_timeout: Option<Duration>,
}

/// Every page of one listing, as [`Client::list`] assembles it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    /// The processes, ordered by name, each once.
    pub processes: Vec<ProcessInfo>,
    /// The revision of the table the listing shows: watch with `since_revision` set to it to get
    /// exactly the changes made after the listing.
    pub revision: u64,
    /// Set when a page may be out of date (the server answered from what it last saw of its
    /// runtime); says why.
    pub stale_reason: Option<String>,
}

/// How many times [`Client::list`] lists again from the first page when the server no longer
/// keeps the listing it was reading (its page token expired).
pub const MAX_LIST_RESTARTS: u32 = 3;

/// How long the server waits for a started process when the request names no time.
const SERVER_DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// When [`Client::start`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// As soon as the server has accepted the process (it is then usually STARTING).
    No,
    /// Once the process is RUNNING or FAILED, or after the server's default time (60 s) with
    /// DEADLINE_EXCEEDED.
    UntilStarted,
    /// As `UntilStarted`, but DEADLINE_EXCEEDED after this long.
    UntilStartedWithin(Duration),
}

impl Client {
    /// Reads the token and TLS files of `options` and connects to the server.
    pub async fn connect(options: ConnectOptions) -> Result<Client, ConnectError> {
        let (channel, auth) = options.channel().await?;
        let service = InterceptedService::new(channel, auth);
        let grpc = ProcessServiceClient::new(service.clone());
        Ok(Client {
            grpc,
            service,
            target: options.target().clone(),
            request_timeout: options.request_timeout_value(),
        })
    }

    /// Runs a call, failing with [`NoAnswer`] when it takes longer than `deadline`.
    async fn bounded<T>(
        deadline: Option<Duration>,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let response = match deadline {
            Some(deadline) => {
                tokio::time::timeout(deadline, call).await.map_err(|_| NoAnswer::new(deadline).status())?
            }
            None => call.await,
        };
        Ok(response?.into_inner())
    }

    /// Where the client is connected.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The generated client on the same connection, for what the methods here do not cover
    /// (request metadata, deadlines, compression).
    pub fn grpc(&self) -> GrpcClient {
        self.grpc.clone()
    }

    /// The connection, with the token interceptor, for the server's other services on it: the
    /// standard gRPC health service (`tonic_health`'s `HealthClient::new(client.service())`),
    /// reflection.
    pub fn service(&self) -> AuthService {
        self.service.clone()
    }

    /// Starts a process (retry-safe: the same spec again returns the existing process with
    /// `created = false`).
    pub async fn start(&self, spec: ProcessSpec, wait: Wait) -> Result<StartResponse, Status> {
        // A waiting Start is meant to take long: its bound is the wait and a margin, if longer.
        let deadline = self.request_timeout.map(|timeout| match wait {
            Wait::No => timeout,
            Wait::UntilStarted => timeout.max(SERVER_DEFAULT_WAIT.saturating_add(START_WAIT_MARGIN)),
            Wait::UntilStartedWithin(wait) => timeout.max(wait.saturating_add(START_WAIT_MARGIN)),
        });
        let (wait, wait_timeout) = match wait {
            Wait::No => (false, None),
            Wait::UntilStarted => (true, None),
            // Saturated rather than refused: a timeout beyond what protobuf can hold means "wait
            // as long as the server lets me", never "do not wait".
            Wait::UntilStartedWithin(timeout) => (
                true,
                Some(
                    prost_types::Duration::try_from(timeout)
                        .unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 999_999_999 }),
                ),
            ),
        };
        let request = StartRequest { spec: Some(spec), wait, wait_timeout };
        Client::bounded(deadline, self.grpc.clone().start(request)).await
    }

    /// Stops one process; answers the names stopped. An unknown name is NOT_FOUND.
    pub async fn stop_process(&self, process_name: impl Into<String>) -> Result<Vec<String>, Status> {
        self.stop(stop_request::Target::ProcessName(process_name.into())).await
    }

    /// Stops every process of a group; answers the names stopped (none for an empty group).
    pub async fn stop_group(&self, group: impl Into<String>) -> Result<Vec<String>, Status> {
        self.stop(stop_request::Target::Group(group.into())).await
    }

    /// Stops every process whose labels match `selector` (Kubernetes syntax:
    /// `tier=web,env in (dev,test),!canary`); answers the names stopped (none when nothing
    /// matches). An empty selector is INVALID_ARGUMENT rather than stopping everything, and so is
    /// a malformed one, whose message names the position of the mistake.
    pub async fn stop_selected(&self, selector: impl Into<String>) -> Result<Vec<String>, Status> {
        self.stop(stop_request::Target::LabelSelector(selector.into())).await
    }

    /// Stops a process, a group or the selected processes.
    async fn stop(&self, target: stop_request::Target) -> Result<Vec<String>, Status> {
        let request = StopRequest { target: Some(target) };
        Ok(Client::bounded(self.request_timeout, self.grpc.clone().stop(request)).await?.stopped)
    }

    /// Lists every process `request` selects (`group`, `label_selector`), following the pages:
    /// the processes of one listing, ordered by name, each once, at one revision.
    ///
    /// `page_size` is the size of each page asked for (0: the server's default); `page_token` is
    /// ignored, since the listing starts at the first page. When the server no longer keeps the
    /// listing before its last page was read (FAILED_PRECONDITION on a later page: it expired, or
    /// the server restarted), the listing starts over from the first page, at most
    /// [`MAX_LIST_RESTARTS`] times; a fresh listing is as consistent as the first would have
    /// been. Any other error, or FAILED_PRECONDITION on a first page, is returned as it is.
    pub async fn list(&self, request: ListRequest) -> Result<Listing, Status> {
        let first = ListRequest { page_token: None, ..request };
        let mut restarts = 0;
        'listing: loop {
            let mut listing = Listing::default();
            let mut page = first.clone();
            loop {
                let later = page.page_token.is_some();
                let response = match self.list_page(page.clone()).await {
                    Ok(response) => response,
                    Err(status)
                        if later
                            && status.code() == Code::FailedPrecondition
                            && restarts < MAX_LIST_RESTARTS =>
                    {
                        restarts += 1;
                        continue 'listing;
                    }
                    Err(status) => return Err(status),
                };
                listing.revision = response.revision;
                listing.processes.extend(response.processes);
                if response.stale_reason.is_some() {
                    listing.stale_reason = response.stale_reason;
                }
                match response.next_page_token.filter(|token| !token.is_empty()) {
                    Some(token) => page.page_token = Some(token),
                    None => return Ok(listing),
                }
            }
        }
    }

    /// One page of a listing, as the server answers it: pass its `next_page_token` as the next
    /// request's `page_token` (with the same filters) for the next page. [`Client::list`]
    /// follows the pages for you.
    pub async fn list_page(&self, request: ListRequest) -> Result<ListResponse, Status> {
        Client::bounded(self.request_timeout, self.grpc.clone().list(request)).await
    }

    /// Describes one process: its info, the spec it was started from (secret references only)
    /// and its last state transitions, oldest first. An unknown name is NOT_FOUND.
    pub async fn describe(&self, process_name: impl Into<String>) -> Result<ProcessDetail, Status> {
        let request = DescribeRequest { process_name: process_name.into() };
        Client::bounded(self.request_timeout, self.grpc.clone().describe(request)).await
    }

    /// Streams a process's output as `request` asks: what is kept (all, the last `tail_lines`
    /// lines, or what came after `since`), then with `follow` what it writes next, until it ends
    /// or is stopped (the stream then ends) or the stream is dropped. The request timeout bounds
    /// the server's first answer (NOT_FOUND, PERMISSION_DENIED, ...), not the stream: a follow
    /// may last as long as the process.
    pub async fn logs(&self, request: LogsRequest) -> Result<tonic::Streaming<LogChunk>, Status> {
        Client::bounded(self.request_timeout, self.grpc.clone().logs(request)).await
    }

    /// Follows process changes (`request` filters by group, name or label selector, and may
    /// resume after a revision, such as a [`Listing`]'s `revision` to follow what changed after
    /// a listing), taking the stream up again when it breaks, with the default [`Resume`].
    ///
    /// The events are the server's: ADDED per existing process, SYNCED, then changes. When the
    /// connection breaks or the server ends the stream, the watch reconnects with backoff from
    /// the last revision the caller can rely on; the server then replays exactly what was missed,
    /// or sends RESET and a fresh snapshot, which reaches the caller like any event. Any other
    /// error (UNAUTHENTICATED, PERMISSION_DENIED, ...) ends the watch with it.
    pub fn watch(&self, request: WatchRequest) -> Watch {
        self.watch_with(request, Resume::default())
    }

    /// As [`Client::watch`], resuming as `resume` says.
    pub fn watch_with(&self, request: WatchRequest, resume: Resume) -> Watch {
        Watch::new(self.grpc.clone(), request, resume, self.request_timeout)
    }
}
