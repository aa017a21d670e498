//! Timestamps as text, in UTC (jiff does the calendar).

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// `2026-11-22T03:16:19Z` for `t` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Year, month and day (UTC) of `t`.
pub fn civil_date(t: SystemTime) -> (i64, u32, u32) {
    let date = TimeZone::UTC.to_datetime(timestamp(t)).date();
    // jiff's months are 1..=12 and days 1..=31: never negative.
    let (month, day) = (date.month().unsigned_abs(), date.day().unsigned_abs());
    (i64::from(date.year()), u32::from(month), u32::from(day))
}

/// `t` as a jiff timestamp. A clock before 1970 reads as the epoch, as it
/// always has here; past jiff's year 9999 as its last second.
fn timestamp(t: SystemTime) -> Timestamp {
    if t < UNIX_EPOCH {
        return Timestamp::UNIX_EPOCH;
    }
    Timestamp::try_from(t).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_317_799)), "2026-11-22T03:23:19Z");
        // Whole seconds only, whatever the clock's fraction.
        let fraction = at(1_795_317_799) + Duration::from_millis(999);
        assert_eq!(rfc3339(fraction), "2026-11-22T03:23:19Z");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(UNIX_EPOCH), (1970, 1, 1));
        assert_eq!(civil_date(at(951_782_400)), (2000, 2, 29));
        assert_eq!(civil_date(at(951_782_400 - 1)), (2000, 2, 28));
        assert_eq!(civil_date(at(1_795_317_799)), (2026, 11, 22));
        // 2100 is not a leap year: February ends on the 28th.
        assert_eq!(civil_date(at(4_107_542_400 - 1)), (2100, 2, 28));
        assert_eq!(civil_date(at(4_107_542_400)), (2100, 3, 1));
    }
}
