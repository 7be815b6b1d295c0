//! What a real network adds, against the real server: peers that connect and never speak (idle
//! connections on every listener, caps in total and per peer that refuse the newcomer and never
//! the established caller), and trust withdrawn while streams are open (a revoked token's Watch
//! and followed Logs, a client certificate the rotated client CA no longer trusts).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::requests::sleeper_spec;
use crate::common::watch::Watch;
use crate::common::{self, Server, TokenClient, create_token, token_client};
use hydroplane::proto;

/// How long a test waits for something the server does on a timer of a second or two.
const PATIENCE: Duration = Duration::from_secs(15);

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.url()).expect("url").connect().await.expect("connect to the server")
}

/// A TCP connection to `address` from the loopback address `from` (any of 127.0.0.0/8 is this
/// machine, and each is another peer to the server).
async fn connect_from(from: &str, address: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("address")).expect("bind a loopback address");
    socket.connect(address).await.expect("TCP connect")
}

/// Waits until the server closes a connection that sent nothing, and returns when it did.
async fn closed_within(connection: &mut TcpStream, limit: Duration) -> Instant {
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    loop {
        match tokio::time::timeout_at((started + limit).into(), connection.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return Instant::now(),
            // A server that speaks first (HTTP/2 SETTINGS) has not closed yet.
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection is still open after {limit:?}"),
        }
    }
}

/// Whether the server closed the connection at once (a refused newcomer).
async fn refused_at_once(connection: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connection.read(&mut buffer)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn start(client: &mut TokenClient, name: &str) -> proto::StartResponse {
    client
        .start(proto::StartRequest { spec: Some(sleeper_spec(name, None)), ..Default::default() })
        .await
        .expect("start")
        .into_inner()
}

#[tokio::test]
async fn idle_connections_are_closed_on_every_listener_but_a_quiet_watch_is_not() {
    let directory = tempfile::tempdir().expect("tempdir");
    let socket = directory.path().join("api.sock");
    let config = directory.path().join("hydroplane.yml");
    std::fs::write(&config, "limits:\n  idle_timeout_seconds: 1\nmetrics:\n  listen: 127.0.0.1:0\n")
        .expect("write the settings");
    let unix = format!("unix:{}", socket.display());
    let server = Server::start_with_args(&["-c", config.to_str().expect("utf-8"), "-H", &unix]);
    common::eventually("every listener is announced", PATIENCE, async || {
        server.stdout().contains("metrics on") && server.stdout().contains(&unix)
    })
    .await;
    let grpc: SocketAddr = server.address.parse().expect("the gRPC address");
    let metrics: SocketAddr = server.metrics_address().await.parse().expect("the metrics address");

    // A Watch open before the idle connections and quiet while they are closed.
    let mut watcher = token_client(channel(&server).await, None);
    let mut watch =
        Watch::new(watcher.watch(proto::WatchRequest::default()).await.expect("watch").into_inner());
    watch.until_synced().await;

    let opened = Instant::now();
    let mut silent_grpc = TcpStream::connect(grpc).await.expect("connect");
    let mut silent_metrics = TcpStream::connect(metrics).await.expect("connect");
    let mut silent_unix = tokio::net::UnixStream::connect(&socket).await.expect("connect");
    for (listener, closed) in [
        ("gRPC", closed_within(&mut silent_grpc, PATIENCE).await),
        ("metrics", closed_within(&mut silent_metrics, PATIENCE).await),
    ] {
        let waited = closed.duration_since(opened);
        assert!(waited >= Duration::from_millis(900), "the {listener} connection closed after {waited:?}");
    }
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            match silent_unix.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the Unix socket connection is still open");

    // More than the idle timeout has passed with the Watch quiet: it is still served.
    let mut client = token_client(channel(&server).await, None);
    start(&mut client, "after-idle").await;
    let event = watch.next().await;
    assert_eq!(event.process.expect("a process").process_name, "after-idle");
}

#[tokio::test]
async fn the_caps_refuse_the_newcomer_never_the_established_caller() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(
        directory.path(),
        "limits:\n  max_connections: 8\n  max_connections_per_peer: 4\n",
    );
    let grpc: SocketAddr = server.address.parse().expect("the gRPC address");
    let mut established = token_client(channel(&server).await, None);
    established.list(proto::ListRequest::default()).await.expect("the first caller is served");

    // One peer, 127.0.0.2, takes its four connections; its fifth is closed at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.2", grpc).await);
    }
    let mut fifth = connect_from("127.0.0.2", grpc).await;
    assert!(refused_at_once(&mut fifth).await, "a peer's connection beyond its cap is refused");
    // Another peer fills the server's total (1 + 4 + 3 = 8); the next newcomer is refused.
    for _ in 0..3 {
        held.push(connect_from("127.0.0.3", grpc).await);
    }
    let mut ninth = connect_from("127.0.0.4", grpc).await;
    assert!(refused_at_once(&mut ninth).await, "a connection beyond the total is refused");
    for connection in &mut held {
        assert!(!refused_at_once(connection).await, "a connection within the caps stays open");
    }
    // The established caller is served all the while.
    established.list(proto::ListRequest::default()).await.expect("the established caller is served");
    assert!(server.stderr().contains("refusing new connections"), "{}", server.stderr());

    // A closed connection gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut again = connect_from("127.0.0.4", grpc).await;
        if !refused_at_once(&mut again).await {
            break;
        }
        assert!(Instant::now() < deadline, "no connection is accepted after one closed");
    }
}

