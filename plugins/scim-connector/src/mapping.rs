//! Attribute mapping between the host's flat attributes and SCIM's User schema.
//!
//! A host attribute maps to the SCIM path of the same name unless `map.NAME = "PATH"` says
//! otherwise. Paths: a top-level attribute (`userName`, `displayName`, `title`), a sub-attribute
//! (`name.givenName`), `active` (a boolean), or a multi-valued attribute (`emails`,
//! `phoneNumbers`): its primary value.

use serde_json::{Map, Value, json};

const MULTI_VALUED: [&str; 4] = ["emails", "phoneNumbers", "ims", "photos"];

/// The SCIM path of a host attribute.
pub fn path(config: &crate::Config, attribute: &str) -> String {
    config.map.get(attribute).cloned().unwrap_or_else(|| attribute.to_string())
}

/// The JSON value to write for `path`.
pub fn to_json(path: &str, value: &str) -> Value {
    if path == "active" {
        return Value::Bool(value.eq_ignore_ascii_case("true"));
    }
    if MULTI_VALUED.contains(&path) {
        return json!([{ "value": value, "type": "work", "primary": true }]);
    }
    Value::String(value.to_string())
}

/// Sets `path` in a User object.
pub fn set(user: &mut Map<String, Value>, path: &str, value: &str) {
    match path.split_once('.') {
        Some((parent, child)) => {
            let entry = user.entry(parent).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(object) = entry {
                object.insert(child.to_string(), Value::String(value.to_string()));
            }
        }
        None => {
            user.insert(path.to_string(), to_json(path, value));
        }
    }
}

/// Reads `path` from a User object, as the host's string value.
pub fn get(user: &Value, path: &str) -> Option<String> {
    let value = match path.split_once('.') {
        Some((parent, child)) => user.get(parent)?.get(child)?,
        None => user.get(path)?,
    };
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => {
            let primary = items.iter().find(|i| i.get("primary").and_then(Value::as_bool) == Some(true));
            primary.or_else(|| items.first())?.get("value")?.as_str().map(str::to_string)
        }
        _ => None,
    }
}
