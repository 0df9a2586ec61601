//! TOML files read by the host (the config, desired-state data): deserialisation whose errors
//! name the file, the key and the line, and a locator that finds the line of any key path for
//! errors found after parsing (an unknown reference, a wrong sha256 pin, ...).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

/// An error in a TOML file the host reads: which file, which key, which line, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    /// The file.
    pub file: PathBuf,
    /// The key path, e.g. `resource_types.SaaS_Account.connection`; empty for the whole file.
    pub key: String,
    /// 1-based line and column, when the key could be located.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The text of one TOML file, kept to locate keys in errors found after parsing.
#[derive(Debug, Clone)]
pub struct Source {
    file: PathBuf,
    text: String,
}

impl Source {
    /// Reads a file.
    pub fn read(file: &Path) -> Result<Source, SourceError> {
        let text = std::fs::read_to_string(file).map_err(|e| SourceError {
            file: file.to_path_buf(),
            key: String::new(),
            position: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Ok(Source { file: file.to_path_buf(), text })
    }

    /// A source from text already in memory (`file` names it in errors).
    pub fn from_text(file: &Path, text: impl Into<String>) -> Source {
        Source { file: file.to_path_buf(), text: text.into() }
    }

    /// The file this source came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Deserialises the whole file; an error names the key path where it went wrong.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, SourceError> {
        let deserializer = toml::Deserializer::parse(&self.text).map_err(|e| self.toml_error(String::new(), e))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            self.toml_error(key, e.into_inner())
        })
    }

    fn toml_error(&self, key: String, error: toml::de::Error) -> SourceError {
        let position = error.span().map(|span| self.position(span.start));
        let position = position.or_else(|| self.locate(&key));
        SourceError { file: self.file.clone(), key, position, message: error.message().trim().to_string() }
    }

    /// An error about `key` (e.g. `plugins.files.sha256` or `assignments[2].identity`), located
    /// in the file when the key is there.
    pub fn error(&self, key: impl Into<String>, message: impl fmt::Display) -> SourceError {
        let key = key.into();
        SourceError { file: self.file.clone(), position: self.locate(&key), key, message: message.to_string() }
    }

    /// The line and column of a key path, if present.
    pub fn locate(&self, key: &str) -> Option<(usize, usize)> {
        let root = DeTable::parse(&self.text).ok()?;
        let mut span: Range<usize> = root.span();
        let mut table = Some(root.get_ref());
        let mut value: Option<&DeValue<'_>> = None;
        for part in split_key(key) {
            match part {
                Part::Key(name) => {
                    let nested = match value {
                        Some(DeValue::Table(t)) => Some(t),
                        _ => None,
                    };
                    let current = table.take().or(nested)?;
                    let (k, v) = current.get_key_value(name)?;
                    span = k.span();
                    value = Some(v.get_ref());
                }
                Part::Index(i) => {
                    let DeValue::Array(items) = value? else { return None };
                    let item = items.get(i)?;
                    span = item.span();
                    value = Some(item.get_ref());
                }
            }
        }
        Some(self.position(span.start))
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into keys and indices.
fn split_key(key: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for segment in key.split('.').filter(|s| !s.is_empty()) {
        let (name, mut rest) = segment.split_once('[').map_or((segment, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            parts.push(Part::Key(name));
        }
        while let Some((index, tail)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                parts.push(Part::Index(i));
            }
            rest = tail.trim_start_matches('[');
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code)]
        name: String,
    }

    const TEXT: &str = "[[items]]\nname = \"a\"\n\n[[items]]\nname = \"b\"\ncolour = \"red\"\n";

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let source = Source::from_text(Path::new("x.toml"), TEXT);
        let err = source.parse::<Doc>().unwrap_err();
        assert_eq!(err.key, "items[1].colour");
        assert_eq!(err.position, Some((6, 1)));
        assert!(err.message.contains("unknown field `colour`"), "{}", err.message);
        assert!(err.to_string().starts_with("x.toml:6:1: key `items[1].colour`: unknown field"), "{err}");
    }

    #[test]
    fn keys_are_located_after_parsing() {
        let source = Source::from_text(Path::new("x.toml"), TEXT);
        assert_eq!(source.locate("items[1].name"), Some((5, 1)));
        assert_eq!(source.locate("items[0]"), Some((1, 1)), "an array item is located at its header");
        assert_eq!(source.locate("items[7].name"), None);
        assert_eq!(source.error("items[0].name", "bad").position, Some((2, 1)));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let source = Source::from_text(Path::new("x.toml"), "a = 1\nb = = 2\n");
        let err = source.parse::<toml::Table>().unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
    }
}
