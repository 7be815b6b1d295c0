//! The secure API end to end, with the real binaries: tokens and scopes, group restrictions in
//! List, Watch, Start and Stop, revocation while the server runs, the rule that keeps an
//! unprotected server on loopback, Unix sockets, limits, and the audit log. No token value may
//! appear in anything the server writes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::requests::sleeper_spec;
use crate::common::watch::Watch;
use crate::common::{self, Server, TokenClient, create_token, token_client};
use hydroplane::proto;
use tonic::Code;
use tonic::transport::Channel;

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.url()).expect("url").connect().await.expect("connect to the server")
}

async fn client(server: &Server, token: Option<&str>) -> TokenClient {
    token_client(channel(server).await, token)
}

async fn start(
    client: &mut TokenClient,
    name: &str,
    group: Option<&str>,
) -> Result<proto::StartResponse, tonic::Status> {
    client
        .start(proto::StartRequest { spec: Some(sleeper_spec(name, group)), ..Default::default() })
        .await
        .map(tonic::Response::into_inner)
}

async fn names(client: &mut TokenClient) -> Result<Vec<String>, tonic::Status> {
    let listed = client.list(proto::ListRequest::default()).await?.into_inner();
    Ok(listed.processes.into_iter().map(|process| process.process_name).collect())
}

async fn stop(
    client: &mut TokenClient,
    target: proto::stop_request::Target,
) -> Result<Vec<String>, tonic::Status> {
    Ok(client.stop(proto::StopRequest { target: Some(target) }).await?.into_inner().stopped)
}

#[track_caller]
fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, words: &[&str]) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    for word in words {
        assert!(status.message().contains(word), "`{}` lacks `{word}`", status.message());
    }
}

/// Asserts that no token appears in the server's output.
#[track_caller]
fn assert_no_token_leaked(server: &Server, tokens: &[&str]) {
    let output = format!("{}\n{}", server.stdout(), server.stderr());
    for token in tokens {
        assert!(!output.contains(token), "a token appears in the server's output");
        // Even a recognisable part of one.
        assert!(!output.contains(&token[3..20]), "part of a token appears in the server's output");
    }
}

