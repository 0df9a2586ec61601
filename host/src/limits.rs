//! The limits on text and data, in one place: how much the host takes in where text enters (the
//! API, the CLI, the library functions both call, plugins' answers) and how much of it a person
//! is shown; and how large identities' and resources' data may be wherever it enters (the
//! desired-state import, a connector's `read`) or leaves (the orders sent to plugins).
//! The README's "Limits" section documents each; a new limit belongs here, with its check.
//!
//! Lengths people supply are counted in characters (Unicode scalar values), since that is what
//! they see; what plugins hand back, and the data (identities, resources) that goes to them and
//! comes back, is bounded in bytes, as the rest of their answers are.

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

/// A bulk request of desired state (`POST /api/v1/desired`): at most this many bytes, about
/// 100 000 small assignments (its changes are limited too: `app::desired::MAX_CHANGES`).
pub const API_BULK_BODY: usize = 32 << 20;

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

// Data: what desired state and managed systems hold about identities and resources. The same
// constants bound every boundary it crosses (the desired-state import, a connector's `read`,
// the orders sent to plugins), so what one accepts another never refuses. Counted in bytes of
// UTF-8, as plugins see it.

/// An identity's key (an order's owner, a resource's owner): at most this many bytes.
pub const IDENTITY_KEY: usize = 1024;

/// A resource's id in its managed system (and a connector's page cursor): at most this many
/// bytes.
pub const RESOURCE_ID: usize = 1024;

/// An attribute's name: not empty, at most this many bytes.
pub const ATTRIBUTE_NAME: usize = 1024;

/// An attribute's value: at most this many bytes.
pub const ATTRIBUTE_VALUE: usize = 64 * 1024;

/// Attributes of one resource or identity: at most this many.
pub const ATTRIBUTES: usize = 1000;

/// An entitlement: not empty, at most this many bytes.
pub const ENTITLEMENT: usize = 1024;

/// Entitlements of one resource: at most this many.
pub const ENTITLEMENTS: usize = 10_000;

/// One resource's whole content (attribute names and values and entitlements together): at most
/// this many bytes. An order's change is made of a desired and an actual content, so it is
/// bounded by twice this.
pub const RESOURCE: usize = 1 << 20;

/// Resources in one page of a connector's `read`: at most this many.
pub const READ_PAGE: usize = 10_000;

/// What is over a limit (or empty) in one resource's or identity's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The attribute of this name (its name or its value).
    Attribute(String),
    /// The attributes as a whole (how many).
    Attributes,
    /// The entitlement at this position of the list it came in.
    Entitlement(usize),
    /// The entitlements as a whole (how many).
    Entitlements,
    /// The content as a whole (its size).
    Content,
}

/// Data over a limit: which part and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OverLimit {
    /// The part at fault, to name it (an import names its key).
    pub part: Part,
    /// What is wrong, with the limit.
    pub message: String,
}

/// A name or value in a message: escaped and cut, since it may be the oversize text itself.
fn named(text: &str) -> String {
    crate::text::shown(text, 64).0
}

/// Checks one resource's or identity's data (attributes in any order, entitlements in the
/// order they came) against the limits above: the first part over one, else `Ok`.
pub fn check_data<'a>(
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    entitlements: impl IntoIterator<Item = &'a str>,
) -> Result<(), OverLimit> {
    let over = |part, message: String| Err(OverLimit { part, message });
    let mut total = 0usize;
    let mut count = 0usize;
    for (name, value) in attributes {
        count += 1;
        if count > ATTRIBUTES {
            return over(
                Part::Attributes,
                format!("more than {ATTRIBUTES} attributes; at most {ATTRIBUTES} are accepted"),
            );
        }
        let part = || Part::Attribute(name.to_string());
        if name.is_empty() {
            return over(part(), "an attribute name is empty".to_string());
        }
        if name.len() > ATTRIBUTE_NAME {
            return over(
                part(),
                format!(
                    "attribute name `{}` is {} bytes long; at most {ATTRIBUTE_NAME} bytes are accepted",
                    named(name),
                    name.len()
                ),
            );
        }
        if value.len() > ATTRIBUTE_VALUE {
            return over(
                part(),
                format!(
                    "the value of attribute `{}` is {} bytes long; at most {ATTRIBUTE_VALUE} bytes are accepted",
                    named(name),
                    value.len()
                ),
            );
        }
        total += name.len() + value.len();
    }
    for (i, entitlement) in entitlements.into_iter().enumerate() {
        if i >= ENTITLEMENTS {
            return over(
                Part::Entitlements,
                format!("more than {ENTITLEMENTS} entitlements; at most {ENTITLEMENTS} are accepted"),
            );
        }
        if entitlement.is_empty() {
            return over(Part::Entitlement(i), "an entitlement is empty".to_string());
        }
        if entitlement.len() > ENTITLEMENT {
            return over(
                Part::Entitlement(i),
                format!(
                    "entitlement `{}` is {} bytes long; at most {ENTITLEMENT} bytes are accepted",
                    named(entitlement),
                    entitlement.len()
                ),
            );
        }
        total += entitlement.len();
    }
    if total > RESOURCE {
        return over(Part::Content, format!("the content is {total} bytes; at most {RESOURCE} bytes are accepted"));
    }
    Ok(())
}

