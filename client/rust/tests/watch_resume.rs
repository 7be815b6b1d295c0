//! `Client::watch` against an in-process server whose Watch follows a script: the stream is
//! dropped once (ended, failed or cut at the TCP level) and the watch must resume from the last
//! revision the caller can rely on, pass RESET through, and stop on errors that are no outage.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hydroplane_client::proto::process_service_server::{ProcessService, ProcessServiceServer};
use hydroplane_client::proto::*;
use hydroplane_client::{Client, Code, ConnectOptions, NoAnswer, Notice, Resume, Status, Watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response};

/// One step of a scripted Watch response.
#[derive(Clone)]
enum Step {
    /// An event: its type, process and revision.
    Event(WatchEventType, Option<&'static str>, u64),
    /// The stream fails with this status (sent by the server, in the trailers).
    Fail(Code),
}

/// What one Watch call does: refuse, or send these steps and then end or hang.
#[derive(Clone)]
enum Call {
    /// The call is refused.
    Refuse(Code),
    /// The steps, then the end of the stream (`hang: false`) or nothing more.
    Send { steps: Vec<Step>, hang: bool },
}

/// A ProcessService whose Watch answers each call with the next script entry and records the
/// `since_revision` asked for.
#[derive(Clone)]
struct Scripted {
    calls: Arc<Mutex<Vec<Call>>>,
    since: Arc<Mutex<Vec<Option<u64>>>>,
}

impl Scripted {
    fn new(calls: Vec<Call>) -> Scripted {
        Scripted { calls: Arc::new(Mutex::new(calls)), since: Arc::default() }
    }

    fn since(&self) -> Vec<Option<u64>> {
        self.since.lock().expect("lock").clone()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ProcessService for Scripted {
    async fn start(&self, _: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        Err(Status::unimplemented("start"))
    }

    async fn stop(&self, _: Request<StopRequest>) -> Result<Response<StopResponse>, Status> {
        Err(Status::unimplemented("stop"))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    async fn describe(&self, _: Request<DescribeRequest>) -> Result<Response<ProcessDetail>, Status> {
        Err(Status::unimplemented("describe"))
    }

    type LogsStream = futures_util::stream::Empty<Result<LogChunk, Status>>;

    async fn logs(&self, _: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("logs"))
    }

    type WatchStream = EventStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        self.since.lock().expect("lock").push(request.get_ref().since_revision);
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            if calls.is_empty() { Call::Refuse(Code::Unavailable) } else { calls.remove(0) }
        };
        let (steps, hang) = match call {
            Call::Refuse(code) => return Err(Status::new(code, "refused by the script")),
            Call::Send { steps, hang } => (steps, hang),
        };
        let items: Vec<Result<WatchEvent, Status>> = steps
            .into_iter()
            .map(|step| match step {
                Step::Event(kind, name, revision) => Ok(event(kind, name, revision)),
                Step::Fail(code) => Err(Status::new(code, "failed by the script")),
            })
            .collect();
        let stream = tokio_stream::iter(items);
        Ok(Response::new(if hang {
            Box::pin(stream.chain(tokio_stream::pending())) as EventStream
        } else {
            Box::pin(stream)
        }))
    }
}

fn event(kind: WatchEventType, name: Option<&str>, revision: u64) -> WatchEvent {
    WatchEvent {
        r#type: kind.into(),
        process: name.map(|name| ProcessInfo { process_name: name.to_owned(), ..ProcessInfo::default() }),
        revision,
    }
}

use Step::Event as E;
use WatchEventType::{
    Added as ADDED, Deleted as DELETED, Modified as MODIFIED, Reset as RESET, Synced as SYNCED,
};

/// Serves the script on a loopback port; its address.
async fn serve(service: Scripted) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let router = tonic::transport::Server::builder().add_service(ProcessServiceServer::new(service));
    tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    address
}

/// Resuming quickly, so that the tests take milliseconds.
const FAST: Resume =
    Resume { first_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50), max_attempts: 5 };

