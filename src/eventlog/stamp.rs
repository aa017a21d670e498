//! The `dd-Mon-yy, HH:MM:SS, ` stamp that starts every event line, in
//! the local time zone or UTC.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Gateway32's stamp, `22-Nov-26, 03:41:38, `, as a strftime pattern
/// (`%b` is the English month abbreviation whatever the locale).
const STAMP_FORMAT: &str = "%d-%b-%y, %H:%M:%S, ";

/// The zone stamps are written in: UTC if configured, else the system's
/// (`TZ`, else `/etc/localtime`). Asked per line: jiff caches the answer
/// and looks again every few minutes, so a changed zone is picked up
/// without a restart.
pub(super) fn zone(utc: bool) -> TimeZone {
    if utc { TimeZone::UTC } else { TimeZone::system() }
}

/// `dd-Mon-yy, HH:MM:SS, ` for Unix second `at` as seen in `tz`.
pub(super) fn timestamp(at: i64, tz: &TimeZone) -> String {
    // Outside jiff's years (-9999..=9999) only with a broken clock; the
    // epoch's stamp is then obviously wrong without stopping the log.
    let at = Timestamp::from_second(at).unwrap_or(Timestamp::UNIX_EPOCH);
    tz.to_datetime(at).strftime(STAMP_FORMAT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Central European rules, given as a POSIX TZ string so the test
    /// needs no tz database on the machine.
    const CET: &str = "CET-1CEST,M3.5.0,M10.5.0/3";
    /// 2022-10-30T01:00:00Z, when CEST ends (03:00 CEST becomes 02:00 CET).
    const CEST_ENDS: i64 = 1_667_091_600;

    fn cet() -> TimeZone {
        TimeZone::posix(CET).expect("a valid POSIX TZ string")
    }

    #[test]
    fn utc_stamps_of_known_instants() {
        let stamp = |at| timestamp(at, &zone(true));
        assert_eq!(stamp(1_656_519_080), "29-Jun-22, 16:11:20, ");
        assert_eq!(stamp(951_782_400), "29-Feb-00, 00:00:00, ");
        assert_eq!(stamp(0), "01-Jan-70, 00:00:00, ");
        // Past jiff's range: the epoch, not a panic.
        assert_eq!(stamp(i64::MAX), "01-Jan-70, 00:00:00, ");
    }

    #[test]
    fn local_stamps_follow_the_zone_and_its_daylight_saving() {
        let stamp = |at| timestamp(at, &cet());
        assert_eq!(stamp(1_656_519_080), "29-Jun-22, 18:11:20, ");
        assert_eq!(stamp(951_782_400), "29-Feb-00, 01:00:00, ");
        assert_eq!(stamp(CEST_ENDS - 1), "30-Oct-22, 02:59:59, ");
        assert_eq!(stamp(CEST_ENDS), "30-Oct-22, 02:00:00, ");
    }

    /// Set when this test binary runs itself with `TZ` set (below).
    const CHILD: &str = "RINGWAY_STAMP_TEST_CHILD";

    /// `utc = false` really reads the process's zone: the test binary runs
    /// this one test again in a child process whose `TZ` is India's fixed
    /// +05:30 (setting `TZ` in this threaded process would be unsound).
    #[test]
    fn local_zone_is_the_processs_tz() {
        if std::env::var_os(CHILD).is_some() {
            assert_eq!(timestamp(1_656_519_080, &zone(false)), "29-Jun-22, 21:41:20, ");
            return;
        }
        let me = std::env::current_exe().expect("the test binary's path");
        let name = "eventlog::stamp::tests::local_zone_is_the_processs_tz";
        let out = Command::new(me)
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .env("TZ", "IST-5:30")
            .output()
            .expect("run the test binary again");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed:\n{stdout}");
        assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
    }
}
