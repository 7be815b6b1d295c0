//! The gRPC face in one process: the real service, guard and app over a fake runtime, reached
//! by tonic through in-memory connections. What only the binaries do (signals, flags, stdout)
//! is tested end to end in `tests/`; everything else that can be is tested here.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::app::Processes;
use crate::config::LimitSettings;
use crate::grpc::guard::Guard;
use crate::grpc::listen::Listener;
use crate::proto::{self, process_service_client::ProcessServiceClient, stop_request::Target};
use crate::runtime::Runtime;
use crate::runtime::fake::FakeRuntime;
use crate::security::tokens::TokenStore;

/// A server over the fake runtime, reached through in-memory connections; stopped when dropped.
struct InProcess {
    channel: Channel,
    _stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Shuts the server down, as a signal does, and waits until `serve` returns.
    async fn shut_down(self) {
        let InProcess { _stop: stop, served, .. } = self;
        drop(stop);
        served.await.expect("serve returns");
    }
}

async fn serve(tokens: Option<Arc<TokenStore>>, limits: LimitSettings) -> InProcess {
    serve_over(FakeRuntime::new(), tokens, limits).await
}

/// As [`serve`], over a runtime the test keeps, so that it can change the table behind the server.
async fn serve_over(
    runtime: Arc<FakeRuntime>,
    tokens: Option<Arc<TokenStore>>,
    limits: LimitSettings,
) -> InProcess {
    let (connections, incoming) = tokio::sync::mpsc::channel::<std::io::Result<tokio::io::DuplexStream>>(16);
    let listener = Listener::InMemory(Box::pin(tokio_stream::wrappers::ReceiverStream::new(incoming)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let processes = Processes::new(runtime);
    let guard = Guard::new(tokens, limits.clone());
    let served = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        crate::grpc::serve(vec![listener], processes, guard, &limits, shutdown)
            .await
            .expect("the server runs");
    });
    let channel = Endpoint::from_static("http://in-memory")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connections = connections.clone();
            async move {
                let (client, server) = tokio::io::duplex(64 * 1024);
                connections
                    .send(Ok(server))
                    .await
                    .map_err(|_| std::io::Error::other("the server is gone"))?;
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        }))
        .await
        .expect("connect in memory");
    InProcess { channel, _stop: stop, served }
}

/// A token made in the tokens file at `path`, with its scopes and group patterns.
fn make_token(path: &std::path::Path, (name, scopes, groups): (&str, &str, Option<&str>)) -> String {
    let request = crate::security::tokens::TokenRequest {
        name: name.to_owned(),
        scopes: crate::security::access::parse_scopes(scopes).expect("scopes"),
        groups: groups.map(|groups| crate::security::access::parse_group_patterns(groups).expect("groups")),
        created: "2026-12-01T00:00:00Z".to_owned(),
    };
    crate::security::tokens::create(path, &request).expect("a token").expose().to_owned()
}

/// A tokens file in a new directory with a token for each `(name, scopes, groups)`: the
/// directory (kept while the test runs), the store, and the tokens in that order.
fn tokens<const N: usize>(
    made: [(&str, &str, Option<&str>); N],
) -> (tempfile::TempDir, Arc<TokenStore>, [String; N]) {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("tokens.yml");
    let tokens = made.map(|token| make_token(&path, token));
    (directory, TokenStore::open(&path).expect("tokens"), tokens)
}

/// Sends a bearer token with every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut call: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        call.metadata_mut().insert("authorization", self.0.clone());
        Ok(call)
    }
}

/// A client of the in-process server that sends `token`.
fn bearer_client(
    server: &InProcess,
    token: &str,
) -> ProcessServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>> {
    let bearer = format!("Bearer {token}").parse().expect("ASCII");
    ProcessServiceClient::with_interceptor(server.channel.clone(), Bearer(bearer))
}