#[tokio::test]
async fn a_revoked_tokens_open_watch_and_followed_logs_end_unauthenticated() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let admin = create_token(&tokens_file, "admin", "admin", None);
    let doomed = create_token(&tokens_file, "doomed", "read,logs", None);
    let keep = create_token(&tokens_file, "keep", "read", None);
    let server = Server::start_with_args(&["--tokens-file", tokens_file.to_str().expect("utf-8")]);
    let mut admin = token_client(channel(&server).await, Some(&admin));
    start(&mut admin, "quiet").await;

    let mut doomed_client = token_client(channel(&server).await, Some(&doomed));
    let mut watch = doomed_client.watch(proto::WatchRequest::default()).await.expect("watch").into_inner();
    let mut logs = doomed_client
        .logs(proto::LogsRequest { process_name: "quiet".into(), follow: true, ..Default::default() })
        .await
        .expect("logs")
        .into_inner();
    let mut kept_client = token_client(channel(&server).await, Some(&keep));
    let mut kept =
        Watch::new(kept_client.watch(proto::WatchRequest::default()).await.expect("watch").into_inner());
    kept.until_synced().await;
    // Everything the Watch has to say before the revocation.
    loop {
        let event = watch.message().await.expect("an event").expect("the stream is open");
        if event.r#type() == proto::WatchEventType::Synced {
            break;
        }
    }

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["token", "revoke", "--tokens-file"])
        .arg(&tokens_file)
        .args(["--name", "doomed"])
        .output()
        .expect("run hydroplane token revoke");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let revoked = Instant::now();

    // Until then both streams may still carry news (`quiet` turning RUNNING, say): read past it.
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the Watch ends");
    assert_eq!(ended.expect_err("ended with a status").code(), Code::Unauthenticated);
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match logs.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the followed Logs end");
    assert_eq!(ended.expect_err("ended with a status").code(), Code::Unauthenticated);
    eprintln!("the revoked token's streams ended {:?} after the revocation was written", revoked.elapsed());
    // The server's stderr is read by another thread: the line may not be in yet.
    common::eventually("the server logs that it ended the streams", PATIENCE, async || {
        let stderr = server.stderr();
        if stderr.contains("ended the open streams of revoked tokens") { Ok(()) } else { Err(stderr) }
    })
    .await;

    // Another token's stream goes on (past any news of `quiet`).
    start(&mut admin, "later").await;
    kept.until_process("later", "the later process is added", |kind, _| kind == proto::WatchEventType::Added)
        .await;
}

