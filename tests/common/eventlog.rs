//! The event log files (`GWnnn.log`): reading them back, checking their
//! stamps, and waiting for lines (the writer is a thread of its own with
//! no event to wait on, so its folder is polled with a bound).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringway::timefmt::rfc3339;

use super::{EVENT_TIMEOUT, Gateway, poll_until};

/// Month names of the event log's stamps.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// Length of `dd-Mon-yy, HH:MM:SS, `.
pub const STAMP_LEN: usize = 21;

/// Numbers of the `GWnnn.log` files in `dir`, ascending.
pub fn log_numbers(dir: &Path) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut numbers: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix("GW")?.strip_suffix(".log")?.parse().ok()?;
            (format!("GW{n:03}.log") == name).then_some(n)
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

/// Every file name in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read the log folder")
        .map(|e| e.expect("log folder entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The complete lines of log file `number` (a line still being written is
/// left out).
pub fn log_lines(dir: &Path, number: u64) -> Vec<String> {
    let content = fs::read_to_string(dir.join(format!("GW{number:03}.log"))).unwrap_or_default();
    let complete = content.rfind('\n').map_or("", |end| &content[..=end]);
    assert!(!complete.contains('\r'), "a CR in the event log: {complete:?}");
    complete.lines().map(str::to_string).collect()
}

/// Checks a line's `dd-Mon-yy, HH:MM:SS, ` prefix by shape; returns the
/// stamp and the event text.
pub fn split_stamp(line: &str) -> (&str, &str) {
    let (stamp, text) = line
        .split_at_checked(STAMP_LEN)
        .unwrap_or_else(|| panic!("line too short for a stamp: {line:?}"));
    let digits = |r: std::ops::Range<usize>| stamp.get(r).is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
    let month = stamp.get(3..6).unwrap_or_default();
    let ok = digits(0..2)
        && stamp.get(2..3) == Some("-")
        && MONTHS.contains(&month)
        && stamp.get(6..7) == Some("-")
        && digits(7..9)
        && stamp.get(9..11) == Some(", ")
        && digits(11..13)
        && stamp.get(13..14) == Some(":")
        && digits(14..16)
        && stamp.get(16..17) == Some(":")
        && digits(17..19)
        && stamp.get(19..21) == Some(", ");
    assert!(ok, "bad stamp in event log line {line:?}");
    (stamp, text)
}

/// Every line of every log file in `dir`, oldest file first, stamps
/// checked by shape.
pub fn log_raw_lines(dir: &Path) -> Vec<String> {
    let lines: Vec<String> = log_numbers(dir).into_iter().flat_map(|n| log_lines(dir, n)).collect();
    for l in &lines {
        split_stamp(l);
    }
    lines
}

/// The event texts of [`log_raw_lines`].
pub fn log_texts(dir: &Path) -> Vec<String> {
    log_raw_lines(dir)
        .iter()
        .map(|l| split_stamp(l).1.to_string())
        .collect()
}

/// Polls the log folder (the writer is a thread of its own, with no event
/// to wait on) until `done` holds; returns its texts then.
pub fn wait_log(dir: &Path, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    poll_until(EVENT_TIMEOUT, || {
        let texts = log_texts(dir);
        done(&texts).then_some(texts)
    })
    .unwrap_or_else(|| {
        panic!(
            "the event log never held {what}; it has:\n{}",
            log_texts(dir).join("\n")
        )
    })
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The stamp the event log writes for Unix second `at`.
pub fn stamp(at: u64, utc: bool) -> String {
    if utc {
        // From an independent formatter: 2026-11-22T03:23:19Z.
        let t = rfc3339(UNIX_EPOCH + Duration::from_secs(at));
        let month: usize = t[5..7].parse().expect("month digits");
        return format!("{}-{}-{}, {}, ", &t[8..10], MONTHS[month - 1], &t[2..4], &t[11..19]);
    }
    // The system zone (TZ, else /etc/localtime), as the gateway reads it.
    let at = jiff::Timestamp::from_second(i64::try_from(at).expect("a Unix second")).expect("in jiff's range");
    let local = jiff::tz::TimeZone::system().to_datetime(at);
    let month = MONTHS[usize::try_from(local.month() - 1).expect("month 1..=12")];
    format!(
        "{:02}-{month}-{:02}, {:02}:{:02}:{:02}, ",
        local.day(),
        local.year() % 100,
        local.hour(),
        local.minute(),
        local.second()
    )
}

/// Asserts that every line is stamped with a second of `from..=to`, in
/// order.
pub fn assert_stamped_within(lines: &[String], from: u64, to: u64, utc: bool) {
    let seconds: Vec<String> = (from..=to).map(|t| stamp(t, utc)).collect();
    let mut last = 0;
    for line in lines {
        let (s, _) = split_stamp(line);
        let at = seconds.iter().position(|x| x == s);
        let at = at.unwrap_or_else(|| panic!("{line:?} is not stamped within {seconds:?}"));
        assert!(at >= last, "{line:?} is stamped before the line above it");
        last = at;
    }
}

/// How many of `lines` read exactly `line`.
pub fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// `s` as strings.
pub fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

impl Gateway {
    /// Waits until the event log holds `n` lines; returns their texts.
    pub fn wait_log_len(&self, n: usize) -> Vec<String> {
        wait_log(&self.log_dir(), &format!("{n} lines"), |t| t.len() >= n)
    }
}
