//! `hydroplane tls`: makes the certificates a TLS (and mTLS) setup needs, as `nomad tls` does: a
//! CA (`tls ca create`), and server and client certificates signed by it (`tls cert create`).
//!
//! The CA is a CA (`CA:TRUE`, path length 0, keyCertSign and cRLSign) and nothing else; a leaf is
//! `CA:FALSE` with digitalSignature (and keyEncipherment for a server) and the extended key usage
//! of its role (serverAuth or clientAuth), with the names a client connects by. That is what
//! rustls and every other client check, and what a self-signed `openssl req -x509` certificate
//! is not. Keys are ECDSA P-256, written `0600`; certificates `0644`. An existing file is never
//! replaced without `--force`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// How long a CA lasts by default: five years, as Nomad's.
const CA_DAYS: u32 = 1826;

/// How long a server or client certificate lasts by default: a year, as Nomad's.
const CERT_DAYS: u32 = 365;

/// The longest lifetime accepted: a hundred years.
const MAX_DAYS: u32 = 36_525;

/// What to make.
#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// The certificate authority that signs server and client certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Server and client certificates, signed by the CA.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `hydroplane tls ca ...`.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Makes a CA: DIR/ca.pem (the certificate, to give clients and `tls.client_ca_file`) and
    /// DIR/ca-key.pem (its key, 0600: keep it safe, it signs certificates).
    Create {
        /// Where to write the files.
        #[arg(long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// The CA's common name [default: `Hydroplane CA` and 8 random hex digits, so that two
        /// CAs are never taken for one another by name].
        #[arg(long = "common-name", value_name = "NAME")]
        common_name: Option<String>,
        /// How many days it is valid.
        #[arg(long, default_value_t = CA_DAYS, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// `hydroplane tls cert ...`.
#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Makes a certificate signed by the CA: DIR/NAME-cert.pem (0644) and DIR/NAME-key.pem
    /// (0600).
    Create(CertArgs),
}

