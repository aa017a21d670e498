//! The `dd-Mon-yy, HH:MM:SS, ` stamp that starts every event line.

/// Month names as Gateway32 writes them, indexed by `tm_mon`.
pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `dd-Mon-yy, HH:MM:SS, ` for Unix time `at`.
pub(super) fn timestamp(at: i64, utc: bool) -> String {
    // Saturating only matters for a 32-bit `time_t` after 2038.
    let t = libc::time_t::try_from(at).unwrap_or(libc::time_t::MAX);
    let convert = if utc { libc::gmtime_r } else { libc::localtime_r };
    // SAFETY: `tm` is plain data (ints and a nullable pointer), so all-zero
    // is a valid value; the `_r` variants are thread-safe and write only
    // into the `tm` given. On failure they return null and we print the
    // zeroed `tm`, an obviously bogus "00-Jan-00", rather than panic.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let ok = convert(&raw const t, &raw mut tm);
        if ok.is_null() { std::mem::zeroed() } else { tm }
    };
    let month = usize::try_from(tm.tm_mon).ok().and_then(|m| MONTHS.get(m));
    let month = month.unwrap_or(&"???");
    let year = (i64::from(tm.tm_year) + 1900).rem_euclid(100);
    let (day, h, m, s) = (tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    format!("{day:02}-{month}-{year:02}, {h:02}:{m:02}:{s:02}, ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_of_known_instants() {
        let stamp = |at| timestamp(at, true);
        assert_eq!(stamp(1_656_519_080), "29-Jun-22, 16:11:20, ");
        assert_eq!(stamp(951_782_400), "29-Feb-00, 00:00:00, ");
    }
}
