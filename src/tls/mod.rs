//! TLS for gateway and clients: rustls (ring provider), TLS 1.2 and 1.3
//! only, ALPN `http/1.1`.
//!
//! Certificate source: [`load_server_config`] turns PEM files into a
//! ready `ServerConfig`. The gateway holds it in its running configuration
//! and swaps it on reload; a later ACME source only has to produce the same
//! `Arc<ServerConfig>` and hand it to the same reload path.

mod conn;
pub mod record;
mod sealed;
mod verify;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use conn::TlsConn;
pub use sealed::SealedConn;
pub use verify::PinnedCert;

/// The first byte of a TLS record carrying a handshake (ClientHello);
/// no HTTP request starts with it, so one byte tells the two apart.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// ALPN protocols we offer and accept: ringway's requests are HTTP/1.1.
const ALPN: &[&[u8]] = &[b"http/1.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Reads a PEM certificate chain and private key into a server config.
/// Errors name the file and say what is wrong with it, including a key
/// that does not belong to the certificate.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {} is not valid PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("certificate {} holds no CERTIFICATE block", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "certificate {} and key {} do not fit together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // Key proofs are bound to the connection's exported keying material;
    // under TLS 1.2 that is unique to the connection only with the
    // Extended Master Secret (RFC 7627), so a 1.2 peer without it is
    // refused at the handshake. TLS 1.3 always has it.
    config.require_ems = true;
    // Agent channels hand their record protection from rustls to the
    // gateway's own small record layer once the handshake is done (see
    // `record`): rustls gives the traffic secrets only when allowed to.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// How a client decides that it is talking to the genuine gateway.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The operating system's root certificates.
    SystemRoots,
    /// Certificates from a PEM file (a private CA, e.g. from `gen-cert`).
    CaFile(std::path::PathBuf),
    /// The SHA-256 of the gateway's own certificate (DER), hex.
    Pin([u8; 32]),
    /// Accept any certificate. Only for testing; warns loudly.
    Insecure,
}

/// Builds a client config for `trust`.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?;
    let mut config = match trust {
        Trust::SystemRoots | Trust::CaFile(_) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs: Vec<CertificateDer<'static>> = match trust {
                Trust::CaFile(path) => CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("CA file {} is not valid PEM: {e}", path.display()))?,
                _ => rustls_native_certs::load_native_certs().certs,
            };
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err("no usable CA certificates found".into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pin(hash) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert::new(Some(*hash), provider())))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert::new(None, provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // As for the server: the proof's binding needs EMS under TLS 1.2.
    config.require_ems = true;
    Ok(Arc::new(config))
}

/// Starts a client-side TLS connection to `host`.
pub fn client_connection(config: Arc<rustls::ClientConfig>, host: &str) -> std::io::Result<rustls::Connection> {
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid server name {host:?}"),
        )
    })?;
    rustls::ClientConnection::new(config, name)
        .map(rustls::Connection::from)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Starts a server-side TLS connection.
pub fn server_connection(config: Arc<rustls::ServerConfig>) -> std::io::Result<rustls::Connection> {
    rustls::ServerConnection::new(config)
        .map(rustls::Connection::from)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// SHA-256 of a DER certificate, as used by `--pin-sha256`.
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
