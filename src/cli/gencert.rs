//! `ringway gen-cert`: a private CA and a gateway certificate signed by
//! it, for quick starts and tests. Production gateways can use any PEM
//! chain instead (a public CA's, or ACME's).

use std::path::{Path, PathBuf};

use clap::Args;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// How long generated certificates are valid: long enough for a lab
/// gateway to keep working, short enough to be replaced by a real one.
const VALID_DAYS: u64 = 825;

/// Arguments of `ringway gen-cert`.
#[derive(Args, Debug)]
pub struct GenCertArgs {
    /// Names (DNS names or IP addresses) the gateway is reached by.
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
    /// Folder for ca.pem, cert.pem and key.pem.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// Writes ca.pem (the CA clients trust), cert.pem (the gateway's chain)
/// and key.pem (the gateway's private key, mode 0600).
pub fn run(args: GenCertArgs) -> Result<(), String> {
    // Valid from yesterday (UTC), so a client whose clock is a little
    // behind still accepts it.
    let now = date(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400));
    let until = date(std::time::SystemTime::now() + std::time::Duration::from_secs(VALID_DAYS * 86_400));

    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    // A name of its own per CA: clients pick the issuer by name, so two
    // gen-cert CAs with one name would make a wrong CA look like a bad
    // signature instead of an unknown issuer.
    let ca_name = format!("ringway private CA {}", &hex::encode(crate::auth::new_nonce())[..8]);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = rcgen::date_time_ymd(now.0, now.1, now.2);
    ca.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut server = CertificateParams::new(args.hosts.clone()).map_err(|e| format!("bad --host: {e}"))?;
    server
        .distinguished_name
        .push(DnType::CommonName, args.hosts[0].as_str());
    server.not_before = rcgen::date_time_ymd(now.0, now.1, now.2);
    server.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    server.serial_number = Some(rcgen::SerialNumber::from_slice(&crate::auth::new_nonce()[..12]));
    let cert = server.signed_by(&key, &issuer).map_err(|e| e.to_string())?;

    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    write(&args.out.join("ca.pem"), &ca_cert.pem(), false)?;
    write(
        &args.out.join("cert.pem"),
        &format!("{}{}", cert.pem(), ca_cert.pem()),
        false,
    )?;
    write(&args.out.join("key.pem"), &key.serialize_pem(), true)?;
    let pin = hex::encode(crate::tls::cert_sha256(cert.der()));
    println!("wrote {0}/ca.pem, {0}/cert.pem, {0}/key.pem", args.out.display());
    println!("certificate SHA-256 (for --pin-sha256): {pin}");
    Ok(())
}

fn date(t: std::time::SystemTime) -> (i32, u8, u8) {
    let (y, m, d) = crate::timefmt::civil_date(t);
    (y as i32, m as u8, d as u8)
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    use std::io::Write;
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