/// Checks an identifier (an identity key, a resource id): not empty, at most `limit` bytes.
pub fn check_id(what: &str, id: &str, limit: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if id.len() > limit {
        return Err(format!("{what} `{}` is {} bytes long; at most {limit} bytes are accepted", named(id), id.len()));
    }
    Ok(())
}

/// Checks an order as it goes to a plugin. Its change is made of a desired and a synchronised
/// resource, each bounded where it entered, so what it sets and grants is within one resource's
/// limits and what it clears and revokes within another's. Only data stored before these
/// limits existed can fail this.
pub fn check_order(order: &crate::model::Order) -> Result<(), String> {
    check_id("the owner", &order.owner, IDENTITY_KEY)?;
    if let Some(id) = &order.resource_id {
        check_id("the resource id", id, RESOURCE_ID)?;
    }
    let change = &order.change;
    check_data(
        change.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        change.granted.iter().map(String::as_str),
    )
    .map_err(|e| e.message)?;
    check_data(change.cleared.iter().map(|n| (n.as_str(), "")), change.revoked.iter().map(String::as_str))
        .map_err(|e| format!("what it clears or revokes: {}", e.message))
}

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

    #[test]
    fn data_at_its_limits_passes_and_each_part_over_one_is_named() {
        let value = "v".repeat(ATTRIBUTE_VALUE);
        let name = "n".repeat(ATTRIBUTE_NAME);
        let entitlement = "e".repeat(ENTITLEMENT);
        assert_eq!(check_data([(name.as_str(), value.as_str())], [entitlement.as_str()]), Ok(()));

        let big = format!("{value}v");
        let error = check_data([("a", "1"), ("note", big.as_str())], []).unwrap_err();
        assert_eq!(error.part, Part::Attribute("note".into()));
        assert!(error.message.contains("65537 bytes long; at most 65536"), "{error}");

        let long = format!("{name}n");
        assert_eq!(check_data([(long.as_str(), "")], []).unwrap_err().part, Part::Attribute(long.clone()));
        assert_eq!(check_data([("", "x")], []).unwrap_err().part, Part::Attribute(String::new()));

        let names: Vec<String> = (0..=ATTRIBUTES).map(|i| format!("a{i}")).collect();
        let error = check_data(names.iter().map(|n| (n.as_str(), "")), []).unwrap_err();
        assert_eq!(error.part, Part::Attributes);
        assert_eq!(check_data(names[..ATTRIBUTES].iter().map(|n| (n.as_str(), "")), []), Ok(()));

        let over = format!("{entitlement}e");
        assert_eq!(check_data([], ["ok", over.as_str()]).unwrap_err().part, Part::Entitlement(1));
        assert_eq!(check_data([], ["ok", ""]).unwrap_err().part, Part::Entitlement(1));
        let many: Vec<String> = (0..=ENTITLEMENTS).map(|i| format!("g{i}")).collect();
        assert_eq!(check_data([], many.iter().map(String::as_str)).unwrap_err().part, Part::Entitlements);

        // Each part within its limit, the whole over its own: 17 values of 64 KiB exceed 1 MiB.
        let names: Vec<String> = (0..17).map(|i| format!("a{i}")).collect();
        let error = check_data(names.iter().map(|n| (n.as_str(), value.as_str())), []).unwrap_err();
        assert_eq!(error.part, Part::Content, "{error}");
    }

    #[test]
    fn ids_are_bounded_in_bytes_and_never_empty() {
        assert_eq!(check_id("the key", &"k".repeat(IDENTITY_KEY), IDENTITY_KEY), Ok(()));
        let error = check_id("the key", &"é".repeat(IDENTITY_KEY / 2 + 1), IDENTITY_KEY).unwrap_err();
        assert!(error.contains("1026 bytes long; at most 1024"), "{error}");
        assert!(check_id("the key", "", IDENTITY_KEY).unwrap_err().contains("empty"));
    }

    #[test]
    fn the_documented_data_limits_are_these() {
        let kib = |n: usize| {
            if n >= 1 << 20 { format!("{n} bytes ({} MiB)", n >> 20) } else { format!("{n} bytes ({} KiB)", n >> 10) }
        };
        let rows = [
            ("identity key (an order's or resource's owner)", format!("{IDENTITY_KEY} bytes, not empty")),
            ("resource id, `read`'s next cursor", format!("{RESOURCE_ID} bytes, not empty")),
            ("attribute name", format!("{ATTRIBUTE_NAME} bytes, not empty")),
            ("attribute value", kib(ATTRIBUTE_VALUE)),
            ("attributes of one resource or identity", ATTRIBUTES.to_string()),
            ("entitlement", format!("{ENTITLEMENT} bytes, not empty")),
            ("entitlements of one resource", ENTITLEMENTS.to_string()),
            ("one resource's content (attribute names and values and entitlements together)", kib(RESOURCE)),
            ("resources in one `read` page", READ_PAGE.to_string()),
        ];
        for (name, text) in
            [("README.md", include_str!("../../README.md")), ("docs/plugins.md", include_str!("../../docs/plugins.md"))]
        {
            for (what, limit) in &rows {
                let row = format!("| {what} | {limit} |");
                assert!(text.lines().any(|l| l == row), "{name} lacks the row {row}");
            }
        }
    }
}