async fn watch(address: std::net::SocketAddr, resume: Resume) -> Watch {
    let options = ConnectOptions::new(&format!("http://{address}")).expect("url");
    Client::connect(options).await.expect("connect").watch_with(WatchRequest::default(), resume)
}

/// The next item, as (type, process name, revision), or the error's code.
async fn next(events: &mut Watch) -> Result<(WatchEventType, Option<String>, u64), Code> {
    let item = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an item within 10 s")
        .expect("the watch goes on");
    item.map(|event| (event.r#type(), event.process.map(|process| process.process_name), event.revision))
        .map_err(|status| status.code())
}

#[track_caller]
fn item(
    kind: WatchEventType,
    name: Option<&str>,
    revision: u64,
) -> Result<(WatchEventType, Option<String>, u64), Code> {
    Ok((kind, name.map(str::to_owned), revision))
}

#[tokio::test]
async fn a_stream_the_server_ends_or_fails_is_resumed_from_the_last_revision() {
    let service = Scripted::new(vec![
        Call::Send {
            steps: vec![E(ADDED, Some("a"), 5), E(SYNCED, None, 5), E(MODIFIED, Some("a"), 6)],
            hang: false,
        },
        Call::Send {
            steps: vec![E(SYNCED, None, 6), E(ADDED, Some("b"), 7), Step::Fail(Code::Unavailable)],
            hang: false,
        },
        // The server lost the history: a RESET and a fresh snapshot reach the caller.
        Call::Send { steps: vec![E(RESET, None, 9), E(ADDED, Some("b"), 9), E(SYNCED, None, 9)], hang: true },
    ]);
    let mut events = watch(serve(service.clone()).await, FAST).await;
    assert_eq!(next(&mut events).await, item(ADDED, Some("a"), 5));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 5));
    assert_eq!(next(&mut events).await, item(MODIFIED, Some("a"), 6));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 6));
    assert_eq!(next(&mut events).await, item(ADDED, Some("b"), 7));
    assert_eq!(next(&mut events).await, item(RESET, None, 9));
    assert_eq!(next(&mut events).await, item(ADDED, Some("b"), 9));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 9));
    assert_eq!(service.since(), [None, Some(6), Some(7)]);
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_resumed() {
    let service = Scripted::new(vec![
        Call::Send { steps: vec![E(ADDED, Some("a"), 5), E(SYNCED, None, 5)], hang: true },
        Call::Send { steps: vec![E(DELETED, Some("a"), 6), E(SYNCED, None, 6)], hang: true },
    ]);
    let server = serve(service.clone()).await;
    // A TCP proxy in front of the server, whose connections can be cut as a crash or a network
    // failure would.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_address = proxy.local_addr().expect("address");
    let connections = Arc::new(Mutex::new(Vec::<tokio::task::JoinHandle<()>>::new()));
    let handles = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = proxy.accept().await {
            let handle = tokio::spawn(async move {
                let mut upstream = tokio::net::TcpStream::connect(server).await.expect("connect upstream");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
            handles.lock().expect("lock").push(handle);
        }
    });

    let mut events = watch(proxy_address, FAST).await;
    assert_eq!(next(&mut events).await, item(ADDED, Some("a"), 5));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 5));
    for connection in connections.lock().expect("lock").drain(..) {
        connection.abort();
    }
    assert_eq!(next(&mut events).await, item(DELETED, Some("a"), 6));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 6));
    assert_eq!(service.since(), [None, Some(5)]);
}

#[tokio::test]
async fn a_snapshot_cut_short_is_started_over_after_a_reset() {
    let service = Scripted::new(vec![
        // Snapshot events carry the snapshot's revision, which is no point to resume from.
        Call::Send { steps: vec![E(ADDED, Some("a"), 5)], hang: false },
        Call::Refuse(Code::Unavailable),
        Call::Send { steps: vec![E(ADDED, Some("b"), 8), E(SYNCED, None, 8)], hang: true },
    ]);
    let mut events = watch(serve(service.clone()).await, FAST).await;
    assert_eq!(next(&mut events).await, item(ADDED, Some("a"), 5));
    // Made by the client: forget `a`, which the new snapshot no longer has.
    assert_eq!(next(&mut events).await, item(RESET, None, 5));
    assert_eq!(next(&mut events).await, item(ADDED, Some("b"), 8));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 8));
    assert_eq!(service.since(), [None, None, None]);
}

