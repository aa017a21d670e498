//! The `[cluster]` section: several gateways sharing one directory in
//! Redis (docs/CLUSTER.md). Absent, the gateway runs alone and needs no
//! Redis.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::bound::Bound;
use super::error::{ConfigError, Source};

/// `lease_secs`: how long a gateway's lease lives unless renewed (it is
/// renewed every third of it). A gateway killed outright vanishes from
/// the others' browse within this time; 15 s rides out a Redis failover
/// or a GC pause of the host without flapping.
pub const CLUSTER_LEASE_SECS: Bound = Bound {
    key: "lease_secs",
    default: 15,
    min: 2,
    max: 300,
};

/// `slack_percent`: how far above its share of the cluster's agents a
/// gateway may go before it sends new agents to the least-loaded one.
pub const CLUSTER_SLACK_PERCENT: Bound = Bound {
    key: "slack_percent",
    default: 20,
    min: 0,
    max: 10_000,
};

/// `drain_secs`: over how long a draining gateway (`ringway drain`)
/// moves its agents away, so the others take them at a steady rate
/// rather than all in one second.
pub const CLUSTER_DRAIN_SECS: Bound = Bound {
    key: "drain_secs",
    default: 60,
    min: 1,
    max: 3600,
};

/// Longest gateway id: it is part of every Redis key and message.
pub const MAX_CLUSTER_ID_CHARS: usize = 32;

/// `[cluster]` checked. The Redis password, if it is in a file, is read
/// by the load step into `password`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port/db`, `rediss://` for TLS, or
    /// `unix:///path/to/redis.sock`.
    pub redis: String,
    /// A file holding the Redis password (`password_file`), as written
    /// in a `ConfigFile`, resolved from the config's folder in a `Config`.
    pub password_file: Option<PathBuf>,
    /// The password read from `password_file` (load step only).
    pub password: Option<String>,
    /// This gateway's id in the cluster: unique, stable across restarts.
    pub id: String,
    /// Where controls and agents reach this gateway:
    /// `http://host:port` or `https://host:port`. `None`: the first listen
    /// address as bound (https when `[tls]` is configured).
    pub advertise: Option<String>,
    /// Lease lifetime (renewed every third of it).
    pub lease: Duration,
    /// How far above its share a gateway goes before it redirects new agents.
    pub slack_percent: u64,
    /// Whether to redirect new agents to less-loaded gateways at all.
    pub spread: bool,
    /// Over how long a drain moves the agents away.
    pub drain: Duration,
    /// `cross = "relay"`: reach an agent on another gateway by dialling
    /// it and relaying, rather than redirecting the control.
    pub relay: bool,
    /// `ca_file`: the CA that signs the other gateways' certificates,
    /// for relaying to an `https://` advertise (else the system's roots).
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &redacted_url(&self.redis))
            .field("password_file", &self.password_file)
            .field("id", &self.id)
            .field("advertise", &self.advertise)
            .field("lease", &self.lease)
            .field("slack_percent", &self.slack_percent)
            .field("spread", &self.spread)
            .field("drain", &self.drain)
            .field("relay", &self.relay)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The Redis URL with any password in it replaced by `***`, for logs.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// `[cluster]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    redis: Spanned<String>,
    password_file: Option<Spanned<String>>,
    id: Spanned<String>,
    advertise: Option<Spanned<String>>,
    lease_secs: Option<Spanned<u64>>,
    slack_percent: Option<Spanned<u64>>,
    spread: Option<bool>,
    drain_secs: Option<Spanned<u64>>,
    cross: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

/// Whether `id` may name a gateway: 1 to [`MAX_CLUSTER_ID_CHARS`] of
/// `A-Z a-z 0-9 . _ -`, so it is safe in keys, messages and logs.
pub fn valid_cluster_id(id: &str) -> bool {
    (1..=MAX_CLUSTER_ID_CHARS).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `url` is `http://host:port` or `https://host:port` (no path).
pub fn valid_advertise(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return false;
    };
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p != 0)
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
        }
        None => false,
    }
}

