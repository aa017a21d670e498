//! The certificate verifier for `--pin-sha256` and `--insecure`.
//!
//! Either way the handshake signatures are still checked with the
//! certificate's key, so a pinned connection proves possession of the
//! pinned certificate's private key, not just a copy of the certificate.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts the certificate whose DER hashes to `pin`, or, with no pin
/// (`--insecure`), any certificate.
#[derive(Debug)]
pub struct PinnedCert {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCert {
    /// A verifier for SHA-256 `pin`; `None` accepts any certificate.
    pub fn new(pin: Option<[u8; 32]>, provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            Some(pin) if super::cert_sha256(end_entity) != pin => Err(rustls::Error::General(
                "the gateway's certificate does not match the pinned SHA-256".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
