//! Text from outside (commit subjects, a pause reason, servers' and tools' messages, files
//! the operator wrote) as the agent shows it to a person (issue 23, items 16 and 18).
//!
//! - [`escape_controls`]: control characters (C0, DEL, C1: what retitles or clears a
//!   terminal) shown as Rust escapes (`\u{1b}`), so text can never drive the reader's
//!   terminal. [`Escaping`] applies it to everything written through it (`status`,
//!   `history`, the stderr log). JSON output keeps the text as it is, JSON-escaped.
//! - [`quote`]: input quoted in an error message: escaped and capped, so a 60 KB map line
//!   or a 1 MB host file gives an error of a line, not of the input.

use std::borrow::Cow;
use std::io::{self, Write};

/// The most characters of an input that an error quotes.
pub const QUOTE_MAX: usize = 80;

/// `text` with every control character escaped; newlines too unless `keep_newlines`
/// (multi-line text such as an error chain).
pub fn escape_controls(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() && !(keep_newlines && c == '\n');
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` as an error quotes it: in double quotes, escaped like `{:?}`, at most
/// [`QUOTE_MAX`] characters of it, then how long it was.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// A writer that escapes control characters (newlines kept) in what goes through it.
pub struct Escaping<W: Write>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // `write!` hands over whole `str` pieces, so a character is never split here.
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(escape_controls(&text, true).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        let cases = [
            ("plain subject", false, "plain subject"),
            (
                "\u{1b}]0;owned\u{7}title",
                false,
                "\\u{1b}]0;owned\\u{7}title",
            ),
            ("clear\u{1b}[2J", false, "clear\\u{1b}[2J"),
            ("c1 \u{9b}31m", false, "c1 \\u{9b}31m"),
            ("del\u{7f}", false, "del\\u{7f}"),
            ("a\nb\tc\rd", false, "a\\nb\\tc\\rd"),
            ("a\nb\u{1b}", true, "a\nb\\u{1b}"),
            ("ünïcode ok", false, "ünïcode ok"),
        ];
        for (text, keep, shown) in cases {
            assert_eq!(escape_controls(text, keep), shown, "{text:?}");
        }
    }

    #[test]
    fn a_quote_is_escaped_and_capped() {
        assert_eq!(quote("pi1"), "\"pi1\"");
        assert_eq!(quote("a\u{1b}b"), "\"a\\u{1b}b\"");
        let long = "x".repeat(60_000);
        let q = quote(&long);
        assert_eq!(
            q,
            format!("\"{}\"… (60000 bytes in all)", "x".repeat(QUOTE_MAX))
        );
        // Cut on a character boundary.
        let wide = "é".repeat(100);
        assert!(quote(&wide).starts_with(&format!("\"{}\"…", "é".repeat(QUOTE_MAX))));
    }

    #[test]
    fn the_writer_escapes_what_goes_through_it() {
        let mut out = Escaping(Vec::new());
        let subject = "x\u{1b}[2J";
        writeln!(out, "head: {subject}").unwrap();
        writeln!(out, "next").unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "head: x\\u{1b}[2J\nnext\n"
        );
    }
}
