//! The load step: read the config file, parse it, then read the files it
//! names (certificate, key, admin token, operators' TOTP secrets) into the
//! [`Config`] the gateway
//! runs on. A reload goes through here too, so a file that cannot be read
//! fails the reload before anything changes.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::admin::{AdminConfig, AdminFile, MIN_ADMIN_TOKEN_LEN};
use super::error::ConfigError;
use super::error::Located;
use super::file::parse_str;
use super::operators::{Operator, OperatorFile, TotpSource};
use super::tls::TlsFiles;
use super::{Config, ConfigFile, TlsSettings};
use crate::auth::totp::TotpSecret;

/// Largest config file read: room for a hundred thousand keys; a bigger
/// file is the wrong path (a log, an image), not a config.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Largest admin token or key file read: a secret is one line, and
/// reading a large file named by mistake would stall the reload.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Largest TOTP secret file read: a secret is one line of base32; a large
/// file is the wrong path.
pub const MAX_TOTP_FILE_BYTES: u64 = 1024;

/// Reads, parses and loads a configuration file. Relative paths in it
/// are taken from its folder.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let whole = |reason: String| ConfigError {
        file: file.clone(),
        line: 0,
        reason,
    };
    let text = read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| whole(format!("cannot read: {e}")))?;
    parse_str(&text, &file)?.load(path.parent())
}

impl ConfigFile {
    /// Reads the files this configuration names, relative ones from `base`
    /// (the config file's folder), and gives the configuration to run.
    pub fn load(self, base: Option<&Path>) -> Result<Config, ConfigError> {
        let at = |line: usize, reason: String| ConfigError {
            file: self.file.clone(),
            line,
            reason,
        };
        let resolve = |p: &Path| match base {
            Some(base) if p.is_relative() => base.join(p),
            _ => p.to_path_buf(),
        };
        let admin = match &self.admin {
            None => None,
            Some(a) => Some(load_admin(a, &resolve, &at)?),
        };
        let tls = match &self.tls {
            None => None,
            Some(t) => Some(load_tls(t, &resolve, &at)?),
        };
        let mut keys = Vec::with_capacity(self.keys.len());
        for entry in &self.keys {
            let key = entry
                .load(|p| {
                    let path = resolve(p);
                    read_bounded(&path, MAX_TOKEN_FILE_BYTES)
                        .map_err(|e| format!("cannot read key file {} of key {:?}: {e}", path.display(), entry.name))
                })
                .map_err(|why| at(entry.line, why))?;
            if let Some(same) = keys.iter().find(|k: &&crate::auth::GatewayKey| k.id() == key.id()) {
                return Err(at(
                    entry.line,
                    format!("key {:?} is the same secret as key {:?}", entry.name, same.name()),
                ));
            }
            keys.push(key);
        }
        let mut warnings = self.warnings;
        warnings.extend(super::keys::warnings(&self.keys, &keys, &self.file));
        let log = self.log.clone().map(|mut l| {
            l.dir = resolve(&l.dir);
            l
        });
        let audit = self.audit.clone().map(|mut a| {
            a.file = resolve(&a.file);
            a
        });
        let operators = self
            .operators
            .iter()
            .map(|o| load_operator(o, &resolve, &at))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = match self.cluster.clone() {
            None => None,
            Some(mut c) => {
                if let Some(p) = &c.password_file {
                    let path = resolve(p);
                    let text = read_bounded(&path, MAX_TOKEN_FILE_BYTES).map_err(|e| {
                        at(
                            0,
                            format!("cannot read the Redis password_file {}: {e}", path.display()),
                        )
                    })?;
                    let pw = text.trim().to_string();
                    if pw.is_empty() {
                        return Err(at(0, format!("the Redis password_file {} is empty", path.display())));
                    }
                    c.password = Some(pw);
                    c.password_file = Some(path);
                }
                c.ca_file = c.ca_file.as_deref().map(resolve);
                Some(c)
            }
        };
        Ok(Config {
            file: self.file,
            listen: self.listen,
            workers: self.workers,
            cmpi: self.cmpi,
            max_clients: self.max_clients,
            state_dir: resolve(&self.state_dir),
            role: self.role,
            keys,
            limits: self.limits,
            log,
            audit,
            admin,
            tls,
            auth: self.auth,
            operators,
            cluster,
            warnings,
        })
    }
}

/// Reads the admin token, if one is named.
fn load_admin(
    a: &AdminFile,
    resolve: &impl Fn(&Path) -> PathBuf,
    at: &impl Fn(usize, String) -> ConfigError,
) -> Result<AdminConfig, ConfigError> {
    let token = match &a.token_file {
        None => None,
        Some(Located { value, line }) => {
            let path = resolve(value);
            let text = read_bounded(&path, MAX_TOKEN_FILE_BYTES)
                .map_err(|e| at(*line, format!("cannot read admin token file {}: {e}", path.display())))?;
            let token = text.trim();
            if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
                return Err(at(
                    *line,
                    format!("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
                ));
            }
            Some(token.to_string())
        }
    };
    Ok(AdminConfig {
        listen: a.listen,
        token,
        hosts: a.hosts.clone(),
    })
}

/// Reads an operator's TOTP secret file, if it names one.
pub(super) fn load_operator(
    o: &OperatorFile,
    resolve: &impl Fn(&Path) -> PathBuf,
    at: &impl Fn(usize, String) -> ConfigError,
) -> Result<Operator, ConfigError> {
    let totp = match &o.totp {
        None => None,
        Some(TotpSource::Inline(secret)) => Some(secret.clone()),
        Some(TotpSource::File(Located { value, line })) => {
            let path = resolve(value);
            let shown = path.display();
            let text = read_bounded(&path, MAX_TOTP_FILE_BYTES)
                .map_err(|e| at(*line, format!("cannot read TOTP secret file {shown}: {e}")))?;
            let secret = TotpSecret::from_base32(text.trim())
                .map_err(|e| at(*line, format!("the TOTP secret in {shown} {e}")))?;
            Some(secret)
        }
    };
    Ok(o.with_totp(totp))
}

/// Reads the certificate chain and key into a ready server config.
fn load_tls(
    t: &TlsFiles,
    resolve: &impl Fn(&Path) -> PathBuf,
    at: &impl Fn(usize, String) -> ConfigError,
) -> Result<TlsSettings, ConfigError> {
    let (cert, key) = (resolve(&t.cert.value), resolve(&t.key.value));
    let server = crate::tls::load_server_config(&cert, &key).map_err(|why| at(t.cert.line, why))?;
    Ok(TlsSettings {
        cert,
        key,
        server,
        require: t.require,
    })
}

/// Reads a UTF-8 file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(text)
}
