//! Text from data (identity keys, attribute values, reasons, comments, plugins' answers and log
//! lines) as a person is shown it. Data never drives the terminal: control characters (ESC
//! starts the sequences that clear a screen or retitle a window; CR and LF break a table's row)
//! and the invisible format characters (bidi overrides, embeddings, isolates and marks that make
//! text read backwards; zero-width characters) are shown escaped. `--json` and the API keep the
//! text exact. Every human output goes through [`escape`] or [`shown`].

use std::borrow::Cow;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` is shown escaped: a control character (C0, DEL, C1), a format character
/// (Unicode category Cf: U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+200B–U+200D, U+FEFF,
/// U+00AD, tags, ...), or the line and paragraph separators U+2028/U+2029.
pub fn is_escaped(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// Writes `c` as shown: `\n`, `\r`, `\t`, or `\u{..}` in lowercase hex (Rust's notation).
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `text` with every character [`is_escaped`] says so escaped; the rest (backslashes too) as is.
pub fn escape(text: &str) -> Cow<'_, str> {
    match text.find(is_escaped) {
        None => Cow::Borrowed(text),
        Some(first) => {
            let mut out = String::with_capacity(text.len() + 16);
            out.push_str(&text[..first]);
            for c in text[first..].chars() {
                if is_escaped(c) {
                    push_escaped(&mut out, c);
                } else {
                    out.push(c);
                }
            }
            Cow::Owned(out)
        }
    }
}

/// `text` for markup (HTML pages): escaped as [`escape`] does, except the whitespace controls
/// (`\n`, `\r`, `\t`) markup shows as a space anyway.
pub fn escape_for_markup(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| is_escaped(c) && !matches!(c, '\n' | '\r' | '\t');
    match text.find(escaped) {
        None => Cow::Borrowed(text),
        Some(first) => {
            let mut out = String::with_capacity(text.len() + 16);
            out.push_str(&text[..first]);
            for c in text[first..].chars() {
                if escaped(c) {
                    push_escaped(&mut out, c);
                } else {
                    out.push(c);
                }
            }
            Cow::Owned(out)
        }
    }
}

/// The ellipsis that ends a text [`shown`] cut.
pub const CUT: char = '…';

/// `text` escaped and cut to at most `max` characters as shown (escapes counted), ending in
/// [`CUT`] when something was left out; and whether it was. Reads no more of `text` than it
/// shows, so a text of megabytes costs what `max` characters do.
pub fn shown(text: &str, max: usize) -> (String, bool) {
    let mut out = String::new();
    let mut count = 0;
    // Where the text shown so far still leaves room for the ellipsis.
    let mut room = 0;
    let mut piece = String::new();
    for c in text.chars() {
        piece.clear();
        if is_escaped(c) {
            push_escaped(&mut piece, c);
        } else {
            piece.push(c);
        }
        let n = piece.chars().count();
        if count + n > max {
            out.truncate(room);
            if max > 0 {
                out.push(CUT);
            }
            return (out, true);
        }
        out.push_str(&piece);
        count += n;
        if count < max {
            room = out.len();
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_and_bidi_characters_are_escaped_and_the_rest_is_not() {
        assert_eq!(escape("\x1b[2J\r\n\t\x07\x7f\u{9b}"), "\\u{1b}[2J\\r\\n\\t\\u{7}\\u{7f}\\u{9b}");
        for (c, shown) in [
            ('\u{202e}', "\\u{202e}"),
            ('\u{202a}', "\\u{202a}"),
            ('\u{2066}', "\\u{2066}"),
            ('\u{2069}', "\\u{2069}"),
            ('\u{200e}', "\\u{200e}"),
            ('\u{200f}', "\\u{200f}"),
            ('\u{200b}', "\\u{200b}"),
            ('\u{feff}', "\\u{feff}"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{e0041}', "\\u{e0041}"),
        ] {
            assert_eq!(escape(&format!("a{c}b")), format!("a{shown}b"), "U+{:04X}", c as u32);
        }
        // Letters of any script, emoji, combining marks and backslashes are text, shown as is.
        let plain = "Zoë Łukasz שלום 日本 🦀 e\u{301} C:\\path\\n";
        assert!(matches!(escape(plain), Cow::Borrowed(_)), "{}", escape(plain));
    }

    #[test]
    fn a_shown_text_is_cut_to_its_limit_with_an_ellipsis_counting_the_escapes() {
        assert_eq!(shown("short", 10), ("short".to_string(), false));
        assert_eq!(shown("exactly10!", 10), ("exactly10!".to_string(), false));
        assert_eq!(shown("eleven char", 10), ("eleven ch…".to_string(), true));
        // An escape is not split: `\u{1b}` does not fit in the room left, so it goes whole.
        assert_eq!(shown("abcdef\x1bxyz", 10), ("abcdef…".to_string(), true));
        assert_eq!(shown("ab\ncd", 10), ("ab\\ncd".to_string(), false));
        // Characters, not bytes.
        assert_eq!(shown(&"é".repeat(12), 10), (format!("{}…", "é".repeat(9)), true));
    }

    #[test]
    fn showing_a_huge_text_reads_only_what_it_shows() {
        // The 2 MB comment that once took a table minutes to wrap: 200 characters shown.
        let huge = "y".repeat(2_000_000);
        let (text, cut) = shown(&huge, 200);
        assert!(cut);
        assert_eq!(text.chars().count(), 200);
        assert!(text.ends_with(CUT));
    }
}
