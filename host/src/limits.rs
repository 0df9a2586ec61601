//! The limits on text, in one place: how much the host takes in where text enters (the API, the
//! CLI, the library functions both call, plugins' answers) and how much of it a person is shown.
//! The README's "Limits" section documents each; a new limit belongs here, with its check.
//!
//! Lengths people supply are counted in characters (Unicode scalar values), since that is what
//! they see; what plugins hand back is bounded in bytes, as the rest of their answers are.

/// A comment, reason or error report a person gives (review decisions, manual confirmations
/// and error reports): at most this many characters.
pub const COMMENT: usize = 4000;

/// A name (user login and display name, profile name, token name): at most this many characters.
pub const NAME: usize = 200;

/// An e-mail address: at most this many characters (RFC 5321's path limit).
pub const EMAIL: usize = 254;

/// A permission path: at most this many characters.
pub const PERMISSION_PATH: usize = 1000;

/// A profile's description: at most this many characters.
pub const DESCRIPTION: usize = COMMENT;

/// A request body of the HTTP API: at most this many bytes (413 over it).
pub const API_BODY: usize = 4 << 20;

/// A text a plugin hands back (a reason, a failure message): cut to this many bytes.
pub const PLUGIN_MESSAGE: usize = 4096;

/// One log line of a plugin (message and fields each): cut to this many bytes.
pub const PLUGIN_LOG_LINE: usize = 4096;

/// A cell of a table shows at most this many characters (escapes included); the rest is cut
/// with `…`, and `--json` has the whole text. Bounding each cell keeps a table's rendering
/// linear in its rows: the table library wraps a long word in time quadratic in its length.
pub const SHOWN_CELL: usize = 500;

/// One order's texts in `orders show` and a plugin's answers in `plugin test` show at most this
/// many characters each: a comment at its limit, or a plugin's message, is shown whole.
pub const SHOWN_DETAIL: usize = 4100;
const _: () = assert!(SHOWN_DETAIL >= COMMENT && SHOWN_DETAIL >= PLUGIN_MESSAGE);

/// A text over its limit, naming what it is and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {length} characters long; at most {limit} characters are accepted")]
pub struct TooLong {
    /// What the text is (`the comment`, `the login`).
    pub what: &'static str,
    /// Its length in characters.
    pub length: usize,
    /// The limit.
    pub limit: usize,
}

/// `text` if it has at most `limit` characters, else [`TooLong`].
pub fn check<'a>(what: &'static str, text: &'a str, limit: usize) -> Result<&'a str, TooLong> {
    // Counting stops just past the limit: a huge text costs no more than one at the limit.
    match text.chars().nth(limit) {
        None => Ok(text),
        Some(_) => Err(TooLong { what, length: text.chars().count(), limit }),
    }
}

/// A clap value parser refusing a text over `limit` characters (a usage error, exit 2).
pub fn parser(what: &'static str, limit: usize) -> impl Fn(&str) -> Result<String, TooLong> + Clone {
    move |text: &str| check(what, text, limit).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_at_its_limit_passes_and_one_more_character_does_not() {
        let at = "é".repeat(COMMENT);
        assert_eq!(check("the comment", &at, COMMENT), Ok(at.as_str()), "characters are counted, not bytes");
        let over = format!("{at}x");
        let error = check("the comment", &over, COMMENT).unwrap_err();
        assert_eq!((error.length, error.limit), (COMMENT + 1, COMMENT));
        assert!(error.to_string().contains("at most 4000 characters"), "{error}");
    }
}
