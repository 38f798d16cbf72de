//! Plugin log lines as the daemon writes them.

use std::borrow::Cow;

/// `text` with its control characters (newlines, carriage returns, terminal
/// escapes) written as `\n`, `\r`, `\u{1b}`, …: one plugin line stays one log
/// line, and cannot forge a line of the daemon's own.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_on_its_line() {
        let forged = "ok\n2026-12-03T00:00:00Z  INFO evhost: all is well\r\u{1b}[2J";
        let shown = escape_controls(forged);
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\u{1b}'));
        assert_eq!(
            shown,
            "ok\\n2026-12-03T00:00:00Z  INFO evhost: all is well\\r\\u{1b}[2J"
        );
        assert!(matches!(
            escape_controls("plain, ünïcode"),
            Cow::Borrowed(_)
        ));
    }
}