/// Checks `[cluster]`. Absent: no cluster.
pub(super) fn parse_cluster(raw: Option<&RawCluster>, src: &Source) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(c) = raw else { return Ok(None) };
    let redis = c.redis.get_ref();
    if !["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| redis.starts_with(s))
    {
        return Err(src.error(
            c.redis.span(),
            format!(
                "redis = {:?} is not a redis://, rediss:// or unix:// URL",
                redacted_url(redis)
            ),
        ));
    }
    if let Err(e) = redis::Client::open(redis.as_str()) {
        return Err(src.error(
            c.redis.span(),
            format!("redis = {:?} is not a valid Redis URL: {e}", redacted_url(redis)),
        ));
    }
    let id = c.id.get_ref();
    if !valid_cluster_id(id) {
        return Err(src.error(
            c.id.span(),
            format!("cluster id {id:?} must be 1 to {MAX_CLUSTER_ID_CHARS} of A-Z a-z 0-9 . _ -"),
        ));
    }
    let advertise = match &c.advertise {
        None => None,
        Some(a) => {
            let url = a.get_ref().trim_end_matches('/');
            if !valid_advertise(url) {
                return Err(src.error(
                    a.span(),
                    format!(
                        "advertise = {:?} must be http://HOST:PORT or https://HOST:PORT, the address controls and agents reach this gateway at",
                        a.get_ref()
                    ),
                ));
            }
            Some(url.to_string())
        }
    };
    let relay = match c.cross.as_ref().map(|x| (x.get_ref().as_str(), x.span())) {
        None | Some(("redirect", _)) => false,
        Some(("relay", _)) => true,
        Some((other, span)) => {
            return Err(src.error(span, format!("cross = {other:?} is not \"redirect\" or \"relay\"")));
        }
    };
    let ca_file = match &c.ca_file {
        None => None,
        Some(p) if p.get_ref().trim().is_empty() => return Err(src.error(p.span(), "ca_file must name a file")),
        Some(p) => Some(PathBuf::from(p.get_ref())),
    };
    let password_file = match &c.password_file {
        None => None,
        Some(p) if p.get_ref().trim().is_empty() => {
            return Err(src.error(p.span(), "password_file must name a file"));
        }
        Some(p) => Some(PathBuf::from(p.get_ref())),
    };
    Ok(Some(ClusterConfig {
        redis: redis.clone(),
        password_file,
        password: None,
        id: id.clone(),
        advertise,
        lease: Duration::from_secs(CLUSTER_LEASE_SECS.take(&c.lease_secs, src)?),
        slack_percent: CLUSTER_SLACK_PERCENT.take(&c.slack_percent, src)?,
        spread: c.spread.unwrap_or(true),
        drain: Duration::from_secs(CLUSTER_DRAIN_SECS.take(&c.drain_secs, src)?),
        relay,
        ca_file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::section;

    fn parse(body: &str) -> Result<Option<ClusterConfig>, String> {
        section(&format!("[cluster]\n{body}"), "cluster", parse_cluster)
    }

    const BASE: &str = "redis = \"redis://127.0.0.1:6379/0\"\nid = \"gw1\"\nadvertise = \"http://10.0.0.1:8080\"\n";

    #[test]
    fn defaults_and_settings() {
        assert_eq!(section("", "cluster", parse_cluster), Ok(None));
        let c = parse(BASE).expect("valid").expect("present");
        assert_eq!(
            (
                c.id.as_str(),
                c.advertise.as_deref(),
                c.lease,
                c.slack_percent,
                c.spread
            ),
            ("gw1", Some("http://10.0.0.1:8080"), Duration::from_secs(15), 20, true)
        );
        let c = parse(&format!(
            "{BASE}lease_secs = 3\nslack_percent = 0\nspread = false\ncross = \"redirect\"\npassword_file = \"redis.pw\"\n"
        ))
        .expect("valid")
        .expect("present");
        assert_eq!(
            (c.lease, c.slack_percent, c.spread, c.password_file),
            (Duration::from_secs(3), 0, false, Some(PathBuf::from("redis.pw")))
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        assert_eq!(
            parse("redis = \"http://x:1\"\nid = \"gw1\"\nadvertise = \"http://a:1\"\n"),
            Err("test.toml:2: redis = \"http://x:1\" is not a redis://, rediss:// or unix:// URL".into())
        );
        assert_eq!(
            parse("redis = \"redis://127.0.0.1\"\nid = \"g w\"\nadvertise = \"http://a:1\"\n"),
            Err("test.toml:3: cluster id \"g w\" must be 1 to 32 of A-Z a-z 0-9 . _ -".into())
        );
        let e =
            parse("redis = \"redis://127.0.0.1\"\nid = \"gw\"\nadvertise = \"10.0.0.1:80\"\n").expect_err("no scheme");
        assert!(e.starts_with("test.toml:4: advertise = \"10.0.0.1:80\" must be"), "{e}");
        assert_eq!(
            parse(&format!("{BASE}cross = \"tunnel\"\n")),
            Err("test.toml:5: cross = \"tunnel\" is not \"redirect\" or \"relay\"".into())
        );
        let c = parse(&format!("{BASE}cross = \"relay\"\nca_file = \"ca.pem\"\n"))
            .expect("valid")
            .expect("present");
        assert_eq!((c.relay, c.ca_file), (true, Some(PathBuf::from("ca.pem"))));
        assert_eq!(
            parse(&format!("{BASE}lease_secs = 1\n")),
            Err("test.toml:5: lease_secs = 1 is out of range (2 to 300)".into())
        );
    }

    #[test]
    fn unix_sockets_and_an_advertise_taken_from_the_listen_address() {
        let c = parse("redis = \"unix:///run/redis/redis.sock\"\nid = \"gw1\"\n")
            .expect("valid")
            .expect("present");
        assert_eq!((c.redis.as_str(), c.advertise), ("unix:///run/redis/redis.sock", None));
    }

    #[test]
    fn the_password_in_a_url_is_never_shown() {
        let c = parse("redis = \"redis://:s3cret@127.0.0.1:6379\"\nid = \"gw1\"\nadvertise = \"http://a:1\"\n")
            .expect("valid")
            .expect("present");
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        assert_eq!(redacted_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redacted_url("redis://h:1/0"), "redis://h:1/0");
        let e = parse("redis = \"http://:s3cret@x:1\"\nid = \"gw1\"\nadvertise = \"http://a:1\"\n").expect_err("bad");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn ids_and_advertised_addresses() {
        assert!(valid_cluster_id("eu-west.1_a"));
        assert!(!valid_cluster_id(""));
        assert!(!valid_cluster_id(&"a".repeat(33)));
        assert!(!valid_cluster_id("gw:1"));
        assert!(valid_advertise("https://gw2.example.com:443"));
        assert!(valid_advertise("http://[::1]:8080"));
        assert!(!valid_advertise("http://host"));
        assert!(!valid_advertise("http://host:0"));
        assert!(!valid_advertise("http://host:80/path"));
        assert!(!valid_advertise("ftp://host:21"));
    }
}
