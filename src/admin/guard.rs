//! Who the admin listener answers: the checks on `Host` (DNS rebinding),
//! on `Origin` and its fallbacks (cross-site request forgery) and on the
//! token. Pure functions over a parsed head, no I/O.
//!
//! A browser is the attacker's tool in both holes: a page on another site
//! can post a form to `127.0.0.1:9090` (CSRF), and a page whose name is
//! re-pointed at `127.0.0.1` reads the answers as its own (DNS rebinding;
//! the browser then sends the attacker's name as `Host`). So `Host` must
//! name this listener, and a request that changes state must come from a
//! page of this listener's own origin.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use crate::http::RequestHead;

/// Why a request is refused. Each has its status and a one-line reason
/// for the body, which never echoes what the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` names someone else (403).
    ForeignHost,
    /// No `Host` (400): HTTP/1.1 requires one.
    NoHost,
    /// Two `Host` headers (400): which one a proxy in between acted on is
    /// unknowable.
    TwoHosts,
    /// A state-changing request whose `Origin` is another's (403).
    ForeignOrigin,
    /// A browser says another site sent it (403).
    ForeignSite,
    /// A state-changing request whose `Referer` is another's (403).
    ForeignReferer,
}

impl Refusal {
    /// The status code answered.
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoHost | Refusal::TwoHosts => 400,
            Refusal::ForeignHost | Refusal::ForeignOrigin | Refusal::ForeignSite | Refusal::ForeignReferer => 403,
        }
    }

    /// The reason, for the body.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ForeignHost => {
                "this Host is not the admin listener's address, localhost or a name in [admin] hosts"
            }
            Refusal::NoHost => "a Host header is required",
            Refusal::TwoHosts => "more than one Host header",
            Refusal::ForeignOrigin => "cross-origin request refused: Origin is not this console's own",
            Refusal::ForeignSite => "cross-origin request refused: Sec-Fetch-Site says another site sent it",
            Refusal::ForeignReferer => "cross-origin request refused: Referer is not this console's own",
        }
    }
}

/// Port a `Host` without one means: the scheme's default, and the admin
/// listener speaks plain HTTP.
const DEFAULT_HTTP_PORT: u16 = 80;

/// Loopback names a local browser or tool may use for the listener.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Checks the `Host` header against the address the connection reached
/// (`local`), loopback names with that port, and the configured names
/// (`[admin] hosts`: DNS names and IP addresses without brackets or port,
/// matched with any port, since a reverse proxy in front may serve
/// another). Returns the header's value for the origin check.
pub fn check_host<'h>(head: &'h RequestHead, local: SocketAddr, configured: &[String]) -> Result<&'h str, Refusal> {
    let mut values = head
        .headers
        .iter()
        .filter(|(n, _)| n == "host")
        .map(|(_, v)| v.as_str());
    let value = values.next().ok_or(Refusal::NoHost)?;
    if values.next().is_some() {
        return Err(Refusal::TwoHosts);
    }
    let (name, port) = split_host(value).ok_or(Refusal::ForeignHost)?;
    let own_ip = match local.ip().to_canonical() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let on_our_port = port.unwrap_or(DEFAULT_HTTP_PORT) == local.port();
    let ours = on_our_port
        && (name.eq_ignore_ascii_case(&own_ip) || LOOPBACK_NAMES.iter().any(|n| name.eq_ignore_ascii_case(n)));
    // The configured form of an IPv6 literal is canonical and bare.
    let bare = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().map_err(|_| Refusal::ForeignHost)?.to_string(),
        None => name.to_string(),
    };
    let listed = configured.iter().any(|entry| entry.eq_ignore_ascii_case(&bare));
    if ours || listed {
        Ok(value)
    } else {
        Err(Refusal::ForeignHost)
    }
}

