//! Test certificates made with rcgen: a CA, server certificates for 127.0.0.1 and localhost,
//! client certificates, and the PEM files a server's TLS settings point at.
//!
//! The library's TLS unit tests include this file too (`server/security/tls.rs`), so there is one
//! copy of it; it may only use rcgen and std.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that signs test certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA (its own key, self-signed) whose common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("CA key");
        TestCa { issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA certificate") }
    }

    /// The CA's certificate (PEM), what clients or the server trust.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
    pub fn server_cert(&self) -> (String, String) {
        self.leaf("hydroplane test server", &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose common name is `name`: (certificate PEM, key PEM).
    pub fn client_cert(&self, name: &str) -> (String, String) {
        self.leaf(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Writes a new server certificate and key to `dir/{prefix}-cert.pem` and `dir/{prefix}-key.pem`
    /// (key first, each by rename, as a careful rotation does); returns (certificate, key) paths.
    pub fn write_server_files(&self, dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.server_cert();
        write_pair(dir, prefix, &cert, &key)
    }

    /// Writes a new client certificate and key to `dir/{prefix}-cert.pem` and `dir/{prefix}-key.pem`;
    /// returns (certificate, key) paths.
    pub fn write_client_files(&self, dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.client_cert(prefix);
        write_pair(dir, prefix, &cert, &key)
    }

    /// Writes the CA's certificate to `dir/name` and returns that path.
    pub fn write_ca_file(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        write_atomically(&path, &self.pem());
        path
    }

    /// Writes a server certificate that expired in 2020, and its key, as
    /// [`TestCa::write_server_files`] does.
    pub fn write_expired_server_files(&self, dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf_valid(
            "hydroplane test server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Some((2019, 2020)),
        );
        write_pair(dir, prefix, &cert, &key)
    }

    fn leaf(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        self.leaf_valid(common_name, names, usage, None)
    }

    fn leaf_valid(
        &self,
        common_name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        valid_years: Option<(i32, i32)>,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        if let Some((from, until)) = valid_years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn write_pair(dir: &Path, prefix: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{prefix}-cert.pem"));
    let key_path = dir.join(format!("{prefix}-key.pem"));
    write_atomically(&key_path, key);
    write_atomically(&cert_path, cert);
    (cert_path, key_path)
}

/// Writes through a temporary file and a rename, so a reader sees the old or the new contents,
/// never half of them.
fn write_atomically(path: &Path, contents: &str) {
    let file_name = path.file_name().expect("a file name").to_string_lossy();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&temporary, contents).expect("write the temporary file");
    std::fs::rename(&temporary, path).expect("rename the temporary file");
}