fn sleeper(name: &str, group: Option<&str>) -> proto::ProcessSpec {
    proto::ProcessSpec {
        process_name: name.to_owned(),
        group: group.map(str::to_owned),
        container: Some(proto::ContainerSpec {
            image_uri: "busybox".to_owned(),
            command: vec!["sleep".to_owned(), "60".to_owned()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn start_request(name: &str, group: Option<&str>) -> proto::StartRequest {
    proto::StartRequest { spec: Some(sleeper(name, group)), ..Default::default() }
}

#[tokio::test]
async fn a_request_that_does_not_decode_is_invalid_argument() {
    let server = serve(None, LimitSettings::default()).await;
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.expect("ready");
    // Field 1 of a DescribeRequest is a string: bytes that are not UTF-8 do not decode.
    let garbage = proto::LogChunk { data: vec![0xff, 0xfe, 0x00].into(), ..Default::default() };
    let codec = tonic_prost::ProstCodec::<proto::LogChunk, proto::ProcessDetail>::default();
    let path = http::uri::PathAndQuery::from_static("/hydroplane.v1.ProcessService/Describe");
    let refused = grpc.unary(tonic::Request::new(garbage), path, codec).await.expect_err("undecodable");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

#[tokio::test]
async fn describe_shows_literal_env_values_to_admin_only() {
    let (_directory, store, [admin, reader]) = tokens([("root", "admin", None), ("dashboard", "read", None)]);
    let server = serve(Some(store), LimitSettings::default()).await;
    let mut request = start_request("db", Some("prod"));
    request.spec.as_mut().and_then(|spec| spec.container.as_mut()).expect("container").env = vec![
        proto::EnvironmentVariable {
            name: "PASSWORD".into(),
            source: Some(proto::environment_variable::Source::Value("hunter2".into())),
        },
        proto::EnvironmentVariable {
            name: "TOKEN".into(),
            source: Some(proto::environment_variable::Source::Secret(proto::SecretReference {
                secret_name: "db".into(),
                key: None,
            })),
        },
    ];
    bearer_client(&server, &admin).start(request).await.expect("start");
    let describe = |token: String| {
        let mut client = bearer_client(&server, &token);
        async move {
            let detail = client
                .describe(proto::DescribeRequest { process_name: "db".into() })
                .await
                .expect("describe")
                .into_inner();
            detail.spec.and_then(|spec| spec.container).expect("a container").env
        }
    };
    let shown = describe(admin).await;
    let redacted = describe(reader).await;
    assert_eq!(shown[0].source, Some(proto::environment_variable::Source::Value("hunter2".into())));
    assert_eq!(
        redacted[0].source,
        Some(proto::environment_variable::Source::Value(crate::grpc::describe::REDACTED.into()))
    );
    assert_eq!(redacted[0].name, "PASSWORD");
    assert_eq!(redacted[1], shown[1], "a secret reference is shown as it is");
}

#[tokio::test]
async fn start_list_watch_and_stop_in_one_process() {
    let server = serve(None, LimitSettings::default()).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let started = client.start(start_request("web", Some("site"))).await.expect("start").into_inner();
    assert!(started.created);
    let again = client.start(start_request("web", Some("site"))).await.expect("a retried start").into_inner();
    assert!(!again.created, "the same spec again is the same process");
    let mut different = start_request("web", Some("site"));
    different.spec.as_mut().and_then(|spec| spec.container.as_mut()).expect("container").image_uri =
        "nginx".into();
    let taken = client.start(different).await.expect_err("another spec under the name");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert!(taken.message().contains("container.image_uri"), "{}", taken.message());

    let mut events = client.watch(proto::WatchRequest::default()).await.expect("watch").into_inner();
    let first = events.message().await.expect("stream").expect("an event");
    assert_eq!(first.r#type, proto::WatchEventType::Added as i32);
    let synced = events.message().await.expect("stream").expect("an event");
    assert_eq!(synced.r#type, proto::WatchEventType::Synced as i32);

    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner();
    assert_eq!(listed.processes.len(), 1);
    let stopped = client
        .stop(proto::StopRequest { target: Some(Target::ProcessName("web".into())) })
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.stopped, ["web"]);
    let deleted = events.message().await.expect("stream").expect("an event");
    assert_eq!(deleted.r#type, proto::WatchEventType::Deleted as i32);
    let unknown = client
        .stop(proto::StopRequest { target: Some(Target::ProcessName("web".into())) })
        .await
        .expect_err("gone");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_list_request_longer_than_its_first_buffer_is_read_whole() {
    let server = serve(None, LimitSettings::default()).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    for (name, tier) in [("web", "front"), ("db", "back")] {
        let mut request = start_request(name, Some("site"));
        request.spec.as_mut().expect("spec").labels.insert("tier".into(), tier.into());
        client.start(request).await.expect("start");
    }
    // About 1.5 KiB of selector, where List's request buffer starts at 256 bytes.
    let values: Vec<String> = (0..300).map(|index| format!("v{index:03}")).collect();
    let selector = format!("tier in (front,{})", values.join(","));
    let request = proto::ListRequest {
        group: Some("site".into()),
        label_selector: Some(selector.clone()),
        ..Default::default()
    };
    assert!(prost::Message::encoded_len(&request) > 4 * super::routes::REQUEST_BUFFER);
    let listed = client.list(request).await.expect("list").into_inner();
    let names: Vec<_> = listed.processes.iter().map(|process| process.process_name.as_str()).collect();
    assert_eq!(names, ["web"], "the whole selector was read: {} bytes", selector.len());
}

#[tokio::test]
async fn every_problem_of_a_start_is_reported_at_once() {
    let server = serve(None, LimitSettings::default()).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let mut request = start_request("Bad_Name", Some("-group"));
    request.spec.as_mut().and_then(|spec| spec.container.as_mut()).expect("container").image_uri.clear();
    request.wait_timeout = Some(prost_types::Duration { seconds: 999_999, nanos: 0 });
    let refused = client.start(request).await.expect_err("an invalid start");
    assert_eq!(refused.code(), Code::InvalidArgument);
    for field in ["process_name", "group", "container.image_uri", "wait_timeout"] {
        assert!(refused.message().contains(field), "`{}` lacks `{field}`", refused.message());
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_runs_out_is_deadline_exceeded() {
    let server = serve(None, LimitSettings::default()).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let request = proto::StartRequest {
        spec: Some(sleeper("slow-starter", None)),
        wait: true,
        wait_timeout: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
    };
    // The paused clock jumps over the 30 s once nothing else can happen.
    let waited = client.start(request).await.expect_err("it never leaves STARTING");
    assert_eq!(waited.code(), Code::DeadlineExceeded);
    assert!(waited.message().contains("still STARTING"), "{}", waited.message());
    let quick = proto::StartRequest { spec: Some(sleeper("quick", None)), wait: true, wait_timeout: None };
    let settled = client.start(quick).await.expect("a process that runs at once").into_inner();
    assert_eq!(settled.process.expect("a process").status, proto::ProcessStatus::Running as i32);
}

#[tokio::test]
async fn the_guard_and_the_app_keep_a_token_to_its_groups() {
    let (_directory, store, [admin, ci]) =
        tokens([("root", "admin", None), ("ci", "read,write", Some("ci-*"))]);
    let server = serve(Some(store), LimitSettings::default()).await;
    let with = |token: &str| bearer_client(&server, token);
    let mut admin = with(&admin);
    let mut ci = with(&ci);
    admin.start(start_request("ci-a", Some("ci-1"))).await.expect("admin starts ci-a");
    admin.start(start_request("prod-x", Some("prod"))).await.expect("admin starts prod-x");

    let listed = ci.list(proto::ListRequest::default()).await.expect("ci lists").into_inner();
    let names: Vec<String> = listed.processes.into_iter().map(|process| process.process_name).collect();
    assert_eq!(names, ["ci-a"]);
    // A restricted token learns nothing of a process it cannot reach: the answer is the one
    // for a process that is not there, code and message.
    let refused = ci
        .stop(proto::StopRequest { target: Some(Target::ProcessName("prod-x".into())) })
        .await
        .expect_err("out of reach");
    let unknown = ci
        .stop(proto::StopRequest { target: Some(Target::ProcessName("nowhere".into())) })
        .await
        .expect_err("unknown");
    assert_same_as_unknown(&refused, &unknown, "prod-x", "nowhere");
    let described = ci
        .describe(proto::DescribeRequest { process_name: "ci-a".into() })
        .await
        .expect("ci describes its own")
        .into_inner();
    assert_eq!(described.process.map(|process| process.process_name).as_deref(), Some("ci-a"));
    let refused = ci
        .describe(proto::DescribeRequest { process_name: "prod-x".into() })
        .await
        .expect_err("out of reach");
    let unknown =
        ci.describe(proto::DescribeRequest { process_name: "nowhere".into() }).await.expect_err("unknown");
    assert_same_as_unknown(&refused, &unknown, "prod-x", "nowhere");
    // A Start of a name taken in another group says the name is taken, and nothing of the
    // other process's spec: not its group, not which fields differ.
    let mut guess = start_request("prod-x", Some("ci-1"));
    guess.spec.as_mut().expect("a spec").container.as_mut().expect("a container").env =
        vec![proto::EnvironmentVariable {
            name: "PASSWORD".into(),
            source: Some(proto::environment_variable::Source::Value("guess".into())),
        }];
    let taken = ci.start(guess).await.expect_err("the name is taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    for field in ["group", "env", "container", "`prod`", "differ", "stopp"] {
        assert!(!taken.message().contains(field), "`{}` names `{field}`", taken.message());
    }
    let mut anonymous = ProcessServiceClient::new(server.channel.clone());
    let nobody = anonymous.list(proto::ListRequest::default()).await.expect_err("no token");
    assert_eq!(nobody.code(), Code::Unauthenticated);
}

/// Asserts that the answer about a process out of reach is the answer about an unknown one,
/// code and message, once the names are swapped.
#[track_caller]
fn assert_same_as_unknown(
    out_of_reach: &tonic::Status,
    unknown: &tonic::Status,
    name: &str,
    unknown_name: &str,
) {
    assert_eq!(out_of_reach.code(), Code::NotFound, "{out_of_reach:?}");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert_eq!(out_of_reach.message().replace(name, unknown_name), unknown.message());
}

fn labelled(name: &str, group: &str, labels: &[(&str, &str)]) -> proto::StartRequest {
    let mut spec = sleeper(name, Some(group));
    spec.labels = labels.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    proto::StartRequest { spec: Some(spec), ..Default::default() }
}

#[tokio::test]
async fn pages_selectors_and_selector_stops_keep_a_token_to_its_groups() {
    let (_directory, store, [admin, ci]) =
        tokens([("root", "admin", None), ("ci", "read,write", Some("ci"))]);
    let server = serve(Some(store), LimitSettings::default()).await;
    let mut admin = bearer_client(&server, &admin);
    let mut ci = bearer_client(&server, &ci);
    for index in 0..4 {
        admin.start(labelled(&format!("c{index}"), "ci", &[("tier", "web")])).await.expect("start");
        admin.start(labelled(&format!("p{index}"), "prod", &[("tier", "web")])).await.expect("start");
    }
    // The admin's listing, in pages of 3; its token in the hands of `ci` shows only ci's.
    let first = admin
        .list(proto::ListRequest { page_size: 3, ..Default::default() })
        .await
        .expect("a page")
        .into_inner();
    let names = |response: &proto::ListResponse| {
        response.processes.iter().map(|process| process.process_name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&first), ["c0", "c1", "c2"]);
    let token = first.next_page_token.clone().expect("more pages");
    let stolen = ci
        .list(proto::ListRequest { page_size: 3, page_token: Some(token.clone()), ..Default::default() })
        .await
        .expect("a page")
        .into_inner();
    assert_eq!((names(&stolen), stolen.revision), (vec!["c3".to_owned()], first.revision));
    let second = admin
        .list(proto::ListRequest { page_size: 3, page_token: Some(token), ..Default::default() })
        .await
        .expect("a page")
        .into_inner();
    assert_eq!(names(&second), ["c3", "p0", "p1"]);
    // A token with other filters, or made up, is INVALID_ARGUMENT.
    let other = admin
        .list(proto::ListRequest {
            group: Some("ci".into()),
            page_token: second.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect_err("other filters");
    assert_eq!(other.code(), Code::InvalidArgument);
    assert!(other.message().contains("same `group` and `label_selector`"), "{}", other.message());
    let made_up = admin
        .list(proto::ListRequest { page_token: Some("abc".into()), ..Default::default() })
        .await
        .expect_err("made up");
    assert_eq!(made_up.code(), Code::InvalidArgument);

    // Selectors: labels come back; a bad selector names its position on List, Watch and Stop.
    let web = ci
        .list(proto::ListRequest { label_selector: Some("tier=web".into()), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(names(&web), ["c0", "c1", "c2", "c3"]);
    assert_eq!(web.processes[0].labels.get("tier").map(String::as_str), Some("web"));
    let bad = "tier in (web";
    let refused = ci
        .list(proto::ListRequest { label_selector: Some(bad.into()), ..Default::default() })
        .await
        .expect_err("a bad selector");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("label_selector: at position 13"), "{}", refused.message());
    let refused = ci
        .watch(proto::WatchRequest { label_selector: Some(bad.into()), ..Default::default() })
        .await
        .expect_err("a bad selector");
    assert_eq!(refused.code(), Code::InvalidArgument);
    for selector in [bad, " "] {
        let refused = ci
            .stop(proto::StopRequest { target: Some(Target::LabelSelector(selector.into())) })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{selector:?}");
        assert!(refused.message().contains("label_selector"), "{}", refused.message());
    }
    // A restricted token's selector stops only what it may reach.
    let stopped = ci
        .stop(proto::StopRequest { target: Some(Target::LabelSelector("tier=web".into())) })
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.stopped, ["c0", "c1", "c2", "c3"]);
    let left = admin.list(proto::ListRequest::default()).await.expect("list").into_inner();
    assert_eq!(names(&left), ["p0", "p1", "p2", "p3"]);
    let stopped = admin
        .stop(proto::StopRequest { target: Some(Target::LabelSelector("tier=web".into())) })
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.stopped, ["p0", "p1", "p2", "p3"]);
}

#[tokio::test]
async fn a_kept_group_answer_follows_every_change_and_stays_within_reach() {
    let (_directory, store, [admin, prod]) =
        tokens([("root", "admin", None), ("prod", "read", Some("prod"))]);
    let runtime = FakeRuntime::new();
    let server = serve_over(Arc::clone(&runtime), Some(store), LimitSettings::default()).await;
    let (mut admin, mut prod) = (bearer_client(&server, &admin), bearer_client(&server, &prod));
    for name in ["c0", "c1", "c2"] {
        admin.start(start_request(name, Some("ci"))).await.expect("start");
    }
    let group = |page_size: u32, page_token: Option<String>| proto::ListRequest {
        group: Some("ci".into()),
        page_size,
        page_token,
        ..Default::default()
    };
    let described = |response: &proto::ListResponse| {
        let processes = response.processes.iter();
        processes.map(|process| format!("{} {}", process.process_name, process.status)).collect::<Vec<_>>()
    };
    let running = proto::ProcessStatus::Running as i32;
    let first = admin.list(group(0, None)).await.expect("list").into_inner();
    let again = admin.list(group(0, None)).await.expect("list").into_inner();
    assert_eq!(
        described(&first),
        [format!("c0 {running}"), format!("c1 {running}"), format!("c2 {running}")]
    );
    assert_eq!(again, first, "nothing changed");
    // A change elsewhere leaves the group's answer as it was, at the table's new revision.
    admin.start(start_request("p0", Some("prod"))).await.expect("start");
    let later = admin.list(group(0, None)).await.expect("list").into_inner();
    let everything = admin.list(proto::ListRequest::default()).await.expect("list").into_inner();
    assert_eq!((later.processes.clone(), later.revision), (first.processes.clone(), everything.revision));
    assert!(later.revision > first.revision);
    // A change in the group, from the runtime or through the API, shows at once.
    let mut failed = runtime.table().get("c1").expect("c1");
    failed.status = crate::spec::ProcessStatus::Failed;
    runtime.table().upsert(failed);
    let failed = proto::ProcessStatus::Failed as i32;
    let changed = admin.list(group(0, None)).await.expect("list").into_inner();
    assert_eq!(
        described(&changed),
        [format!("c0 {running}"), format!("c1 {failed}"), format!("c2 {running}")]
    );
    admin.stop(proto::StopRequest { target: Some(Target::ProcessName("c0".into())) }).await.expect("stop");
    let stopped = admin.list(group(0, None)).await.expect("list").into_inner();
    assert_eq!(described(&stopped), [format!("c1 {failed}"), format!("c2 {running}")]);
    // A caller out of the group's reach gets nothing of it, however often it was listed.
    let out_of_reach = prod.list(group(0, None)).await.expect("list").into_inner();
    assert_eq!((out_of_reach.processes.len(), out_of_reach.revision), (0, stopped.revision));
    // A page smaller than the group still pages.
    let page = admin.list(group(1, None)).await.expect("list").into_inner();
    assert_eq!(described(&page), [format!("c1 {failed}")]);
    let rest = admin.list(group(1, page.next_page_token.clone())).await.expect("list").into_inner();
    assert_eq!((described(&rest), rest.next_page_token), (vec![format!("c2 {running}")], None));
}

#[tokio::test]
async fn a_full_server_sheds_calls_with_resource_exhausted() {
    let limits = LimitSettings { max_watches_per_token: 2, max_watches: 3, ..LimitSettings::default() };
    let server = serve(None, limits).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(client.watch(proto::WatchRequest::default()).await.expect("a watch within the cap"));
    }
    let refused = client.watch(proto::WatchRequest::default()).await.expect_err("over the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("limits.max_watches_per_token"), "{}", refused.message());
    drop(open);
    // A closed stream gives its slot back.
    let mut reopened = None;
    for _ in 0..100 {
        match client.watch(proto::WatchRequest::default()).await {
            Ok(stream) => {
                reopened = Some(stream);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reopened.is_some(), "the slots of closed streams come back");
}

#[track_caller]
fn check_wait(seconds: i64, nanos: i32, expected: Result<Duration, &str>) {
    let found = crate::grpc::start::wait_from_proto(prost_types::Duration { seconds, nanos });
    match (found, expected) {
        (Ok(found), Ok(expected)) => assert_eq!(found, expected, "{seconds}s {nanos}ns"),
        (Err(rule), Err(expected)) => {
            assert!(rule.contains(expected), "`{rule}` lacks `{expected}`");
            assert!(rule.contains(&format!("got {{seconds: {seconds}, nanos: {nanos}}}")), "{rule}");
            assert!(!rule.contains('\n'), "{rule}");
        }
        (found, expected) => panic!("{seconds}s {nanos}ns: {found:?}, expected {expected:?}"),
    }
}

#[test]
fn wait_timeouts_are_checked_as_given_never_normalized() {
    check_wait(0, 0, Ok(Duration::ZERO));
    check_wait(1, 500_000_000, Ok(Duration::from_millis(1500)));
    check_wait(3600, 0, Ok(Duration::from_secs(3600)));
    check_wait(3599, 999_999_999, Ok(Duration::new(3599, 999_999_999)));
    for (seconds, nanos) in [(0, -1), (1, -1), (-1, -5), (0, 1_000_000_000), (0, i32::MAX), (5, i32::MIN)] {
        check_wait(seconds, nanos, Err("nanos must be between 0 and 999999999"));
    }
    for (seconds, nanos) in [(-1, 0), (3600, 1), (3601, 0), (i64::MAX, 999_999_999), (i64::MIN, 0)] {
        check_wait(seconds, nanos, Err("must be between 0 and 3600s"));
    }
}

#[tokio::test]
async fn a_start_with_a_hundred_thousand_env_entries_is_refused_quickly_naming_the_limit() {
    let server = serve(None, LimitSettings { max_request_bytes: 64 << 20, ..LimitSettings::default() }).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let mut request = start_request("many", None);
    let container = request.spec.as_mut().and_then(|spec| spec.container.as_mut()).expect("container");
    container.env = (0..100_000)
        .map(|_| proto::EnvironmentVariable {
            name: "SAME".to_owned(),
            source: Some(proto::environment_variable::Source::Value("x".to_owned())),
        })
        .collect();
    let refused = tokio::time::timeout(Duration::from_secs(20), client.start(request))
        .await
        .expect("refused in time")
        .expect_err("too many entries");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("container.env: must have at most 4096 entries, got 100000"),
        "{}",
        refused.message()
    );
    assert!(refused.message().len() < 200, "one message, not one per entry: {}", refused.message());
}

#[tokio::test]
async fn tcp_and_udp_on_one_port_start() {
    let server = serve(None, LimitSettings::default()).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let mut request = start_request("dns", None);
    let container = request.spec.as_mut().and_then(|spec| spec.container.as_mut()).expect("container");
    container.ports = ["tcp", "udp"]
        .into_iter()
        .map(|protocol| proto::PortMapping {
            container_port: 53,
            protocol: protocol.to_owned(),
            ..Default::default()
        })
        .collect();
    client.start(request).await.expect("TCP 53 and UDP 53");
}

#[tokio::test]
async fn describe_answers_the_spec_and_at_most_the_last_twenty_transitions_oldest_first() {
    let runtime = FakeRuntime::new();
    let server = serve_over(Arc::clone(&runtime), None, LimitSettings::default()).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let describe = |name: &str| proto::DescribeRequest { process_name: name.to_owned() };
    let unknown = client.describe(describe("nowhere")).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("`nowhere` does not exist"), "{}", unknown.message());
    let invalid = client.describe(describe("Not_A_Name")).await.expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);

    client.start(start_request("web", Some("site"))).await.expect("start");
    let table = crate::runtime::Runtime::table(&*runtime);
    let mut process = table.get("web").expect("web is in the table");
    for round in 0..30 {
        process.status = if round % 2 == 0 {
            crate::spec::ProcessStatus::Failed
        } else {
            crate::spec::ProcessStatus::Running
        };
        process.reason = Some(compact_str::format_compact!("round-{round}"));
        table.upsert(process.clone());
    }
    let detail = client.describe(describe("web")).await.expect("describe").into_inner();
    // As started, with the policy it runs under (the default, `always`) spelled out.
    let started = proto::ProcessSpec {
        restart_policy: proto::RestartPolicy::Always.into(),
        ..sleeper("web", Some("site"))
    };
    assert_eq!(detail.spec, Some(started), "the spec as started");
    assert_eq!(detail.process.expect("the info").reason.as_deref(), Some("round-29"));
    let reasons: Vec<String> =
        detail.history.iter().map(|entry| entry.reason.clone().unwrap_or_default()).collect();
    let expected: Vec<String> = (10..30).map(|round| format!("round-{round}")).collect();
    assert_eq!(reasons, expected, "the last 20, oldest first");
    let times: Vec<_> = detail
        .history
        .iter()
        .map(|entry| entry.time.expect("a time"))
        .map(|time| (time.seconds, time.nanos))
        .collect();
    assert!(times.is_sorted(), "{times:?}");
    assert_eq!(detail.history[19].status, proto::ProcessStatus::Running as i32);

    client.stop(proto::StopRequest { target: Some(Target::ProcessName("web".into())) }).await.expect("stop");
    let gone = client.describe(describe("web")).await.expect_err("stopped");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn logs_need_the_logs_scope_and_the_group_and_pass_bytes_through() {
    use crate::runtime::logs::LogSource;
    let (_directory, store, [admin, reader, ci]) =
        tokens([("root", "admin", None), ("reader", "read", None), ("ci", "logs", Some("ci-*"))]);
    let runtime = FakeRuntime::new();
    let server = serve_over(Arc::clone(&runtime), Some(store), LimitSettings::default()).await;
    let with = |token: &str| bearer_client(&server, token);
    let (mut admin, mut reader, mut ci) = (with(&admin), with(&reader), with(&ci));
    admin.start(start_request("ci-a", Some("ci-1"))).await.expect("start ci-a");
    admin.start(start_request("prod-x", Some("prod"))).await.expect("start prod-x");
    runtime.write_output("ci-a", LogSource::Stdout, b"out \x00\xff\n");
    runtime.write_output("ci-a", LogSource::Stderr, b"err\n");
    let logs =
        |name: &str| proto::LogsRequest { process_name: name.to_owned(), ..proto::LogsRequest::default() };
    async fn read_all(stream: tonic::Streaming<proto::LogChunk>) -> Vec<proto::LogChunk> {
        futures::TryStreamExt::try_collect(stream).await.expect("the whole stream")
    }

    let chunks = read_all(ci.logs(logs("ci-a")).await.expect("ci reads its own").into_inner()).await;
    let data: Vec<u8> = chunks.iter().flat_map(|chunk| chunk.data.iter().copied()).collect();
    assert_eq!(data, b"out \x00\xff\nerr\n", "bytes as written, both streams");
    assert_eq!(chunks[1].stream, proto::LogStream::Stderr as i32);
    assert!(chunks.iter().all(|chunk| chunk.timestamp.is_none()), "no times unless asked");

    let mut stamped = logs("ci-a");
    stamped.timestamps = true;
    stamped.stream = proto::LogStream::Stderr.into();
    let chunks = read_all(ci.logs(stamped).await.expect("stderr only").into_inner()).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].data.as_ref(), b"err\n");
    assert!(chunks[0].timestamp.is_some());

    let refused = reader.logs(logs("ci-a")).await.expect_err("read is not logs");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("lacks the `logs` scope"), "{}", refused.message());
    let out_of_reach = ci.logs(logs("prod-x")).await.expect_err("another group");
    let unknown = ci.logs(logs("nowhere")).await.expect_err("unknown");
    assert_same_as_unknown(&out_of_reach, &unknown, "prod-x", "nowhere");
    let mut bad = logs("Not_A_Name");
    bad.since =
        Some(proto::logs_request::Since::SinceDuration(prost_types::Duration { seconds: -5, nanos: 0 }));
    let invalid = admin.logs(bad).await.expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("process_name") && invalid.message().contains("since_duration"),
        "{}",
        invalid.message()
    );
}

#[tokio::test]
async fn a_shutdown_ends_open_watches_with_ok_and_serve_returns() {
    let runtime = FakeRuntime::new();
    runtime.table().upsert(crate::spec::ProcessInfo::of_tests(
        "a",
        Some("g"),
        crate::spec::ProcessStatus::Running,
    ));
    let server = serve_over(runtime, None, LimitSettings::default()).await;
    let mut client = ProcessServiceClient::new(server.channel.clone());
    let mut watches = Vec::new();
    for _ in 0..3 {
        let mut events = client.watch(proto::WatchRequest::default()).await.expect("watch").into_inner();
        let first = events.message().await.expect("stream").expect("an event");
        assert_eq!(first.process.map(|process| process.process_name).as_deref(), Some("a"));
        watches.push(events);
    }
    tokio::time::timeout(Duration::from_secs(10), server.shut_down())
        .await
        .expect("serve returned though watches were open");
    for mut events in watches {
        // What the watch had queued (its SYNCED), then the end: OK, not a broken connection.
        let rest = tokio::time::timeout(Duration::from_secs(5), async {
            let mut types = Vec::new();
            while let Some(event) = events.message().await? {
                types.push(event.r#type);
            }
            Ok::<_, tonic::Status>(types)
        })
        .await
        .expect("the watch ended");
        assert!(rest.is_ok(), "{rest:?}");
    }
}
