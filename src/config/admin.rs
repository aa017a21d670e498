//! The `[admin]` section: where the console listens, the file holding its
//! token, and the Host names it answers to.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use rustls::pki_types::ServerName;
use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Located, Source};

/// Default admin address: loopback, so the console is not on the internet
/// unless asked for (and then a token is required).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// Shortest admin token accepted: 16 characters, so it is not guessed.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Most `hosts` entries: every request's Host is looked up among them, and
/// a console reached by more than a few dozen names is a misconfiguration.
pub const MAX_ADMIN_HOSTS: usize = 64;

/// `[admin]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[admin]` checked; the token file is named, not yet read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminFile {
    /// Where the console, API and metrics are served.
    pub listen: SocketAddr,
    /// The file holding the bearer token, as written.
    pub token_file: Option<Located<PathBuf>>,
    /// Extra Host names the listener answers to (see [`AdminConfig::hosts`]).
    pub hosts: Vec<String>,
}

/// The admin listener's settings, its token read.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the console, API and metrics are served.
    pub listen: SocketAddr,
    /// The bearer token every admin request must carry, if any.
    pub token: Option<String>,
    /// Host header names the listener answers to besides its own address,
    /// `localhost`, `127.0.0.1` and `[::1]`, so a DNS-rebound page cannot
    /// read it: DNS names in lower case, IP addresses in their canonical
    /// form without brackets or port. Compare case-insensitively.
    pub hosts: Vec<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "hidden"))
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// Checks `[admin]`: the address, that an address off loopback names a
/// token file, and each Host name. Absent: no admin listener.
pub(super) fn parse_admin(raw: Option<&RawAdmin>, src: &Source) -> Result<Option<AdminFile>, ConfigError> {
    let Some(a) = raw else { return Ok(None) };
    let listen = match &a.listen {
        None => DEFAULT_ADMIN_LISTEN
            .parse()
            .expect("DEFAULT_ADMIN_LISTEN is an ip:port (unit-tested)"),
        Some(l) => l
            .get_ref()
            .parse::<SocketAddr>()
            .map_err(|_| src.error(l.span(), format!("admin listen {:?} is not ip:port", l.get_ref())))?,
    };
    let token_file = match &a.token_file {
        Some(f) if f.get_ref().is_empty() => return Err(src.error(f.span(), "token_file must not be empty")),
        Some(f) => Some(Located {
            value: PathBuf::from(f.get_ref()),
            line: src.line(&f.span()),
        }),
        None => None,
    };
    if !listen.ip().is_loopback() && token_file.is_none() {
        let span = a.listen.as_ref().map_or(0..0, |l| l.span());
        return Err(src.error(
            span,
            format!("admin listen {listen} is not loopback: set token_file so the console is not open to all"),
        ));
    }
    let hosts = match &a.hosts {
        None => Vec::new(),
        Some(list) if list.get_ref().len() > MAX_ADMIN_HOSTS => {
            return Err(src.error(
                list.span(),
                format!("hosts lists {} names; at most {MAX_ADMIN_HOSTS}", list.get_ref().len()),
            ));
        }
        Some(list) => {
            let mut hosts: Vec<String> = Vec::new();
            for h in list.get_ref() {
                let name = host_name(h.get_ref()).ok_or_else(|| {
                    src.error(
                        h.span(),
                        format!(
                            "admin host {:?} is not a DNS name or IP address (give it without scheme or port)",
                            h.get_ref()
                        ),
                    )
                })?;
                src.push_unique(&mut hosts, name, h.span(), "admin host")?;
            }
            hosts
        }
    };
    Ok(Some(AdminFile {
        listen,
        token_file,
        hosts,
    }))
}

/// `text` as a Host name in the form [`AdminConfig::hosts`] documents, if
/// it is a DNS name or an IP address (an IPv6 one may be in brackets).
fn host_name(text: &str) -> Option<String> {
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
    if let Some(inner) = bare {
        return inner.parse::<std::net::Ipv6Addr>().ok().map(|ip| ip.to_string());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    match ServerName::try_from(text) {
        Ok(ServerName::DnsName(name)) => Some(name.as_ref().to_ascii_lowercase()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(body: &str) -> Result<Option<AdminFile>, String> {
        section(&format!("[admin]\n{body}"), "admin", parse_admin)
    }

    #[test]
    fn defaults() {
        assert_eq!(section("", "admin", parse_admin), Ok(None));
        assert_eq!(
            parse(""),
            Ok(Some(AdminFile {
                listen: DEFAULT_ADMIN_LISTEN.parse().expect("the default address"),
                token_file: None,
                hosts: Vec::new(),
            }))
        );
    }

    #[test]
    fn off_loopback_needs_a_token_file() {
        assert_eq!(
            parse("listen = \"0.0.0.0:9090\"\n"),
            Err("test.toml:2: admin listen 0.0.0.0:9090 is not loopback: set token_file so the console is not open to all".into())
        );
        let a = parse("listen = \"0.0.0.0:9090\"\ntoken_file = \"admin.token\"\n")
            .expect("valid")
            .expect("an admin section");
        assert_eq!(
            a.token_file,
            Some(Located {
                value: PathBuf::from("admin.token"),
                line: 3
            })
        );
        assert_eq!(
            parse("listen = \"localhost:9090\"\n"),
            Err("test.toml:2: admin listen \"localhost:9090\" is not ip:port".into())
        );
        assert_eq!(
            parse("token_file = \"\"\n"),
            Err("test.toml:2: token_file must not be empty".into())
        );
    }

    #[test]
    fn hosts_are_names_or_addresses_normalised() {
        let a = parse("hosts = [\"GW.Example.com\", \"console\", \"192.0.2.7\", \"[2001:DB8::1]\", \"2001:db8::2\"]\n")
            .expect("valid")
            .expect("an admin section");
        assert_eq!(
            a.hosts,
            ["gw.example.com", "console", "192.0.2.7", "2001:db8::1", "2001:db8::2"]
        );
        for bad in [
            "gw.example.com:9090",
            "https://gw.example.com",
            "",
            "gw..example",
            "gw.example.com/",
            "[gw.example.com]",
            "two words",
        ] {
            assert_eq!(
                parse(&format!("\nhosts = [{bad:?}]\n")).map(|_| ()),
                Err(format!(
                    "test.toml:3: admin host {bad:?} is not a DNS name or IP address (give it without scheme or port)"
                )),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse("hosts = [\"a.example\",\n \"A.example\"]\n").map(|_| ()),
            Err("test.toml:3: admin host a.example is given twice".into())
        );
    }

    #[test]
    fn hosts_are_bounded() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("\"h{i}.example\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let a = parse(&format!("hosts = [{}]\n", list(MAX_ADMIN_HOSTS)))
            .expect("valid")
            .expect("an admin section");
        assert_eq!(a.hosts.len(), 64);
        assert_eq!(
            parse(&format!("hosts = [{}]\n", list(MAX_ADMIN_HOSTS + 1))).map(|_| ()),
            Err("test.toml:2: hosts lists 65 names; at most 64".into())
        );
    }

    #[test]
    fn the_token_is_hidden_from_debug() {
        let a = AdminConfig {
            listen: DEFAULT_ADMIN_LISTEN.parse().expect("the default address"),
            token: Some("very-secret-token-123".into()),
            hosts: vec!["gw.example.com".into()],
        };
        assert_eq!(
            format!("{a:?}"),
            "AdminConfig { listen: 127.0.0.1:9090, token: Some(\"hidden\"), hosts: [\"gw.example.com\"] }"
        );
    }
}
