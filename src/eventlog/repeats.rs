//! Repeated events from one source, summarised: the first line from a
//! source in a window is written as is, the rest are counted, and one
//! line says how many when the window closes. So a flood of failed proofs
//! costs the log two lines per source per window instead of rotating real
//! events out of it. Time is an input: nothing here reads a clock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// How long a source's window stays open after its first event: long
/// enough that a flood costs two lines per source per window, short
/// enough that an admin watching the log sees the count soon.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Most sources with an open window at once. Addresses come from the
/// network, so the table must not grow with them: at a few hundred bytes
/// a window this is about 1 MiB at worst. Sources past it share one
/// window ("from other sources"), counted and never written one by one.
pub const MAX_SOURCES: usize = 4096;

/// What repeats are grouped by: an IPv4 address, or an IPv6 /64 (one
/// host is usually given a whole /64, so its addresses are one source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// One IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Net(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            // The shift leaves exactly 64 bits: the cast loses nothing.
            IpAddr::V6(v6) => Source::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*net) << 64)),
        }
    }
}

/// One open window.
struct Window {
    /// When its first event came; it closes [`Repeats::window`] later.
    opened: Instant,
    /// Events in it that were not written.
    not_written: u64,
    /// The text of the last of those, shown in the summary, so the admin
    /// sees the latest reason and name rather than the first again.
    last: String,
}

impl Window {
    fn new(opened: Instant) -> Window {
        Window {
            opened,
            not_written: 0,
            last: String::new(),
        }
    }

    fn count(&mut self, text: String) {
        self.not_written = self.not_written.saturating_add(1);
        self.last = text;
    }
}

/// The summariser's state: one window per recent source, bounded.
pub(super) struct Repeats {
    /// How long a window stays open ([`REPEAT_WINDOW`] but in tests).
    window: Duration,
    /// Most entries in `open`.
    capacity: usize,
    /// The open window of each source that has one.
    open: HashMap<Source, Window>,
    /// The keys of `open`, oldest window first. Every window is equally
    /// long, so they close in this order: closing is a pop, never a scan.
    order: VecDeque<(Instant, Source)>,
    /// The shared window of sources that found the table full.
    others: Option<Window>,
    /// The latest `now` seen. Times are clamped to it, so an out-of-order
    /// caller cannot unsort `order`.
    clock: Option<Instant>,
}

impl Repeats {
    /// An empty summariser with windows of `window` and room for
    /// `capacity` sources.
    pub(super) fn new(window: Duration, capacity: usize) -> Repeats {
        Repeats {
            window,
            capacity,
            open: HashMap::new(),
            order: VecDeque::new(),
            others: None,
            clock: None,
        }
    }

    /// An event `text` from `source` at `now`. Pushes onto `out` the
    /// summaries of windows that `now` closes, then `text` itself if it is
    /// the first from its source in a window; otherwise it is counted.
    pub(super) fn offer(&mut self, now: Instant, source: IpAddr, text: String, out: &mut Vec<String>) {
        let now = self.tick(now);
        self.close_due(now, out);
        let source = Source::from(source);
        if let Some(open) = self.open.get_mut(&source) {
            return open.count(text);
        }
        if self.open.len() < self.capacity {
            self.open.insert(source, Window::new(now));
            self.order.push_back((now + self.window, source));
            return out.push(text);
        }
        self.others.get_or_insert_with(|| Window::new(now)).count(text);
    }

    /// Pushes onto `out` the summaries of the windows closed by `now`,
    /// oldest first.
    pub(super) fn close_due(&mut self, now: Instant, out: &mut Vec<String>) {
        let now = self.tick(now);
        while let Some(&(closes, source)) = self.order.front()
            && closes <= now
        {
            self.order.pop_front();
            if let Some(closed) = self.open.remove(&source) {
                out.extend(summary(closed, &source, self.window));
            }
        }
        if self.others.as_ref().is_some_and(|w| w.opened + self.window <= now) {
            out.extend(
                self.others
                    .take()
                    .and_then(|w| summary(w, &"other sources", self.window)),
            );
        }
    }