/// The services server reflection lists, asked with this token.
async fn reflected_services(server: &Server, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut request = tonic::Request::new(futures::stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    let mut responses = ServerReflectionClient::new(channel(server).await)
        .server_reflection_info(request)
        .await?
        .into_inner();
    let response = responses.message().await?.expect("a reflection response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|service| service.name).collect())
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test]
async fn tokens_scopes_and_groups_decide_what_a_caller_may_do() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let admin_token = create_token(&tokens_file, "root", "admin", None);
    let reader_token = create_token(&tokens_file, "reader", "read", None);
    let ci_token = create_token(&tokens_file, "ci", "read,write", Some("ci-*"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&tokens_file).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Every library's most verbose logging: no layer may print a token even then.
    let server = Server::start_with_env(
        &["--tokens-file", tokens_file.to_str().expect("utf-8")],
        &[("RUST_LOG", "trace")],
    );

    let mut anonymous = client(&server, None).await;
    assert_status(names(&mut anonymous).await, Code::Unauthenticated, &["authorization: Bearer"]);
    let mut stranger = client(&server, Some("hp_not-a-token-of-this-server-at-all-000000")).await;
    assert_status(names(&mut stranger).await, Code::Unauthenticated, &["not known"]);
    // Probes need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&server).await);
    let served =
        health.check(tonic_health::pb::HealthCheckRequest::default()).await.expect("health").into_inner();
    assert_eq!(served.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // Reflection needs `read`.
    assert_status(reflected_services(&server, None).await, Code::Unauthenticated, &[]);
    let services =
        reflected_services(&server, Some(&reader_token)).await.expect("reflection with a read token");
    assert!(services.iter().any(|service| service == "hydroplane.v1.ProcessService"), "{services:?}");

    let mut admin = client(&server, Some(&admin_token)).await;
    start(&mut admin, "ci-a", Some("ci-1")).await.expect("admin starts ci-a");
    start(&mut admin, "prod-x", Some("prod")).await.expect("admin starts prod-x");
    start(&mut admin, "loner", None).await.expect("admin starts loner");

    let mut reader = client(&server, Some(&reader_token)).await;
    assert_eq!(names(&mut reader).await.expect("reader lists"), ["ci-a", "loner", "prod-x"]);
    assert_status(
        start(&mut reader, "ci-b", Some("ci-1")).await,
        Code::PermissionDenied,
        &["`write`", "reader"],
    );
    assert_status(
        stop(&mut reader, proto::stop_request::Target::ProcessName("ci-a".into())).await,
        Code::PermissionDenied,
        &["`write`"],
    );

    let mut ci = client(&server, Some(&ci_token)).await;
    assert_eq!(names(&mut ci).await.expect("ci lists"), ["ci-a"]);
    let mut events =
        Watch::new(ci.watch(proto::WatchRequest::default()).await.expect("ci watches").into_inner());
    let snapshot = events.until_synced().await;
    let seen: Vec<String> =
        snapshot.into_iter().map(|event| event.process.expect("a process").process_name).collect();
    assert_eq!(seen, ["ci-a"], "the snapshot holds only the token's groups");
    // Out of reach is answered as unknown: the same code and message as for a name not there.
    for name in ["prod-x", "loner"] {
        assert_status(
            stop(&mut ci, proto::stop_request::Target::ProcessName(name.into())).await,
            Code::NotFound,
            &[&format!("process `{name}` does not exist")],
        );
    }
    assert_status(
        stop(&mut ci, proto::stop_request::Target::Group("prod".into())).await,
        Code::PermissionDenied,
        &["group `prod`"],
    );
    assert_status(start(&mut ci, "sneaky", Some("prod")).await, Code::PermissionDenied, &["group `prod`"]);
    assert_status(start(&mut ci, "sneaky", None).await, Code::PermissionDenied, &["no group"]);
    start(&mut ci, "ci-b", Some("ci-2")).await.expect("ci starts in its own groups");
    // Changes outside the token's groups never reach its watch: the next event is ci-b's.
    start(&mut admin, "prod-y", Some("prod")).await.expect("admin starts prod-y");
    stop(&mut ci, proto::stop_request::Target::ProcessName("ci-b".into())).await.expect("ci stops ci-b");
    let next = events.next().await;
    assert_eq!(next.process.expect("a process").process_name, "ci-b");
    assert_eq!(
        stop(&mut ci, proto::stop_request::Target::Group("ci-1".into())).await.expect("ci stops its group"),
        ["ci-a"]
    );

    let stderr = server.stderr();
    let audit: Vec<&str> = stderr.lines().filter(|line| line.contains("audit")).collect();
    assert!(
        audit.iter().any(|line| line.contains("caller=ci")
            && line.contains("call=Stop")
            && line.contains("prod-x")
            && line.contains("outcome=\"refused\"")),
        "no audit line for ci's refused Stop of prod-x:\n{}",
        audit.join("\n")
    );
    assert!(
        audit.iter().any(|line| line.contains("caller=root")
            && line.contains("ci-a")
            && line.contains("outcome=\"ok\"")),
        "no audit line for root's Start of ci-a:\n{}",
        audit.join("\n")
    );
    assert!(
        audit.iter().any(|line| line.contains("caller=-")
            && line.contains("Unauthenticated")
            && line.contains("127.0.0.1:")),
        "no audit line for the anonymous call, with its peer:\n{}",
        audit.join("\n")
    );
    assert_no_token_leaked(&server, &[&admin_token, &reader_token, &ci_token]);
}

#[tokio::test]
async fn a_revoked_token_is_refused_within_two_seconds() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let keep = create_token(&tokens_file, "keep", "read", None);
    let doomed = create_token(&tokens_file, "doomed", "read", None);
    let server = Server::start_with_args(&["--tokens-file", tokens_file.to_str().expect("utf-8")]);
    let mut doomed_client = client(&server, Some(&doomed)).await;
    names(&mut doomed_client).await.expect("the token works before it is revoked");

    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["token", "revoke", "--tokens-file"])
        .arg(&tokens_file)
        .args(["--name", "doomed"])
        .output()
        .expect("run hydroplane token revoke");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    common::eventually("the revoked token is refused", Duration::from_secs(2), async || {
        match names(&mut doomed_client).await {
            Err(status) if status.code() == Code::Unauthenticated => Ok(()),
            Err(status) => panic!("unexpected refusal: {status:?}"),
            Ok(names) => Err(names),
        }
    })
    .await;
    let mut keep_client = client(&server, Some(&keep)).await;
    names(&mut keep_client).await.expect("the other token still works");
    assert!(server.stderr().contains("reloaded the tokens file"), "{}", server.stderr());
    assert_no_token_leaked(&server, &[&keep, &doomed]);
}

/// Runs the server with these arguments only (no `-H 127.0.0.1`), expecting it to exit.
pub(crate) fn run_to_exit(args: &[&str]) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hydroplane");
    let started = Instant::now();
    let pid = child.id() as i32;
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            panic!("the server did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().expect("join").expect("wait for the server")
}

#[test]
fn an_unprotected_server_stays_on_loopback_unless_insecure() {
    let port = common::free_port().to_string();
    let output = run_to_exit(&["-H", "0.0.0.0", "-p", &port]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of explanation: {stderr}");
    assert!(lines[0].contains("neither TLS nor tokens") && lines[0].contains("--insecure"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing was served");

    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    create_token(&tokens_file, "ci", "read", None);
    let output =
        run_to_exit(&["-H", "0.0.0.0", "-p", &port, "--tokens-file", tokens_file.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("clear text"));

    let mut insecure = Server::start_with_args(&["-H", "0.0.0.0", "--insecure"]);
    common::wait_until("the server warns about --insecure", Duration::from_secs(10), || {
        insecure.stderr().contains("--insecure: 0.0.0.0")
    });
    assert_eq!(insecure.terminate(), Some(0));
}

#[tokio::test]
async fn a_unix_socket_is_for_the_owner_only_and_takes_tokens_too() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().expect("tempdir");
    let socket = directory.path().join("api.sock");
    let tokens_file = directory.path().join("tokens.yml");
    let token = create_token(&tokens_file, "local", "read,write", None);
    let socket_argument = format!("unix:{}", socket.display());
    let mut server = Server::start_with_args(&[
        "-H",
        &socket_argument,
        "--tokens-file",
        tokens_file.to_str().expect("utf-8"),
    ]);
    let announced = format!("hydroplane listening on {socket_argument}");
    common::eventually("the socket is announced", Duration::from_secs(10), async || {
        server.stdout().contains(&announced)
    })
    .await;
    let mode = std::fs::metadata(&socket).expect("the socket exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may connect");

    let path = socket.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect over the socket");
    let mut anonymous = token_client(channel.clone(), None);
    assert_status(names(&mut anonymous).await, Code::Unauthenticated, &[]);
    let mut local = token_client(channel, Some(&token));
    start(&mut local, "over-unix", None).await.expect("start over the socket");
    assert_eq!(names(&mut local).await.expect("list"), ["over-unix"]);
    assert!(server.stderr().contains("peer=unix (uid"), "the audit line names the peer's user");
    // An open connection would hold the graceful shutdown for its drain timeout.
    drop((anonymous, local));
    assert_eq!(server.terminate(), Some(0));
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

/// The server's resident memory, in MiB.
fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the server's status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_clean_status_codes_and_others_keep_being_served() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let flood_token = create_token(&tokens_file, "flood", "read,write", None);
    let calm_token = create_token(&tokens_file, "calm", "read", None);
    let config = format!(
        "auth:\n  tokens_file: {}\nlimits:\n  start_stop_per_second: 5\n  start_stop_burst: 5\n",
        tokens_file.display()
    );
    let server = Server::start_with_config(directory.path(), &config);
    let mut calm = client(&server, Some(&calm_token)).await;
    let mut flood = client(&server, Some(&flood_token)).await;

    // A 10 MB Start is refused by its size, and the server goes on.
    let mut huge = sleeper_spec("huge", None);
    huge.container.as_mut().expect("container").command.push("x".repeat(10 << 20));
    let refused = flood.start(proto::StartRequest { spec: Some(huge), ..Default::default() }).await;
    assert_status(refused, Code::ResourceExhausted, &["limits.max_request_bytes", "1048576"]);
    names(&mut calm).await.expect("served after the huge request");

    // Starts over the token's rate are refused with a hint to retry; the rest go through.
    let starts = (0..40).map(|index| {
        let mut flood = flood.clone();
        async move { start(&mut flood, &format!("rated-{index}"), None).await }
    });
    let outcomes = futures::future::join_all(starts).await;
    let refused: Vec<&tonic::Status> = outcomes.iter().filter_map(|outcome| outcome.as_ref().err()).collect();
    assert!(refused.len() >= 30, "only {} of 40 starts were over the rate", refused.len());
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("retry in"), "{}", status.message());
    }

    // 5,000 unary calls at once over 10 connections: each is served or shed, cleanly.
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(channel(&server).await);
    }
    let calls = (0..5000).map(|index| {
        let mut client = token_client(channels[index % channels.len()].clone(), Some(&flood_token));
        async move { client.list(proto::ListRequest::default()).await.map(|_| ()) }
    });
    let outcomes = futures::future::join_all(calls).await;
    let mut served = 0;
    for outcome in &outcomes {
        match outcome {
            Ok(()) => served += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    assert!(served > 0, "no call of the 5,000 was served");
    eprintln!("5000 concurrent Lists: {served} served, {} shed", 5000 - served);

    // 2,000 Watch streams from one token: its share opens, the rest are refused at once.
    let watch_channel = channel(&server).await;
    let watches = (0..2000).map(|_| {
        let mut client = token_client(watch_channel.clone(), Some(&flood_token));
        async move { client.watch(proto::WatchRequest::default()).await.map(tonic::Response::into_inner) }
    });
    let watches = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(watches))
        .await
        .expect("every Watch call is answered");
    let mut open = Vec::new();
    for watch in watches {
        match watch {
            Ok(stream) => open.push(stream),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("limits.max_watches_per_token"), "{}", status.message());
            }
        }
    }
    assert_eq!(open.len(), 256, "the default per-token cap of open Watch streams");
    // Another token is still served, Watch included.
    names(&mut calm).await.expect("the calm token lists during the flood");
    let mut calm_watch =
        calm.watch(proto::WatchRequest::default()).await.expect("the calm token watches").into_inner();
    let first =
        tokio::time::timeout(Duration::from_secs(30), calm_watch.message()).await.expect("an event in time");
    assert!(first.expect("the stream").is_some());
    let memory = rss_mib(server.pid());
    eprintln!("server RSS with 256 + 1 open watches after the floods: {memory:.1} MiB");
    assert!(memory < 512.0, "the server's memory grew to {memory:.1} MiB");
    drop(open);
    assert_no_token_leaked(&server, &[&flood_token, &calm_token]);
}