#[tokio::test]
async fn errors_that_are_no_outage_end_the_watch_at_once() {
    for code in [Code::Unauthenticated, Code::PermissionDenied] {
        let service = Scripted::new(vec![
            Call::Send { steps: vec![E(SYNCED, None, 5), Step::Fail(Code::Unavailable)], hang: false },
            Call::Refuse(code),
        ]);
        let mut events = watch(serve(service.clone()).await, FAST).await;
        assert_eq!(next(&mut events).await, item(SYNCED, None, 5));
        assert_eq!(next(&mut events).await, Err(code));
        assert!(events.next().await.is_none(), "the watch ends after the error");
        assert_eq!(service.since(), [None, Some(5)]);
    }
}

#[tokio::test]
async fn an_outage_ends_the_watch_after_the_attempts_allowed() {
    let service = Scripted::new(vec![Call::Send { steps: vec![E(SYNCED, None, 5)], hang: false }]);
    let mut events = watch(serve(service.clone()).await, FAST).await;
    assert_eq!(next(&mut events).await, item(SYNCED, None, 5));
    // The script refuses every later call with UNAVAILABLE.
    assert_eq!(next(&mut events).await, Err(Code::Unavailable));
    assert_eq!(service.since(), [None, Some(5), Some(5), Some(5), Some(5), Some(5)]);

    // Without resuming, the watch ends as the server's stream does.
    let service = Scripted::new(vec![Call::Send { steps: vec![E(SYNCED, None, 5)], hang: false }]);
    let mut events = watch(serve(service.clone()).await, Resume { max_attempts: 0, ..FAST }).await;
    assert_eq!(next(&mut events).await, item(SYNCED, None, 5));
    assert!(events.next().await.is_none());
    assert_eq!(service.since(), [None]);
}

#[tokio::test]
async fn breaks_and_resumptions_are_told_to_the_observer() {
    let service = Scripted::new(vec![
        Call::Send { steps: vec![E(SYNCED, None, 5)], hang: false },
        Call::Refuse(Code::Unavailable),
        Call::Send { steps: vec![E(SYNCED, None, 5)], hang: true },
    ]);
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&notices);
    let mut events = watch(serve(service.clone()).await, FAST)
        .await
        .on_notice(move |notice| seen.lock().expect("lock").push(notice));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 5));
    assert_eq!(next(&mut events).await, item(SYNCED, None, 5));
    let notices = notices.lock().expect("lock").clone();
    let summary: Vec<String> = notices
        .iter()
        .map(|notice| match notice {
            Notice::Broken { reason, attempt, resume_after, .. } => {
                format!("broken {attempt} {resume_after:?}: {reason}")
            }
            Notice::Resumed { after } => format!("resumed {after:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "broken 1 Some(5): the server ended the stream",
            "broken 2 Some(5): refused by the script",
            "resumed Some(5)",
        ]
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_deadline_with_no_answer_as_its_source() {
    // It takes connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    let timeout = Duration::from_millis(300);
    let options = ConnectOptions::new(&format!("http://{address}")).expect("url").request_timeout(timeout);
    let client = Client::connect(options).await.expect("connect");
    let status = client.list(ListRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(NoAnswer::from_status(&status).map(|no_answer| no_answer.after()), Some(timeout));
    let status = client.stop_process("x").await.unwrap_err();
    assert!(NoAnswer::from_status(&status).is_some(), "{status:?}");
    // A watch is bounded while it opens; with no resuming, that ends it.
    let resume = Resume { max_attempts: 0, ..FAST };
    let mut events = client.watch_with(WatchRequest::default(), resume);
    let status = next(&mut events).await.unwrap_err();
    assert_eq!(status, Code::DeadlineExceeded);
    // A status the server sent is no NoAnswer.
    assert!(NoAnswer::from_status(&Status::deadline_exceeded("the wait ran out")).is_none());
}