#[tokio::test]
async fn a_connection_whose_client_certificate_is_no_longer_trusted_is_closed() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server_ca = common::certs::TestCa::new("server CA");
    let old_client_ca = common::certs::TestCa::new("old client CA");
    let new_client_ca = common::certs::TestCa::new("new client CA");
    let (cert_file, key_file) = server_ca.write_server_files(directory.path(), "server");
    let client_ca_file = old_client_ca.write_ca_file(directory.path(), "client-ca.pem");
    let server = Server::start_with_args(&[
        "--tls-cert",
        cert_file.to_str().expect("utf-8"),
        "--tls-key",
        key_file.to_str().expect("utf-8"),
        "--tls-client-ca",
        client_ca_file.to_str().expect("utf-8"),
    ]);
    let tls_channel = |identity: (String, String)| {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(server_ca.pem()))
            .domain_name("127.0.0.1")
            .identity(tonic::transport::Identity::from_pem(identity.0, identity.1));
        let url = format!("https://{}", server.address);
        async move { Channel::from_shared(url).expect("url").tls_config(tls).expect("tls").connect().await }
    };
    let old = tls_channel(old_client_ca.client_cert("old-runner"))
        .await
        .expect("connect with the old CA's certificate");
    let mut old_client = token_client(old, None);
    let mut watch = old_client.watch(proto::WatchRequest::default()).await.expect("watch").into_inner();
    loop {
        let event = watch.message().await.expect("an event").expect("the stream is open");
        if event.r#type() == proto::WatchEventType::Synced {
            break;
        }
    }

    // The client CA is rotated: the old CA's certificates are no longer trusted.
    let reloads_before = server.stderr().matches("reloaded the TLS").count();
    new_client_ca.write_ca_file(directory.path(), "client-ca.pem");
    common::eventually("the server reloads the TLS files", PATIENCE, async || {
        server.stderr().matches("reloaded the TLS").count() > reloads_before
    })
    .await;
    let ended = tokio::time::timeout(PATIENCE, watch.message()).await.expect("the Watch ends");
    assert!(ended.is_err(), "the stream of an untrusted connection ends with an error: {ended:?}");
    assert!(
        server.stderr().contains("client certificate the new client CA does not trust"),
        "{}",
        server.stderr()
    );

    let new = tls_channel(new_client_ca.client_cert("new-runner"))
        .await
        .expect("connect with the new CA's certificate");
    token_client(new, None).list(proto::ListRequest::default()).await.expect("a trusted client is served");
}

/// A channel to the server whose connections come from the loopback address `from`.
async fn channel_from(server: &Server, from: &'static str) -> Channel {
    let address: SocketAddr = server.address.parse().expect("the gRPC address");
    tonic::transport::Endpoint::from_shared(server.url())
        .expect("url")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connect_from(from, address).await))
        }))
        .await
        .expect("connect")
}

#[tokio::test]
async fn without_tokens_one_peer_holding_its_streams_leaves_another_able_to_watch() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(directory.path(), "limits:\n  max_watches_per_token: 2\n");
    let mut greedy = token_client(channel_from(&server, "127.0.0.2").await, None);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(greedy.watch(proto::WatchRequest::default()).await.expect("within the peer's share"));
    }
    let refused = greedy.watch(proto::WatchRequest::default()).await.expect_err("beyond the peer's share");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("127.0.0.2"), "the refusal names the peer: {}", refused.message());

    let mut other = token_client(channel_from(&server, "127.0.0.3").await, None);
    let mut watch = Watch::new(
        other.watch(proto::WatchRequest::default()).await.expect("another peer watches").into_inner(),
    );
    watch.until_synced().await;
    drop(held);
}