/// A TLS channel to the server trusting `ca` (PEM), with a client certificate when given.
async fn tls_channel(
    server: &Server,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{}", server.address)).expect("url").tls_config(tls)?.connect().await
}

/// Whether a List through this TLS setup succeeds (a failed handshake is a failed call).
async fn tls_list_works(server: &Server, ca: &str, identity: Option<(&str, &str)>, token: &str) -> bool {
    match tls_channel(server, ca, identity).await {
        Ok(channel) => names(&mut token_client(channel, Some(token))).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn tls_serves_trusting_clients_and_rotates_without_a_restart() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let token = create_token(&tokens_file, "tls", "read", None);
    let first_ca = common::certs::TestCa::new("first CA");
    let (cert_file, key_file) = first_ca.write_server_files(directory.path(), "server");
    let config = format!(
        "auth:\n  tokens_file: {}\ntls:\n  cert_file: {}\n  key_file: {}\n",
        tokens_file.display(),
        cert_file.display(),
        key_file.display()
    );
    let server = Server::start_with_config(directory.path(), &config);

    assert!(
        tls_list_works(&server, &first_ca.pem(), None, &token).await,
        "a client trusting the CA is served"
    );
    let stranger_ca = common::certs::TestCa::new("stranger CA");
    assert!(
        !tls_list_works(&server, &stranger_ca.pem(), None, &token).await,
        "a client trusting another CA fails"
    );
    let mut plain = client(&server, Some(&token)).await;
    assert!(names(&mut plain).await.is_err(), "plain text is not served on a TLS port");

    // Rotation: a certificate of a second CA replaces the first on disk, and new connections
    // get it without a restart.
    let second_ca = common::certs::TestCa::new("second CA");
    let reloads_before = server.stderr().matches("reloaded the TLS").count();
    second_ca.write_server_files(directory.path(), "server");
    // The server says when it has the new pair (never a half-written one: a key that does not
    // match its certificate is refused); from then on, new connections get it.
    common::eventually("the server reloads the TLS certificate", Duration::from_secs(15), async || {
        server.stderr().matches("reloaded the TLS").count() > reloads_before
    })
    .await;
    assert!(
        tls_list_works(&server, &second_ca.pem(), None, &token).await,
        "the rotated certificate is served:\n{}",
        server.stderr()
    );
    assert!(!tls_list_works(&server, &first_ca.pem(), None, &token).await, "the old certificate is gone");
    assert!(server.stderr().contains("reloaded the TLS"), "{}", server.stderr());
    assert_no_token_leaked(&server, &[&token]);
}

#[tokio::test]
async fn with_a_client_ca_a_client_certificate_is_mandatory() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let token = create_token(&tokens_file, "mtls", "read", None);
    let server_ca = common::certs::TestCa::new("server CA");
    let client_ca = common::certs::TestCa::new("client CA");
    let (cert_file, key_file) = server_ca.write_server_files(directory.path(), "server");
    let client_ca_file = client_ca.write_ca_file(directory.path(), "client-ca.pem");
    let server = Server::start_with_args(&[
        "--tls-cert",
        cert_file.to_str().expect("utf-8"),
        "--tls-key",
        key_file.to_str().expect("utf-8"),
        "--tls-client-ca",
        client_ca_file.to_str().expect("utf-8"),
        "--tokens-file",
        tokens_file.to_str().expect("utf-8"),
    ]);
    assert!(!tls_list_works(&server, &server_ca.pem(), None, &token).await, "no client certificate, no call");
    let (other_cert, other_key) = server_ca.client_cert("impostor");
    assert!(
        !tls_list_works(&server, &server_ca.pem(), Some((&other_cert, &other_key)), &token).await,
        "a certificate of another CA is refused"
    );
    let (cert, key) = client_ca.client_cert("ci-runner");
    assert!(
        tls_list_works(&server, &server_ca.pem(), Some((&cert, &key)), &token).await,
        "a good certificate is served"
    );
    // The certificate is on top of the token, not instead of it.
    let channel = tls_channel(&server, &server_ca.pem(), Some((&cert, &key))).await.expect("connect");
    assert_status(names(&mut token_client(channel, None)).await, Code::Unauthenticated, &[]);

    // hpctl and the Python client present certificates too.
    let https = format!("https://{}", server.address);
    let ca_file = server_ca.write_ca_file(directory.path(), "server-ca.pem");
    let (client_cert_file, client_key_file) = client_ca.write_client_files(directory.path(), "client");
    let ca = ca_file.to_str().expect("utf-8");
    let (client_cert, client_key) =
        (client_cert_file.to_str().expect("utf-8"), client_key_file.to_str().expect("utf-8"));
    let without = hpctl(&["-s", &https, "--ca-cert", ca, "--token", &token, "list"], &[]);
    assert_eq!(without.status.code(), Some(1), "no client certificate, no call");
    let with = hpctl(
        &[
            "-s",
            &https,
            "--ca-cert",
            ca,
            "--token",
            &token,
            "--client-cert",
            client_cert,
            "--client-key",
            client_key,
            "list",
        ],
        &[],
    );
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let python = Command::new(common::test_python())
        .arg(common::repo_root().join("examples/python/hydroplane_example.py"))
        .args(["--name", "from-python"])
        .env("HYDROPLANE_SERVER", &https)
        .env("HYDROPLANE_CA_CERT", ca)
        .env("HYDROPLANE_CLIENT_CERT", client_cert)
        .env("HYDROPLANE_CLIENT_KEY", client_key)
        .env("HYDROPLANE_TOKEN", &token)
        .output()
        .expect("run the Python example");
    // A `read` token lists but cannot start: the call reached the server through mTLS.
    let stderr = String::from_utf8_lossy(&python.stderr);
    assert!(stderr.contains("PERMISSION_DENIED") && stderr.contains("`write`"), "{stderr}");
    assert_no_token_leaked(&server, &[&token]);
}

