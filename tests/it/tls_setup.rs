//! TLS as a person sets it up: `hydroplane tls` makes the files, the README's recipe gives a
//! server that hpctl and the Python example reach with a token, and every TLS failure a person
//! can cause is one sentence on each side, never a rustls Debug value.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, date_time_ymd};

use crate::common::{self, Server, free_port};
use crate::readme_blocks::{run_script, server_block};

/// Runs `hydroplane tls ...` in `directory`.
fn tls(directory: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .arg("tls")
        .args(args)
        .current_dir(directory)
        .output()
        .expect("run hydroplane tls")
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A certificate file, parsed.
fn parse(path: &Path) -> x509_parser::certificate::X509Certificate<'static> {
    let pem = std::fs::read(path).expect("read the certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let der: &'static [u8] = Box::leak(pem.contents.into_boxed_slice());
    x509_parser::parse_x509_certificate(der).expect("a certificate").1
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn tls_commands_make_a_ca_and_leaves_with_the_right_usages_and_modes() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| directory.path().join(name);
    assert_success(&tls(directory.path(), &["ca", "create"]));
    assert_success(&tls(directory.path(), &["cert", "create", "--server", "--san", "h.example,10.1.2.3"]));
    assert_success(&tls(directory.path(), &["cert", "create", "--client", "--name", "ci"]));
    for (file, expected) in [
        ("ca.pem", 0o644),
        ("ca-key.pem", 0o600),
        ("server-cert.pem", 0o644),
        ("server-key.pem", 0o600),
        ("ci-cert.pem", 0o644),
        ("ci-key.pem", 0o600),
    ] {
        assert_eq!(mode(&path(file)), expected, "{file}");
    }

    let ca = parse(&path("ca.pem"));
    assert!(ca.is_ca());
    let usage = ca.key_usage().expect("parse").expect("a key usage").value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    for (file, server) in [("server-cert.pem", true), ("ci-cert.pem", false)] {
        let leaf = parse(&path(file));
        assert!(!leaf.is_ca(), "{file}");
        let constraints = leaf.basic_constraints().expect("parse").expect("basic constraints present");
        assert!(!constraints.value.ca, "{file}: CA:FALSE written out");
        assert_eq!(leaf.issuer(), ca.subject(), "{file}");
        assert!(leaf.verify_signature(Some(ca.public_key())).is_ok(), "{file} is signed by the CA");
        let usage = leaf.key_usage().expect("parse").expect("a key usage").value;
        assert!(usage.digital_signature() && !usage.key_cert_sign(), "{file}");
        let extended = leaf.extended_key_usage().expect("parse").expect("an extended key usage").value;
        assert_eq!((extended.server_auth, extended.client_auth), (server, !server), "{file}");
        let days = (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp()) / 86_400;
        assert_eq!(days, 365, "{file}");
    }
    let server = parse(&path("server-cert.pem"));
    let names = server.subject_alternative_name().expect("parse").expect("names").value;
    let names: Vec<String> = names.general_names.iter().map(|name| name.to_string()).collect();
    assert_eq!(names, ["DNSName(h.example)", "IPAddress(0a:01:02:03)"]);

    // Nothing is replaced without --force, and nothing is written then.
    let before = std::fs::read(path("ca-key.pem")).expect("read");
    let output = tls(directory.path(), &["ca", "create"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "error: ca.pem and ca-key.pem already exist: give --force to replace"
    );
    assert_eq!(std::fs::read(path("ca-key.pem")).expect("read"), before);
    assert_success(&tls(directory.path(), &["ca", "create", "--force"]));
    assert_ne!(std::fs::read(path("ca-key.pem")).expect("read"), before);
    assert_eq!(mode(&path("ca-key.pem")), 0o600);

    // Without a CA: one line saying how to make one.
    let empty = tempfile::tempdir().expect("tempdir");
    let output = tls(empty.path(), &["cert", "create", "--server"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(
            "error: cannot read the CA certificate ca.pem (make one with `hydroplane tls ca create`"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn the_readme_recipe_gives_a_server_hpctl_and_the_python_example_reach() {
    let block = server_block("Securing the API");
    let directory = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let replace = [
        ("50051".to_owned(), port.clone()),
        ("hydroplane --tls-cert".to_owned(), format!("hydroplane -p {port} --tls-cert")),
    ];
    let python = common::test_python();
    let example = common::repo_root().join("examples/python/hydroplane_example.py");
    let after =
        format!("'{}' '{}' --name from-python\nhpctl list -o name\n", python.display(), example.display());
    let ran = run_script(&block, directory.path(), &replace, &after, &[]);
    assert_eq!(ran.code, Some(0), "the recipe failed:\nstdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.starts_with("wrote ca.pem"), "{}", ran.stdout);
    assert!(ran.stdout.contains("\n[]\n"), "hpctl list over TLS with the token: {}", ran.stdout);
    assert!(ran.stdout.contains("\nok\n"), "the Python example: {}", ran.stdout);
    assert!(ran.stderr.contains("tls=true tokens=true"), "{}", ran.stderr);
}

/// A server with this certificate and key (and client CA, for mTLS).
fn tls_server(directory: &Path, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Server {
    let _ = directory;
    let mut args =
        vec!["--tls-cert", cert.to_str().expect("utf-8"), "--tls-key", key.to_str().expect("utf-8")];
    if let Some(client_ca) = client_ca {
        args.extend(["--tls-client-ca", client_ca.to_str().expect("utf-8")]);
    }
    Server::start_with_args(&args)
}

/// `hpctl list` against `server` over https with these extra flags: its one error line.
#[track_caller]
fn refused(server: &Server, host: &str, flags: &[&str]) -> String {
    let port = server.address.rsplit(':').next().expect("a port");
    let output = Command::new(common::hpctl_binary())
        .args(["list", "-s", &format!("https://{host}:{port}")])
        .args(flags)
        .output()
        .expect("run hpctl");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for raw in ["Other(", "OtherError", "CertificateError", "AlertReceived", "InvalidCertificate"] {
        assert!(!stderr.contains(raw), "a rustls value in {stderr}");
    }
    stderr
}

/// Waits until the server logged a failed handshake saying `words`, without rustls values.
#[track_caller]
fn assert_logged(server: &Server, words: &str) {
    common::wait_until(&format!("the server logs `{words}`"), Duration::from_secs(10), || {
        server.stderr().lines().any(|line| line.contains("TLS handshake failed") && line.contains(words))
    });
    for line in server.stderr().lines().filter(|line| line.contains("TLS handshake failed")) {
        assert!(!line.contains("Other(") && !line.contains("OtherError"), "{line}");
    }
}

/// A self-signed certificate that is its own CA, as `openssl req -x509 -subj /CN=localhost
/// -addext subjectAltName=...` makes: (certificate, key) files in `directory`.
fn openssl_style_self_signed(directory: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    let (cert_path, key_path) = (directory.join("self.pem"), directory.join("self-key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (cert_path, key_path)
}

#[test]
fn a_self_signed_ca_as_the_servers_certificate_is_one_line_on_each_side() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (cert, key) = openssl_style_self_signed(directory.path());
    let server = tls_server(directory.path(), &cert, &key, None);
    assert!(
        server.stderr().contains("is a CA certificate (CA:TRUE)"),
        "the start-up warning: {}",
        server.stderr()
    );
    let error = refused(&server, "127.0.0.1", &["--ca-cert", cert.to_str().expect("utf-8")]);
    assert!(
        error.contains(": the server's certificate is a CA certificate (CA:TRUE), which TLS clients refuse as a server's own (give the server a certificate signed by a CA, as `hydroplane tls cert create --server` makes, and trust that CA with --ca-cert)"),
        "{error}"
    );
    assert_logged(&server, "the client does not trust this server's certificate");
}

#[test]
fn unknown_ca_expired_and_wrong_name_are_one_sentence_each() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| directory.path().join(name);
    let path_text = |name: &str| path(name).to_str().expect("utf-8").to_owned();
    assert_success(&tls(directory.path(), &["ca", "create"]));
    assert_success(&tls(directory.path(), &["cert", "create", "--server", "--san", "only.example"]));
    let other = tempfile::tempdir().expect("tempdir");
    assert_success(&tls(other.path(), &["ca", "create"]));
    let other_ca = other.path().join("ca.pem");

    let server = tls_server(directory.path(), &path("server-cert.pem"), &path("server-key.pem"), None);
    let error = refused(&server, "127.0.0.1", &["--ca-cert", other_ca.to_str().expect("utf-8")]);
    assert!(
        error.contains(": the server's certificate is not signed by a CA this client trusts (does --ca-cert name the CA that signed the server's certificate?)"),
        "{error}"
    );
    assert_logged(&server, "the client does not trust this server's certificate");
    let error = refused(&server, "127.0.0.1", &["--ca-cert", &path_text("ca.pem")]);
    assert!(
        error.contains(": the server's certificate is not valid for 127.0.0.1 (connect by a name or IP address it lists, or give the server one that lists 127.0.0.1: `hydroplane tls cert create --server --san 127.0.0.1`)"),
        "{error}"
    );
    drop(server);

    // A certificate that expired yesterday, signed by the same CA.
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(path("ca-key.pem")).expect("read")).expect("key");
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(path("ca.pem")).expect("read"), ca_key)
            .expect("CA");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().expect("key");
    let expired = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(path("expired-cert.pem"), expired.pem()).expect("write");
    std::fs::write(path("expired-key.pem"), key.serialize_pem()).expect("write");
    let server = tls_server(directory.path(), &path("expired-cert.pem"), &path("expired-key.pem"), None);
    let error = refused(&server, "127.0.0.1", &["--ca-cert", &path_text("ca.pem")]);
    assert!(
        error.contains(": the server's certificate has expired (give the server a new one: `hydroplane tls cert create --server --force`; is this machine's clock right?)"),
        "{error}"
    );
    assert_logged(&server, "the client says this server's certificate has expired");
}

#[test]
fn mtls_without_a_client_certificate_or_with_a_strangers_is_one_sentence_each() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| directory.path().join(name).to_str().expect("utf-8").to_owned();
    assert_success(&tls(directory.path(), &["ca", "create"]));
    assert_success(&tls(directory.path(), &["cert", "create", "--server"]));
    assert_success(&tls(directory.path(), &["cert", "create", "--client", "--name", "ci"]));
    let other = tempfile::tempdir().expect("tempdir");
    assert_success(&tls(other.path(), &["ca", "create"]));
    assert_success(&tls(other.path(), &["cert", "create", "--client", "--name", "stranger"]));
    let server = tls_server(
        directory.path(),
        Path::new(&path("server-cert.pem")),
        Path::new(&path("server-key.pem")),
        Some(Path::new(&path("ca.pem"))),
    );
    let port = server.address.rsplit(':').next().expect("a port").to_owned();

    let error = refused(&server, "localhost", &["--ca-cert", &path("ca.pem")]);
    // As below: the alert, or (TLS 1.3, the server closing before the client reads it) a closed
    // connection; either way the line says to give a client certificate.
    assert!(
        error.contains(": the server requires a client certificate (give --client-cert and --client-key, signed by the CA the server trusts for clients)")
            || error.contains("(the server closed the connection: if it wants a client certificate, give --client-cert and --client-key)"),
        "{error}"
    );
    assert_logged(
        &server,
        "the client sent no certificate, and this server requires one (tls.client_ca_file)",
    );

    let stranger = other.path();
    let error = refused(
        &server,
        "localhost",
        &[
            "--ca-cert",
            &path("ca.pem"),
            "--client-cert",
            stranger.join("stranger-cert.pem").to_str().expect("utf-8"),
            "--client-key",
            stranger.join("stranger-key.pem").to_str().expect("utf-8"),
        ],
    );
    // The refusal reaches the client as an alert or, in TLS 1.3 when the server closes first, as
    // a closed connection: either way the line says what to check.
    assert!(
        error.contains(": the server refused the client certificate (is --client-cert signed by the CA the server trusts for clients, and still valid?)")
            // The transport's words for the close vary with timing (connection closed, broken
            // pipe); the hint is what the person needs, and it is always the same.
            || error.contains("(the server closed the connection: is --client-cert signed by the CA the server trusts for clients?)"),
        "{error}"
    );
    assert_logged(&server, "the client's certificate is not signed by the CA in tls.client_ca_file");

    let output = Command::new(common::hpctl_binary())
        .args(["list", "-s", &format!("https://localhost:{port}"), "--ca-cert", &path("ca.pem")])
        .args(["--client-cert", &path("ci-cert.pem"), "--client-key", &path("ci-key.pem")])
        .output()
        .expect("run hpctl");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