    /// Pushes onto `out` the summary of every open window, however young
    /// (at shutdown: the counts must not be lost), and empties the table.
    pub(super) fn close_all(&mut self, now: Instant, out: &mut Vec<String>) {
        let now = self.tick(now);
        let span = |w: &Window| now.saturating_duration_since(w.opened).min(self.window);
        for (_, source) in self.order.drain(..) {
            if let Some(w) = self.open.remove(&source) {
                let span = span(&w);
                out.extend(summary(w, &source, span));
            }
        }
        if let Some(w) = self.others.take() {
            let span = span(&w);
            out.extend(summary(w, &"other sources", span));
        }
    }

    /// When the next window closes, if any is open: the writer sleeps
    /// until then at most, so a summary never waits for another event.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let first = self.order.front().map(|&(closes, _)| closes);
        let others = self.others.as_ref().map(|w| w.opened + self.window);
        first.into_iter().chain(others).min()
    }

    /// How many sources have a window open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }

    fn tick(&mut self, now: Instant) -> Instant {
        let now = self.clock.map_or(now, |c| c.max(now));
        self.clock = Some(now);
        now
    }
}

/// `<last text> … and 3,199 more from 127.0.0.2 in the last 10 s`, or
/// nothing if every event of the window was written.
fn summary(w: Window, from: &dyn fmt::Display, span: Duration) -> Option<String> {
    // Whole seconds, rounded up: a window cut short at shutdown is "1 s".
    let secs = span.as_secs() + u64::from(span.subsec_nanos() > 0);
    let (n, last) = (w.not_written, w.last);
    (n > 0).then(|| {
        format!(
            "{last} … and {} more from {from} in the last {} s",
            thousands(n),
            secs.max(1)
        )
    })
}