/// The arguments of `hydroplane tls cert create`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("role").required(true).args(["server", "client"]))]
pub struct CertArgs {
    /// A server certificate (serverAuth): for `tls.cert_file` and `tls.key_file`.
    #[arg(long)]
    server: bool,
    /// A client certificate (clientAuth), for mTLS: for hpctl's --client-cert and --client-key.
    #[arg(long)]
    client: bool,
    /// The certificate's common name and the files' prefix [default: server, or client].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The host names and IP addresses clients connect by, comma-separated or repeated
    /// [default for --server: localhost,127.0.0.1,::1].
    #[arg(long, value_name = "HOST,IP...", value_delimiter = ',')]
    san: Vec<String>,
    /// The CA's certificate.
    #[arg(long = "ca", default_value = "ca.pem", value_name = "FILE")]
    ca_cert: PathBuf,
    /// The CA's key.
    #[arg(long, default_value = "ca-key.pem", value_name = "FILE")]
    ca_key: PathBuf,
    /// Where to write the files.
    #[arg(long, default_value = ".", value_name = "DIR")]
    dir: PathBuf,
    /// How many days it is valid.
    #[arg(long, default_value_t = CERT_DAYS, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
    days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

/// Runs a `tls` command; errors are one line on stderr and exit code 1.
pub fn run(command: TlsCommand) -> ExitCode {
    let result = match command {
        TlsCommand::Ca(CaCommand::Create { dir, common_name, days, force }) => {
            common_name.map_or_else(default_ca_name, Ok).and_then(|name| create_ca(&dir, &name, days, force))
        }
        TlsCommand::Cert(CertCommand::Create(args)) => create_cert(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The validity of a certificate made today: from today's midnight (UTC), so that a client whose
/// clock is a little behind accepts it, for `days` days.
fn validity(params: &mut CertificateParams, days: u32) -> anyhow::Result<()> {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let end =
        today.checked_add(jiff::Span::new().days(i64::from(days))).context("the end date is too far")?;
    let ymd =
        |date: jiff::civil::Date| date_time_ymd(i32::from(date.year()), date.month() as u8, date.day() as u8);
    params.not_before = ymd(today);
    params.not_after = ymd(end);
    Ok(())
}

/// `Hydroplane CA 1a2b3c4d`: a client finds a certificate's CA by its name, so two CAs of one
/// name would make a certificate of one look like a forgery of the other's.
fn default_ca_name() -> anyhow::Result<String> {
    let mut random = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| anyhow::anyhow!("cannot read random bytes"))?;
    let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("Hydroplane CA {hex}"))
}

/// `tls ca create`.
fn create_ca(dir: &Path, common_name: &str, days: u32, force: bool) -> anyhow::Result<()> {
    let (cert_path, key_path) = (place(dir, "ca.pem"), place(dir, "ca-key.pem"));
    refuse_to_overwrite(&[&cert_path, &key_path], force)?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).context("cannot make the CA's parameters")?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days)?;
    let key = KeyPair::generate().context("cannot make the CA's key")?;
    let cert = params.self_signed(&key).context("cannot sign the CA's certificate")?;
    write_file(&key_path, &key.serialize_pem(), 0o600, force)?;
    write_file(&cert_path, &cert.pem(), 0o644, force)?;
    println!(
        "wrote {} (the CA's certificate, valid {days} days: give it to clients, and as tls.client_ca_file for mTLS) and {} (its key, 0600)",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

/// `tls cert create`.
fn create_cert(args: &CertArgs) -> anyhow::Result<()> {
    let role = if args.server { "server" } else { "client" };
    let name = args.name.clone().unwrap_or_else(|| role.to_owned());
    let mut names: Vec<String> =
        args.san.iter().map(|name| name.trim().to_owned()).filter(|name| !name.is_empty()).collect();
    if names.is_empty() && args.server {
        names = ["localhost", "127.0.0.1", "::1"].map(str::to_owned).to_vec();
    }
    let (cert_path, key_path) =
        (place(&args.dir, &format!("{name}-cert.pem")), place(&args.dir, &format!("{name}-key.pem")));
    refuse_to_overwrite(&[&cert_path, &key_path], args.force)?;

    let ca_cert = std::fs::read_to_string(&args.ca_cert).with_context(|| {
        format!(
            "cannot read the CA certificate {} (make one with `hydroplane tls ca create`, or give --ca)",
            args.ca_cert.display()
        )
    })?;
    let ca_key = std::fs::read_to_string(&args.ca_key)
        .with_context(|| format!("cannot read the CA key {} (give --ca-key)", args.ca_key.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key).map_err(|error| {
        anyhow::anyhow!("{} holds no private key rcgen can use: {error}", args.ca_key.display())
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)
        .map_err(|error| anyhow::anyhow!("{} is not a CA certificate: {error}", args.ca_cert.display()))?;
    if !issuer.key_usages().is_empty() && !issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign) {
        bail!("{} may not sign certificates (its key usage lacks keyCertSign)", args.ca_cert.display());
    }

    let mut params = CertificateParams::new(names.clone())
        .with_context(|| format!("--san: not host names or IP addresses: {}", names.join(",")))?;
    params.distinguished_name.push(DnType::CommonName, name.as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    if args.server {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    validity(&mut params, args.days)?;
    let key = KeyPair::generate().context("cannot make the key")?;
    let cert = params.signed_by(&key, &issuer).context("cannot sign the certificate")?;
    write_file(&key_path, &key.serialize_pem(), 0o600, args.force)?;
    write_file(&cert_path, &cert.pem(), 0o644, args.force)?;
    let names = if names.is_empty() { String::new() } else { format!(" for {}", names.join(", ")) };
    println!(
        "wrote {} (a {role} certificate{names}, signed by {}, valid {} days) and {} (its key, 0600)",
        cert_path.display(),
        args.ca_cert.display(),
        args.days,
        key_path.display()
    );
    Ok(())
}

/// `dir/name`, or `name` alone for the current directory, as messages show it.
fn place(dir: &Path, name: &str) -> PathBuf {
    if dir == Path::new(".") { PathBuf::from(name) } else { dir.join(name) }
}

/// Fails, naming the files, when any of them exists and `force` was not given; before anything
/// is written, so that nothing is half made.
fn refuse_to_overwrite(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let existing: Vec<String> = paths
        .iter()
        .filter(|path| path.symlink_metadata().is_ok())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already exist{}: give --force to replace",
            existing.join(" and "),
            if existing.len() == 1 { "s" } else { "" }
        );
    }
    Ok(())
}

/// Writes `contents` to `path` with `mode` from the start (a key is never readable by others, even
/// for a moment): a new file next to it, then a rename over any old one.
fn write_file(path: &Path, contents: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let file_name = path.file_name().context("no file name")?.to_string_lossy();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temporary)?;
        // Exactly `mode`, whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        Ok(())
    };
    if let Err(error) = write() {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    // Without --force, a file made meanwhile is not replaced: a hard link fails on an existing name.
    let placed = if force {
        std::fs::rename(&temporary, path)
    } else {
        std::fs::hard_link(&temporary, path).and_then(|()| std::fs::remove_file(&temporary))
    };
    placed.map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        anyhow::Error::new(error).context(format!("cannot write {}", path.display()))
    })
}
