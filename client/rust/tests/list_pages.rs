//! `Client::list` against an in-process server whose List pages follow a script: the pages of
//! one listing are assembled once each, an expired page token (FAILED_PRECONDITION on a later
//! page) starts the listing over from the first page a bounded number of times, and other
//! failures are returned as they are.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hydroplane_client::proto::process_service_server::{ProcessService, ProcessServiceServer};
use hydroplane_client::proto::*;
use hydroplane_client::{Client, Code, ConnectOptions, Listing, MAX_LIST_RESTARTS, Status};
use tonic::{Request, Response};

/// One scripted List answer: a page (its processes, next token and revision), or a refusal.
#[derive(Clone)]
enum Answer {
    Page { names: &'static [&'static str], next: Option<&'static str>, revision: u64, stale: bool },
    Refuse(Code),
}

/// A ProcessService whose List answers each call with the next script entry and records the
/// requests it got.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    requests: Arc<Mutex<Vec<ListRequest>>>,
}

impl Scripted {
    fn new(answers: Vec<Answer>) -> Scripted {
        Scripted { answers: Arc::new(Mutex::new(answers.into())), requests: Arc::default() }
    }

    /// The (page_token, page_size, label_selector) of each List call.
    fn requests(&self) -> Vec<(Option<String>, u32, Option<String>)> {
        let requests = self.requests.lock().expect("lock");
        requests
            .iter()
            .map(|request| (request.page_token.clone(), request.page_size, request.label_selector.clone()))
            .collect()
    }
}

#[tonic::async_trait]
impl ProcessService for Scripted {
    async fn start(&self, _: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        Err(Status::unimplemented("start"))
    }

    async fn stop(&self, _: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        Err(Status::unimplemented("stop"))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.requests.lock().expect("lock").push(request.into_inner());
        let answer = self.answers.lock().expect("lock").pop_front();
        match answer {
            None => Err(Status::internal("the script has no more answers")),
            Some(Answer::Refuse(code)) => Err(Status::new(code, "refused by the script")),
            Some(Answer::Page { names, next, revision, stale }) => Ok(Response::new(ListResponse {
                processes: names
                    .iter()
                    .map(|name| ProcessInfo { process_name: (*name).to_owned(), ..ProcessInfo::default() })
                    .collect(),
                stale_reason: stale.then(|| "the cluster is unreachable".to_owned()),
                next_page_token: next.map(str::to_owned),
                revision,
            })),
        }
    }

    async fn describe(&self, _: Request<DescribeRequest>) -> Result<Response<ProcessDetail>, Status> {
        Err(Status::unimplemented("describe"))
    }

    type LogsStream = futures_util::stream::Empty<Result<LogChunk, Status>>;

    async fn logs(&self, _: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("logs"))
    }

    type WatchStream = futures_util::stream::Empty<Result<WatchEvent, Status>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

/// Serves the script on a loopback port and connects to it.
async fn client_of(service: Scripted) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let router = tonic::transport::Server::builder().add_service(ProcessServiceServer::new(service));
    tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    let options = ConnectOptions::new(&format!("http://{address}")).expect("url");
    Client::connect(options).await.expect("connect")
}

fn page(names: &'static [&'static str], next: Option<&'static str>, revision: u64) -> Answer {
    Answer::Page { names, next, revision, stale: false }
}

fn names(listing: &Listing) -> Vec<&str> {
    listing.processes.iter().map(|process| process.process_name.as_str()).collect()
}

/// What the script recorded for a call: its token, with the request's size and selector.
fn call(token: Option<&str>) -> (Option<String>, u32, Option<String>) {
    (token.map(str::to_owned), 2, Some("tier=web".to_owned()))
}

fn request() -> ListRequest {
    ListRequest {
        label_selector: Some("tier=web".to_owned()),
        page_size: 2,
        // Ignored: a listing starts at the first page.
        page_token: Some("left-over".to_owned()),
        ..ListRequest::default()
    }
}

#[tokio::test]
async fn the_pages_of_a_listing_are_assembled_once_each_with_the_same_filters() {
    let script = Scripted::new(vec![
        page(&["a", "b"], Some("t1"), 7),
        Answer::Page { names: &["c", "d"], next: Some("t2"), revision: 7, stale: true },
        page(&["e"], None, 7),
    ]);
    let client = client_of(script.clone()).await;
    let listing = client.list(request()).await.expect("list");
    assert_eq!(names(&listing), ["a", "b", "c", "d", "e"]);
    assert_eq!(listing.revision, 7);
    assert_eq!(listing.stale_reason.as_deref(), Some("the cluster is unreachable"));
    assert_eq!(script.requests(), [call(None), call(Some("t1")), call(Some("t2"))]);
}

#[tokio::test]
async fn an_expired_token_lists_again_from_the_first_page() {
    let script = Scripted::new(vec![
        page(&["a", "b"], Some("old"), 7),
        Answer::Refuse(Code::FailedPrecondition),
        // The fresh listing is of a later table: what it shows is all that counts.
        page(&["a", "c"], Some("new"), 9),
        page(&["d"], None, 9),
    ]);
    let client = client_of(script.clone()).await;
    let listing = client.list(request()).await.expect("list");
    assert_eq!(names(&listing), ["a", "c", "d"]);
    assert_eq!(listing.revision, 9);
    assert_eq!(listing.stale_reason, None);
    assert_eq!(script.requests(), [call(None), call(Some("old")), call(None), call(Some("new"))]);
}

#[tokio::test]
async fn listing_again_is_bounded_and_then_the_expiry_is_returned() {
    let mut answers = Vec::new();
    for _ in 0..=MAX_LIST_RESTARTS {
        answers.push(page(&["a", "b"], Some("t"), 7));
        answers.push(Answer::Refuse(Code::FailedPrecondition));
    }
    let script = Scripted::new(answers);
    let client = client_of(script.clone()).await;
    let status = client.list(request()).await.expect_err("every listing expires");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(script.requests().len(), 2 * (MAX_LIST_RESTARTS as usize + 1));
}

#[tokio::test]
async fn a_refused_first_page_or_another_failure_is_not_retried() {
    // FAILED_PRECONDITION on a first page is about the server's setup, not an expired listing.
    let script = Scripted::new(vec![Answer::Refuse(Code::FailedPrecondition)]);
    let client = client_of(script.clone()).await;
    assert_eq!(client.list(request()).await.expect_err("refused").code(), Code::FailedPrecondition);
    assert_eq!(script.requests(), [call(None)]);

    let script = Scripted::new(vec![page(&["a", "b"], Some("t1"), 7), Answer::Refuse(Code::InvalidArgument)]);
    let client = client_of(script.clone()).await;
    assert_eq!(client.list(request()).await.expect_err("refused").code(), Code::InvalidArgument);
    assert_eq!(script.requests(), [call(None), call(Some("t1"))]);
}

#[tokio::test]
async fn list_page_is_one_call_as_the_server_answers_it() {
    let script = Scripted::new(vec![page(&["a", "b"], Some("t1"), 7)]);
    let client = client_of(script.clone()).await;
    let response = client.list_page(request()).await.expect("a page");
    assert_eq!(response.next_page_token.as_deref(), Some("t1"));
    assert_eq!(response.processes.len(), 2);
    // Sent as given, token included.
    assert_eq!(script.requests(), [call(Some("left-over"))]);
}
