//! A veth between two of the test's namespaces, and packet faults on its
//! ends made with what this kernel has: iptables' `statistic` match drops
//! packets at random, and an HTB class that only a random share of packets
//! is sent through (iptables `CLASSIFY`) holds them back behind the others,
//! which reorders them. There is no `tc netem` here (nor fq_codel, prio or
//! any tc filter), so delay comes from a user-space proxy instead
//! (delay_proxy.rs).
//!
//! Every rule lives in a namespace of the test's own (netns.rs) and goes
//! with it; none is ever added to the machine's own tables.

use std::net::Ipv4Addr;

use super::Netns;

/// Rate of the HTB class that reordered packets go through. Around a
/// twentieth of a transfer's packets at tens of MB/s is a few MB/s, close
/// enough to 20 Mbit/s that the class queues them for a few packets'
/// time while the rest pass at once; measured here, that reorders
/// thousands of segments in 64 MiB without starving the class.
const SLOW_CLASS_RATE: &str = "20mbit";

/// Bucket of that class: one full-size packet, so it cannot pass a burst
/// through at once and reorder nothing.
const SLOW_CLASS_BURST: &str = "1600";

/// Rate of the class every other packet goes through: far above what
/// the machine moves, so it only forwards.
const FAST_CLASS_RATE: &str = "10gbit";

/// HTB's rate-to-quantum divisor: large, so the 10 Gbit/s class does not
/// get a quantum HTB warns about.
const HTB_R2Q: &str = "100000";

/// What to do to the packets leaving one end of a link.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Share of packets dropped, 0 to 1.
    pub loss: f64,
    /// Share of packets held back behind the others, 0 to 1.
    pub reorder: f64,
}

/// One end of a veth: its namespace's device and address.
#[derive(Debug, Clone)]
pub struct LinkEnd {
    /// The device inside its namespace.
    pub dev: String,
    /// Its address (a /24 shared with the other end).
    pub addr: Ipv4Addr,
}

/// Joins `a` and `b` with a veth named `a_dev`/`b_dev`, addressed
/// `a_addr`/`b_addr` in one /24. Segmentation offloads are turned off
/// (at most one MTU per packet), so a drop or a reorder hits one
/// segment, as on a real link, not a 64 KiB burst of them.
pub fn veth(a: &Netns, a_end: (&str, Ipv4Addr), b: &Netns, b_end: (&str, Ipv4Addr)) -> (LinkEnd, LinkEnd) {
    let (a_dev, a_addr) = a_end;
    let (b_dev, b_addr) = b_end;
    let b_path = b.path();
    a.exec(
        "ip",
        &[
            "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b_path,
        ],
    );
    for (ns, dev, addr) in [(a, a_dev, a_addr), (b, b_dev, b_addr)] {
        ns.exec("ip", &["addr", "add", &format!("{addr}/24"), "dev", dev]);
        ns.exec(
            "ip",
            &["link", "set", dev, "gso_max_size", "1500", "gso_max_segs", "1", "up"],
        );
    }
    let end = |dev: &str, addr| LinkEnd {
        dev: dev.to_string(),
        addr,
    };
    (end(a_dev, a_addr), end(b_dev, b_addr))
}

/// Applies `faults` to the packets leaving `ns` through `end`.
pub fn impair(ns: &Netns, end: &LinkEnd, faults: Impairment) {
    let (dev, loss, reorder) = (&end.dev, faults.loss, faults.reorder);
    let random = "-m statistic --mode random --probability";
    let commands = [
        (
            "tc",
            format!("qdisc add dev {dev} root handle 1: htb default 10 r2q {HTB_R2Q}"),
        ),
        (
            "tc",
            format!("class add dev {dev} parent 1: classid 1:10 htb rate {FAST_CLASS_RATE}"),
        ),
        (
            "tc",
            format!(
                "class add dev {dev} parent 1: classid 1:20 htb rate {SLOW_CLASS_RATE} \
                 burst {SLOW_CLASS_BURST} cburst {SLOW_CLASS_BURST}"
            ),
        ),
        ("iptables", format!("-w -A OUTPUT -o {dev} {random} {loss} -j DROP")),
        (
            "iptables",
            format!("-w -t mangle -A POSTROUTING -o {dev} {random} {reorder} -j CLASSIFY --set-class 1:20"),
        ),
    ];
    for (program, args) in commands {
        ns.exec(program, &args.split_whitespace().collect::<Vec<_>>());
    }
}

/// How many packets the loss rule on `end` has dropped so far.
pub fn dropped(ns: &Netns, end: &LinkEnd) -> u64 {
    rule_packets(ns, ("filter", "OUTPUT"), "DROP", end)
}

/// How many packets the reorder rule on `end` has sent through the slow
/// class so far.
pub fn held_back(ns: &Netns, end: &LinkEnd) -> u64 {
    rule_packets(ns, ("mangle", "POSTROUTING"), "CLASSIFY", end)
}

/// The packet count of the rule in `(table, chain)` that jumps to
/// `target` for packets leaving through `end`, from `iptables -L -v -x -n`
/// (columns: `pkts bytes target prot opt in out ...`).
fn rule_packets(ns: &Netns, (table, chain): (&str, &str), target: &str, end: &LinkEnd) -> u64 {
    let listing = ns.exec("iptables", &["-w", "-t", table, "-L", chain, "-v", "-x", "-n"]);
    let count = listing.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_rule = fields.get(2) == Some(&target) && fields.get(6) == Some(&end.dev.as_str());
        is_rule.then(|| fields.first()?.parse().ok()).flatten()
    });
    count.unwrap_or_else(|| panic!("no {target} rule out of {} in {table}/{chain}:\n{listing}", end.dev))
}
