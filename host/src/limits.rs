//! The limits on text, in one place: how much the host takes in where text enters (the API, the
//! CLI, the library functions both call, plugins' answers) and how much of it a person is shown.
//! The README's "Limits" section documents each; a new limit belongs here, with its check.
//!
//! Lengths people supply are counted in characters (Unicode scalar values), since that is what
//! they see; what plugins hand back is bounded in bytes, as the rest of their answers are.

/// A text a plugin hands back (a reason, a failure message): cut to this many bytes.
pub const PLUGIN_MESSAGE: usize = 4096;

/// One log line of a plugin (message and fields each): cut to this many bytes.
pub const PLUGIN_LOG_LINE: usize = 4096;

/// A cell of a table shows at most this many characters (escapes included); the rest is cut
/// with `…`, and `--json` has the whole text. Bounding each cell keeps a table's rendering
/// linear in its rows: the table library wraps a long word in time quadratic in its length.
pub const SHOWN_CELL: usize = 200;

/// One order's texts in `orders show` and a plugin's answers in `plugin test` show at most this
/// many characters each: a plugin's message is shown whole.
pub const SHOWN_DETAIL: usize = 4100;
const _: () = assert!(SHOWN_DETAIL >= PLUGIN_MESSAGE);
