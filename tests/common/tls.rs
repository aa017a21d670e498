//! Certificates from the real `ringway gen-cert`, and a gateway serving
//! one over TLS with its admin listener.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringway::client::Endpoint;
use ringway::tls::Trust;

use super::{AgentThread, Behaviour, COMMAND_TIMEOUT, Gateway, GatewayConfig, TestDir, TlsConfig, run_bounded};

/// What gen-cert prints before the certificate's SHA-256.
const PIN_LINE: &str = "certificate SHA-256 (for --pin-sha256): ";

/// Runs the real `ringway gen-cert` for localhost and 127.0.0.1 into
/// `out`; returns the SHA-256 pin it printed.
pub fn gen_cert(out: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.args(["gen-cert", "--host", "localhost", "--host", "127.0.0.1", "--out"])
        .arg(out);
    let output = run_bounded(cmd, b"", COMMAND_TIMEOUT);
    assert!(output.success(), "gen-cert failed: {}", output.stderr);
    let stdout = &output.stdout;
    let lines: Vec<&str> = stdout.lines().collect();
    let d = out.display();
    assert_eq!(lines.len(), 2, "gen-cert's output: {stdout:?}");
    assert_eq!(lines[0], format!("wrote {d}/ca.pem, {d}/cert.pem, {d}/key.pem"));
    let pin = lines[1]
        .strip_prefix(PIN_LINE)
        .unwrap_or_else(|| panic!("no pin in {:?}", lines[1]));
    assert!(
        pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "pin {pin:?} is not 64 lowercase hex digits"
    );
    pin.to_string()
}

/// A gateway serving a fresh gen-cert certificate, with its admin
/// listener (for /metrics and as a barrier through every worker), and
/// gen-cert's files.
pub struct TlsRig {
    /// The gateway, in `dir`.
    pub gw: Gateway,
    /// The key clients prove.
    pub key: String,
    /// gen-cert's folder: ca.pem, cert.pem, key.pem.
    pub certs: PathBuf,
    /// The SHA-256 pin gen-cert printed.
    pub pin: String,
    /// Declared last so it is removed after the gateway is gone.
    pub dir: TestDir,
}

impl TlsRig {
    /// Makes a certificate and starts a gateway with `key` serving it;
    /// with `require`, plain HTTP peers are refused.
    pub fn start(key: &str, require: bool) -> TlsRig {
        let dir = TestDir::new("tls");
        let certs = dir.join("certs");
        let pin = gen_cert(&certs);
        let gw = Gateway::start_in(&dir, &tls_config(key, &certs, require));
        TlsRig {
            gw,
            key: key.to_string(),
            certs,
            pin,
            dir,
        }
    }

    /// The private CA clients trust.
    pub fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// A library endpoint over TLS trusting the CA.
    pub fn endpoint(&self, identity: &str) -> Endpoint {
        self.gw.tls_endpoint(&self.key, identity, &Trust::CaFile(self.ca()))
    }

    /// A library agent over TLS trusting the CA, doing `behaviour`; waits
    /// until the gateway has logged it.
    pub fn agent(&self, name: &str, behaviour: Behaviour) -> AgentThread {
        self.gw.start_agent(self.endpoint(name), behaviour)
    }
}

/// A config with `key`, the admin listener and TLS serving gen-cert's
/// `cert.pem` and `key.pem` in `certs`.
pub fn tls_config(key: &str, certs: &Path, require: bool) -> GatewayConfig {
    GatewayConfig {
        admin: true,
        tls: Some(TlsConfig {
            cert: certs.join("cert.pem"),
            key: certs.join("key.pem"),
            require,
        }),
        ..GatewayConfig::new(&[key])
    }
}