/// Runs hpctl with these arguments and environment (no HYDROPLANE_* from the test's own).
fn hpctl(args: &[&str], environment: &[(&str, &str)]) -> std::process::Output {
    Command::new(common::hpctl_binary())
        .args(args)
        .env_remove("HYDROPLANE_SERVER")
        .env_remove("HYDROPLANE_TOKEN")
        .env_remove("HYDROPLANE_CA_CERT")
        .envs(environment.iter().copied())
        .output()
        .expect("run hpctl")
}

#[test]
fn hpctl_and_the_python_client_use_tls_tokens_and_unix_sockets() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let token = create_token(&tokens_file, "clients", "read,write,logs", None);
    let ca = common::certs::TestCa::new("clients CA");
    let ca_file = ca.write_ca_file(directory.path(), "ca.pem");
    let (cert_file, key_file) = ca.write_server_files(directory.path(), "server");
    let socket = directory.path().join("api.sock");
    let socket_url = format!("unix:{}", socket.display());
    let server = Server::start_with_args(&[
        "-H",
        &socket_url,
        "--tls-cert",
        cert_file.to_str().expect("utf-8"),
        "--tls-key",
        key_file.to_str().expect("utf-8"),
        "--tokens-file",
        tokens_file.to_str().expect("utf-8"),
    ]);
    let https = format!("https://{}", server.address);
    let ca_path = ca_file.to_str().expect("utf-8");

    // Flags after the command, and the token from the environment.
    let listed = hpctl(&["list", "--server", &https, "--ca-cert", ca_path], &[("HYDROPLANE_TOKEN", &token)]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
    // Flags before the command, and the CA from the environment.
    let listed = hpctl(&["--token", &token, "-s", &https, "list"], &[("HYDROPLANE_CA_CERT", ca_path)]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));

    let untrusting = hpctl(&["--token", &token, "-s", &https, "list"], &[]);
    assert_eq!(untrusting.status.code(), Some(1));
    let message = String::from_utf8_lossy(&untrusting.stderr);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("certificate"), "{message}");

    let tokenless = hpctl(&["-s", &https, "--ca-cert", ca_path, "list"], &[]);
    assert_eq!(tokenless.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&tokenless.stderr).contains("--token"));

    common::wait_until("the socket exists", Duration::from_secs(10), || socket.exists());
    let over_socket = hpctl(&["-s", &socket_url, "--token", &token, "list"], &[]);
    assert!(over_socket.status.success(), "{}", String::from_utf8_lossy(&over_socket.stderr));

    for (server_url, ca) in [(https.as_str(), Some(ca_path)), (socket_url.as_str(), None)] {
        let mut python = Command::new(common::test_python());
        python
            .arg(common::repo_root().join("examples/python/hydroplane_example.py"))
            .args(["--name", "from-python"])
            .env("HYDROPLANE_SERVER", server_url)
            .env("HYDROPLANE_TOKEN", &token);
        if let Some(ca) = ca {
            python.env("HYDROPLANE_CA_CERT", ca);
        }
        let output = python.output().expect("run the Python example");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the example failed against {server_url}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
        assert!(!stdout.contains(&token) && !String::from_utf8_lossy(&output.stderr).contains(&token));
    }
    for output in [&listed, &untrusting, &tokenless, &over_socket] {
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!text.contains(&token), "hpctl printed the token");
    }
    assert_no_token_leaked(&server, &[&token]);
}
