//! Source addresses to dial from, and how many connections they can carry.
//!
//! One source address gives one ephemeral port per connection (a socket
//! bound to `ip:0` before connecting holds its port exclusively), so a few
//! thousand agents fit on one address but 50,000 do not: the load
//! generator spreads its connections round-robin over a range such as
//! `127.0.0.2-127.0.0.60`. Every 127.x.y.z address reaches the loopback
//! interface on Linux with no setup.

use std::net::{IpAddr, Ipv4Addr};

/// Most source addresses one range may name. 65,536 is a /16: far more
/// than any run needs (60 addresses carry 1.5 million connections), and it
/// stops a typo such as `127.0.0.2-127.255.0.1` from allocating millions.
pub const MAX_SOURCES: usize = 65_536;

/// The ephemeral port range Linux uses when none can be read: its default.
const DEFAULT_PORT_RANGE: (u32, u32) = (32_768, 60_999);

/// Parses `A`, `A-B` (inclusive, IPv4) or a comma-separated list of those.
pub fn parse(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            None => out.push(
                part.parse::<IpAddr>()
                    .map_err(|_| format!("{part:?} is not an IP address"))?,
            ),
            Some((a, b)) => {
                let v4 = |s: &str| {
                    s.trim()
                        .parse::<Ipv4Addr>()
                        .map_err(|_| format!("{s:?} is not an IPv4 address (ranges are IPv4 only)"))
                };
                let (a, b) = (u32::from(v4(a)?), u32::from(v4(b)?));
                if b < a {
                    return Err(format!("range {part:?} ends before it starts"));
                }
                if (b - a) as usize >= MAX_SOURCES - out.len() {
                    return Err(format!("more than {MAX_SOURCES} source addresses"));
                }
                out.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
        }
        if out.len() > MAX_SOURCES {
            return Err(format!("more than {MAX_SOURCES} source addresses"));
        }
    }
    if out.is_empty() {
        return Err("no source address given".into());
    }
    Ok(out)
}

/// How many ephemeral ports one source address offers
/// (`/proc/sys/net/ipv4/ip_local_port_range`, else Linux's default).
pub fn ports_per_address() -> usize {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(DEFAULT_PORT_RANGE);
    (range.1 - range.0 + 1) as usize
}

/// Parses the two numbers of `ip_local_port_range`.
fn parse_port_range(text: &str) -> Option<(u32, u32)> {
    let mut it = text.split_whitespace().map(|w| w.parse::<u32>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    (lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        let v = parse("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(v[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        let v = parse("127.0.0.9, 127.0.1.255-127.0.2.0").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2], "127.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(parse("::1").unwrap().len(), 1);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(parse("127.0.0.4-127.0.0.2").is_err());
        assert!(parse("127.0.0.1-::1").is_err());
        assert!(parse("localhost").is_err());
        assert!(parse("").is_err());
        assert!(parse("10.0.0.0-10.255.255.255").is_err());
    }

    #[test]
    fn port_range_file() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("5 1"), None);
        assert_eq!(parse_port_range("junk"), None);
    }
}