#[tokio::test]
async fn a_tokens_file_others_could_read_or_change_is_refused_at_start_and_on_reload() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let keep = create_token(&tokens_file, "keep", "read", None);
    let tokens_path = tokens_file.to_str().expect("utf-8");
    let chmod = |mode: u32| {
        std::fs::set_permissions(&tokens_file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };

    for mode in [0o644, 0o606, 0o620] {
        chmod(mode);
        let output =
            crate::secure_api::run_to_exit(&["-H", "127.0.0.1", "-p", "0", "--tokens-file", tokens_path]);
        assert_eq!(output.status.code(), Some(1), "mode {mode:o}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(tokens_path) && stderr.contains(&format!("{mode:04o}")),
            "the refusal names the file and the mode: {stderr}"
        );
        assert!(output.stdout.is_empty(), "nothing was served");
    }

    chmod(0o600);
    let server = Server::start_with_args(&["--tokens-file", tokens_path]);
    let mut kept = token_client(channel(&server).await, Some(&keep));
    kept.list(proto::ListRequest::default()).await.expect("the token works");

    // Loosened while the server runs, and then changed by someone who could: refused on
    // reload, with an ERROR line, and the last good tokens stay.
    let copy = directory.path().join("intruder.yml");
    std::fs::copy(&tokens_file, &copy).expect("copy");
    let intruder = create_token(&copy, "intruder", "admin", None);
    chmod(0o666);
    std::fs::write(&tokens_file, std::fs::read(&copy).expect("read")).expect("rewrite");
    common::eventually("the server refuses the loosened tokens file", PATIENCE, async || {
        server
            .stderr()
            .lines()
            .any(|line| line.contains("ERROR") && line.contains("0666") && line.contains(tokens_path))
    })
    .await;
    let mut stranger = token_client(channel(&server).await, Some(&intruder));
    let refused = stranger.list(proto::ListRequest::default()).await.expect_err("not a token of the server");
    assert_eq!(refused.code(), Code::Unauthenticated);
    kept.list(proto::ListRequest::default()).await.expect("the last good tokens are kept");
}

#[test]
fn an_expired_server_certificate_is_served_with_an_error_line_at_start() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = common::certs::TestCa::new("server CA");
    let (cert_file, key_file) = ca.write_expired_server_files(directory.path(), "server");
    let cert = cert_file.to_str().expect("utf-8");
    let server =
        Server::start_with_args(&["--tls-cert", cert, "--tls-key", key_file.to_str().expect("utf-8")]);
    common::wait_until("the server says the certificate is not valid", PATIENCE, || {
        server
            .stderr()
            .lines()
            .any(|line| line.contains("ERROR") && line.contains(cert) && line.contains("not valid now"))
    });
}

/// Whether any string in the JSON value is `wanted`.
fn holds_string(value: &serde_json::Value, wanted: &str) -> bool {
    match value {
        serde_json::Value::String(text) => text == wanted,
        serde_json::Value::Array(items) => items.iter().any(|item| holds_string(item, wanted)),
        serde_json::Value::Object(fields) => fields.values().any(|field| holds_string(field, wanted)),
        _ => false,
    }
}

#[tokio::test]
async fn json_audit_lines_hold_the_target_once_quoted() {
    let server = Server::start_with_args(&["--log-format", "json"]);
    let mut client = token_client(channel(&server).await, None);
    let unknown = client.describe(proto::DescribeRequest { process_name: "nowhere".into() }).await;
    assert_eq!(unknown.expect_err("unknown").code(), Code::NotFound);
    let mut lines = Vec::new();
    common::eventually("the audit line of the Describe", PATIENCE, async || {
        lines = server
            .stderr()
            .lines()
            .filter(|line| line.contains("audit") && line.contains("nowhere"))
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("one JSON object per line"))
            .collect();
        !lines.is_empty()
    })
    .await;
    assert!(lines.iter().any(|line| holds_string(line, "process nowhere")), "{lines:?}");
    assert!(!lines.iter().any(|line| holds_string(line, "\"process nowhere\"")), "quoted twice: {lines:?}");
}
