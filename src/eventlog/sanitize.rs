//! Peer strings made safe for a one-line event.

/// Longest peer-supplied string [`sanitize`] lets into an event, in chars:
/// enough to identify a peer, short enough to keep a line on one row.
pub const MAX_PEER_STRING_CHARS: usize = 64;

/// Makes a peer-supplied string safe to put in an event: every control
/// character (CR, LF, TAB, DEL, all of Unicode category Cc), and the line
/// separators and bidi overrides some viewers render as breaks or
/// reorderings, becomes `?`; the result is capped at
/// [`MAX_PEER_STRING_CHARS`] chars, the last being `…` when cut.
///
/// Why: agents choose their own names. Without this, a name such as
/// `"x\r\n29-Jun-22, 16:11:20, Operator admin logged in"` would forge a
/// whole log line, and a megabyte-long name would flood the log.
pub fn sanitize(s: &str) -> String {
    let cut = s.chars().nth(MAX_PEER_STRING_CHARS).is_some();
    // When cut, keep one char less to make room for the ellipsis.
    let keep = MAX_PEER_STRING_CHARS - usize::from(cut);
    let mut out: String = s.chars().take(keep).map(replace_unsafe).collect();
    out.extend(cut.then_some('…'));
    out
}

/// `?` for a char that could break or disguise a log line (see [`sanitize`]).
fn replace_unsafe(c: char) -> char {
    let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let breaks = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if breaks || bidi { '?' } else { c }
}

/// [`sanitize`] without the cap, for whole events; allocates only when a
/// char needs replacing, which is rare in events the gateway builds.
pub(super) fn neutralize(text: String) -> String {
    if text.chars().all(|c| replace_unsafe(c) == c) {
        return text;
    }
    text.chars().map(replace_unsafe).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_defuses_and_caps() {
        let s = sanitize("<script>alert(1)</script>\r\nGW forged");
        assert_eq!(s, "<script>alert(1)</script>??GW forged");
        let controls = "a\tb\u{7f}c\u{85}d\u{2028}e\u{202e}f ü";
        assert_eq!(sanitize(controls), "a?b?c?d?e?f ü");
        let exact = "é".repeat(MAX_PEER_STRING_CHARS);
        assert_eq!(sanitize(&exact), exact);
        let cut = "a".repeat(MAX_PEER_STRING_CHARS - 1) + "…";
        assert_eq!(sanitize(&"a".repeat(1000)), cut);
    }

    #[test]
    fn neutralize_keeps_clean_text_and_length() {
        assert_eq!(neutralize("Client pc1 connected".into()), "Client pc1 connected");
        let long = "x".repeat(1000) + "\n";
        assert_eq!(neutralize(long), "x".repeat(1000) + "?");
    }
}
