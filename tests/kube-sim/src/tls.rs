//! The `--tls` certificates: a fresh CA per run and a server certificate it signs for
//! `localhost` and the listen address, served through rustls with the `ring` provider.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating a key or certificate failed.
    #[error("generating certificates failed")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("configuring rustls failed")]
    Configure(#[from] rustls::Error),
}

/// The CA clients must trust, and the acceptor using the certificate it signed.
pub struct TlsMaterial {
    /// The CA certificate in PEM, for kubeconfig's `certificate-authority-data`.
    pub ca_pem: String,
    /// Accepts TLS connections with the server certificate (HTTP/1.1 only).
    pub acceptor: TlsAcceptor,
}

/// Generates a CA and a server certificate valid for `localhost`, 127.0.0.1 and `listen_ip`.
pub fn generate(listen_ip: IpAddr) -> Result<TlsMaterial, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "kube-sim CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "kubernetes.default.svc".to_string()])?;
    server_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if !ips.contains(&listen_ip) && !listen_ip.is_unspecified() {
        ips.push(listen_ip);
    }
    server_params.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server_params.use_authority_key_identifier_extension = true;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)?;
    // We only speak HTTP/1.1; advertising it keeps clients from trying h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial { ca_pem: ca_cert.pem(), acceptor: TlsAcceptor::from(Arc::new(config)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_pem_ca() {
        let material = generate(IpAddr::from([127, 0, 0, 1])).unwrap();
        assert!(material.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