/// Splits `name[:port]` or `[v6]:port`; `None` when it is neither (a
/// bare IPv6 address, an empty name, a port that is not a number).
fn split_host(value: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if value.starts_with('[') {
        let end = value.find(']')? + 1;
        match &value[end..] {
            "" => (&value[..end], None),
            rest => (&value[..end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match value.split_once(':') {
            None => (value, None),
            Some((name, port)) => (name, Some(port)),
        }
    };
    let port = match port {
        None => None,
        // Digits only: `u16::from_str` would also take a leading `+`.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    (!name.is_empty()).then_some((name, port))
}

/// Checks that a state-changing request comes from this console's own
/// origin, `http(s)://<host>`. Browsers send `Origin` on every POST; a
/// request without it is refused only when `Sec-Fetch-Site` or `Referer`
/// shows another page sent it. A request with none of them is a tool's
/// (curl, `ringway reload`), which no web page can make.
pub fn check_origin(head: &RequestHead, host: &str) -> Result<(), Refusal> {
    if let Some(origin) = head.header("origin") {
        return if authority_of(origin).is_some_and(|a| a.eq_ignore_ascii_case(host)) {
            Ok(())
        } else {
            Err(Refusal::ForeignOrigin)
        };
    }
    if let Some(site) = head.header("sec-fetch-site") {
        // `same-site` is another origin too: another port on the same
        // address, for one.
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Err(Refusal::ForeignSite);
        }
    }
    if let Some(referer) = head.header("referer") {
        let authority = authority_of(referer).map(|a| a.split(['/', '?', '#']).next().unwrap_or(a));
        if !authority.is_some_and(|a| a.eq_ignore_ascii_case(host)) {
            return Err(Refusal::ForeignReferer);
        }
    }
    Ok(())
}

/// What follows `http://` or `https://` (any case); `None` for other
/// schemes and for `null`.
fn authority_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

/// The token a request carries: `Authorization: Bearer <token>` (scheme
/// in any case), else `?token=<token>` for a browser's address bar.
pub fn given_token(head: &RequestHead) -> Option<&str> {
    let bearer = head
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let query = || {
        head.target
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
    };
    bearer.or_else(query)
}

/// Whether `given` is the token, in time that depends on neither how
/// much of it is right nor its length: both sides are hashed first, since
/// `subtle` compares slices of different lengths as unequal at once.
pub fn token_matches(given: &str, token: &str) -> bool {
    let given = digest(&SHA256, given.as_bytes());
    let token = digest(&SHA256, token.as_bytes());
    given.as_ref().ct_eq(token.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    fn host(value: &str, local: &str, configured: &[&str]) -> Result<(), Refusal> {
        let configured: Vec<String> = configured.iter().map(|s| s.to_string()).collect();
        let local = local.parse().expect("a socket address");
        check_host(&head("GET", "/", &[("host", value)]), local, &configured).map(|_| ())
    }

    #[test]
    fn the_listeners_own_names_are_served_with_its_port() {
        for value in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LocalHost:9090",
            "[::1]:9090",
            "10.1.2.3:9090",
        ] {
            assert_eq!(host(value, "10.1.2.3:9090", &[]), Ok(()), "{value}");
        }
        assert_eq!(host("[2001:db8::7]:9090", "[2001:db8::7]:9090", &[]), Ok(()));
        assert_eq!(host("127.0.0.1:9090", "[::ffff:127.0.0.1]:9090", &[]), Ok(()));
        assert_eq!(host("localhost", "127.0.0.1:80", &[]), Ok(()));
    }

    #[test]
    fn a_rebound_name_or_another_port_is_refused() {
        for value in [
            "evil.example",
            "evil.example:9090",
            "localhost:9091",
            "localhost",
            "127.0.0.1:09090x",
            "127.0.0.1:+9090",
            "127.0.0.1:",
            "::1",
            "[::1",
            "[::1]x9090",
            ":9090",
            "localhost.:9090",
        ] {
            assert_eq!(host(value, "127.0.0.1:9090", &[]), Err(Refusal::ForeignHost), "{value}");
        }
    }

    #[test]
    fn configured_names_match_with_any_port() {
        let names = ["console.example", "2001:db8::1", "192.0.2.7"];
        for value in [
            "console.example",
            "Console.Example:9090",
            "console.example:443",
            "[2001:db8::1]:9090",
            "[2001:DB8:0::1]",
            "192.0.2.7:8080",
        ] {
            assert_eq!(host(value, "127.0.0.1:9090", &names), Ok(()), "{value}");
        }
        for value in [
            "other.example:9090",
            "sub.console.example",
            "console.example.evil",
            "2001:db8::1",
            "[2001:db8::1:9090",
            "[console.example]:9090",
        ] {
            assert_eq!(
                host(value, "127.0.0.1:9090", &names),
                Err(Refusal::ForeignHost),
                "{value}"
            );
        }
    }

    #[test]
    fn a_missing_or_doubled_host_is_a_bad_request() {
        let local = "127.0.0.1:9090".parse().expect("a socket address");
        assert_eq!(check_host(&head("GET", "/", &[]), local, &[]), Err(Refusal::NoHost));
        let two = head("GET", "/", &[("host", "127.0.0.1:9090"), ("host", "evil.example")]);
        assert_eq!(check_host(&two, local, &[]), Err(Refusal::TwoHosts));
    }

    #[test]
    fn only_the_consoles_own_origin_may_post() {
        let host = "127.0.0.1:9090";
        let post = |headers: &[(&str, &str)]| check_origin(&head("POST", "/api/reload", headers), host);
        assert_eq!(post(&[]), Ok(()), "a tool sends none of them");
        assert_eq!(post(&[("origin", "http://127.0.0.1:9090")]), Ok(()));
        assert_eq!(
            post(&[("origin", "HTTPS://127.0.0.1:9090")]),
            Ok(()),
            "behind a TLS proxy"
        );
        assert_eq!(post(&[("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(post(&[("referer", "http://127.0.0.1:9090/?token=x")]), Ok(()));
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:9091",
            "http://127.0.0.1:9090/x",
            "ftp://127.0.0.1:9090",
        ] {
            assert_eq!(post(&[("origin", origin)]), Err(Refusal::ForeignOrigin), "{origin}");
        }
        // Origin decides when present, whatever else says.
        assert_eq!(
            post(&[("origin", "http://evil.example"), ("sec-fetch-site", "same-origin")]),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(post(&[("sec-fetch-site", "cross-site")]), Err(Refusal::ForeignSite));
        assert_eq!(post(&[("sec-fetch-site", "same-site")]), Err(Refusal::ForeignSite));
        for referer in [
            "http://evil.example/",
            "http://127.0.0.1:9090.evil.example/",
            "about:blank",
        ] {
            assert_eq!(post(&[("referer", referer)]), Err(Refusal::ForeignReferer), "{referer}");
        }
    }

    #[test]
    fn the_token_comes_from_a_bearer_header_or_the_query() {
        let bearer = head("GET", "/", &[("authorization", "bearer s3cret-admin-token")]);
        assert_eq!(given_token(&bearer), Some("s3cret-admin-token"));
        let basic = head("GET", "/", &[("authorization", "Basic czNjcmV0")]);
        assert_eq!(given_token(&basic), None);
        let query = head("GET", "/?a=1&token=s3cret", &[]);
        assert_eq!(given_token(&query), Some("s3cret"));
        assert_eq!(given_token(&head("GET", "/", &[])), None);
    }

    #[test]
    fn the_token_compare_needs_every_byte_and_the_length() {
        assert!(token_matches("s3cret-admin-token", "s3cret-admin-token"));
        assert!(!token_matches("s3cret-admin-tokeN", "s3cret-admin-token"));
        assert!(!token_matches("s3cret-admin-toke", "s3cret-admin-token"));
        assert!(!token_matches("s3cret-admin-token!", "s3cret-admin-token"));
        assert!(!token_matches("", "s3cret-admin-token"));
    }
}