/// `3199` as `3,199`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    /// A summariser with the real window, and an origin for time.
    fn start(capacity: usize) -> (Repeats, Instant) {
        (Repeats::new(REPEAT_WINDOW, capacity), Instant::now())
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn offer(r: &mut Repeats, at: Instant, from: IpAddr, text: &str) -> Vec<String> {
        let mut out = vec![];
        r.offer(at, from, text.to_string(), &mut out);
        out
    }

    fn close_due(r: &mut Repeats, at: Instant) -> Vec<String> {
        let mut out = vec![];
        r.close_due(at, &mut out);
        out
    }

    #[test]
    fn thousands_are_separated_by_commas() {
        let cases = [(0, "0"), (7, "7"), (999, "999"), (1000, "1,000"), (3199, "3,199")];
        for (n, text) in cases {
            assert_eq!(thousands(n), text);
        }
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn first_is_written_repeats_are_counted_and_summed_when_the_window_closes() {
        let (mut r, t0) = start(MAX_SOURCES);
        assert_eq!(offer(&mut r, t0, A, "bad 0"), ["bad 0"]);
        for i in 1..3200 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(offer(&mut r, at, A, &format!("bad {i}")), Vec::<String>::new());
        }
        assert_eq!(r.next_deadline(), Some(t0 + REPEAT_WINDOW));
        assert_eq!(
            close_due(&mut r, t0 + secs(10) - Duration::from_nanos(1)),
            Vec::<String>::new()
        );
        let summary = "bad 3199 … and 3,199 more from 127.0.0.2 in the last 10 s";
        assert_eq!(close_due(&mut r, t0 + secs(10)), [summary]);
        assert_eq!((r.len(), r.next_deadline()), (0, None));
        // The next event opens a new window and is written again.
        assert_eq!(offer(&mut r, t0 + secs(11), A, "bad again"), ["bad again"]);
    }

    #[test]
    fn a_lone_event_closes_its_window_silently() {
        let (mut r, t0) = start(MAX_SOURCES);
        assert_eq!(offer(&mut r, t0, A, "once"), ["once"]);
        assert_eq!(close_due(&mut r, t0 + secs(10)), Vec::<String>::new());
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn sources_are_counted_apart_and_close_in_order() {
        let (mut r, t0) = start(MAX_SOURCES);
        assert_eq!(offer(&mut r, t0, A, "a1"), ["a1"]);
        assert_eq!(offer(&mut r, t0 + secs(2), B, "b1"), ["b1"]);
        offer(&mut r, t0 + secs(3), A, "a2");
        offer(&mut r, t0 + secs(4), B, "b2");
        offer(&mut r, t0 + secs(5), B, "b3");
        assert_eq!(r.next_deadline(), Some(t0 + secs(10)));
        // An event after both deadlines closes both windows first, oldest
        // first, and is itself the first of a new window.
        let out = offer(&mut r, t0 + secs(13), B, "b4");
        let expect = [
            "a2 … and 1 more from 127.0.0.2 in the last 10 s",
            "b3 … and 2 more from 10.0.0.5 in the last 10 s",
            "b4",
        ];
        assert_eq!(out, expect);
        assert_eq!(r.next_deadline(), Some(t0 + secs(23)));
    }

    #[test]
    fn ipv6_sources_are_grouped_per_64_and_mapped_ipv4_is_ipv4() {
        let (mut r, t0) = start(MAX_SOURCES);
        assert_eq!(offer(&mut r, t0, ip("2001:db8:1:2::1"), "v6"), ["v6"]);
        offer(&mut r, t0, ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), "same /64");
        assert_eq!(offer(&mut r, t0, ip("2001:db8:1:3::1"), "next /64"), ["next /64"]);
        assert_eq!(offer(&mut r, t0, ip("127.0.0.2"), "v4"), ["v4"]);
        offer(&mut r, t0, ip("::ffff:127.0.0.2"), "mapped");
        let expect = [
            "same /64 … and 1 more from 2001:db8:1:2::/64 in the last 10 s",
            "mapped … and 1 more from 127.0.0.2 in the last 10 s",
        ];
        assert_eq!(close_due(&mut r, t0 + secs(10)), expect);
    }

    #[test]
    fn a_spoofed_address_flood_fills_the_table_and_no_more() {
        let (mut r, t0) = start(4);
        let sources: Vec<IpAddr> = (0..1000u32).map(|i| IpAddr::V4(Ipv4Addr::from_bits(i))).collect();
        let mut written = 0;
        for (i, &s) in sources.iter().enumerate() {
            written += offer(&mut r, t0, s, &format!("from {s} #{i}")).len();
        }
        assert_eq!((written, r.len()), (4, 4));
        // A tracked source is still counted as itself.
        offer(&mut r, t0 + secs(1), sources[0], "again");
        let expect = [
            "again … and 1 more from 0.0.0.0 in the last 10 s",
            "from 0.0.3.231 #999 … and 996 more from other sources in the last 10 s",
        ];
        assert_eq!(close_due(&mut r, t0 + secs(10)), expect);
        assert_eq!((r.len(), r.next_deadline()), (0, None));
    }

    #[test]
    fn the_other_sources_window_has_its_own_deadline() {
        let (mut r, t0) = start(1);
        offer(&mut r, t0, A, "a");
        offer(&mut r, t0 + secs(4), B, "b");
        assert_eq!(r.next_deadline(), Some(t0 + secs(10)));
        assert_eq!(close_due(&mut r, t0 + secs(10)), Vec::<String>::new());
        assert_eq!(r.next_deadline(), Some(t0 + secs(14)));
        let expect = ["b … and 1 more from other sources in the last 10 s"];
        assert_eq!(close_due(&mut r, t0 + secs(14)), expect);
    }

    #[test]
    fn close_all_sums_young_windows_with_their_real_span() {
        let (mut r, t0) = start(1);
        offer(&mut r, t0, A, "a1");
        offer(&mut r, t0 + Duration::from_millis(100), A, "a2");
        offer(&mut r, t0 + secs(2), B, "b1");
        let mut out = vec![];
        r.close_all(t0 + Duration::from_millis(3500), &mut out);
        let expect = [
            "a2 … and 1 more from 127.0.0.2 in the last 4 s",
            "b1 … and 1 more from other sources in the last 2 s",
        ];
        assert_eq!(out, expect);
        assert_eq!((r.len(), r.next_deadline()), (0, None));
    }

    #[test]
    fn time_going_backwards_is_taken_as_now() {
        let (mut r, t0) = start(MAX_SOURCES);
        offer(&mut r, t0 + secs(5), A, "a");
        // An earlier instant (another thread's clock read) counts as t0+5.
        assert_eq!(offer(&mut r, t0, B, "b"), ["b"]);
        assert_eq!(r.next_deadline(), Some(t0 + secs(15)));
        assert_eq!(close_due(&mut r, t0 + secs(15)).len(), 0);
        assert_eq!(r.next_deadline(), None);
    }
}
