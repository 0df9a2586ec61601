//! `[events]`: where every order state change is published, as CloudEvents, filtered per
//! subscriber by resource type and state.
//!
//! ```toml
//! [events]
//! retry_initial = "5s"          # first retry after a failed delivery; doubles up to retry_max
//! retry_max = "10m"
//!
//! [events.subscribers.siem]
//! url = "https://siem.example.com/provision"
//! secret = { env = "SIEM_SECRET" }   # HMAC-SHA256 key of X-Provision-Signature
//! resource_types = ["SaaS_Account"]  # default: every one
//! states = ["Verified", "Errored"]   # default: every state (names or numbers)
//! from = "now"                       # or "beginning": the history already there too
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::operators::{RawSecret, secret};
use super::{Secret, Source, SourceError, check_name, duration};
use crate::model::ProvisioningState;

/// Publishing order state changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// The subscribers, by name.
    pub subscribers: BTreeMap<String, Subscriber>,
    /// Delay before the first retry of a subscriber that failed.
    pub retry_initial: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            subscribers: BTreeMap::new(),
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
        }
    }
}

/// One subscriber: a URL that receives, in order, every state change its filters let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Its name.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The HMAC key of the signature.
    pub secret: Secret,
    /// Only orders of these resource types; empty: every one.
    pub resource_types: BTreeSet<String>,
    /// Only changes into these states; empty: every one.
    pub states: BTreeSet<ProvisioningState>,
    /// The history already there when it is first seen is published too.
    pub from_beginning: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Subscriber {
    /// Whether a change of an order of `resource_type` into `state` is for this subscriber.
    pub fn wants(&self, resource_type: &str, state: ProvisioningState) -> bool {
        (self.resource_types.is_empty() || self.resource_types.contains(resource_type))
            && (self.states.is_empty() || self.states.contains(&state))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    #[serde(default)]
    subscribers: BTreeMap<String, RawSubscriber>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscriber {
    url: String,
    secret: RawSecret,
    #[serde(default)]
    resource_types: Vec<String>,
    #[serde(default)]
    states: Vec<String>,
    from: Option<String>,
    timeout: Option<String>,
}

pub(super) fn events<'a>(
    source: &Source,
    raw: RawEvents,
    base: &Path,
    resource_types: impl IntoIterator<Item = &'a String> + Clone,
) -> Result<EventsConfig, SourceError> {
    let defaults = EventsConfig::default();
    let mut subscribers = BTreeMap::new();
    for (name, raw) in raw.subscribers {
        let key = format!("events.subscribers.{name}");
        check_name(source, &key, &name)?;
        if !(raw.url.starts_with("http://") || raw.url.starts_with("https://")) {
            return Err(source.error(format!("{key}.url"), "must be an http:// or https:// URL"));
        }
        for (i, rt) in raw.resource_types.iter().enumerate() {
            if !resource_types.clone().into_iter().any(|known| known == rt) {
                let known: Vec<&String> = resource_types.clone().into_iter().collect();
                return Err(source.error(
                    format!("{key}.resource_types[{i}]"),
                    format!(
                        "unknown resource type `{rt}` (the config defines: {})",
                        known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let mut states = BTreeSet::new();
        for (i, state) in raw.states.iter().enumerate() {
            states
                .insert(state.parse::<ProvisioningState>().map_err(|e| source.error(format!("{key}.states[{i}]"), e))?);
        }
        let from_beginning = match raw.from.as_deref() {
            None | Some("now") => false,
            Some("beginning") => true,
            Some(other) => {
                return Err(
                    source.error(format!("{key}.from"), format!("`{other}`: expected \"now\" or \"beginning\""))
                );
            }
        };
        let timeout =
            duration(source, &format!("{key}.timeout"), raw.timeout.as_deref())?.unwrap_or(Duration::from_secs(10));
        subscribers.insert(
            name.clone(),
            Subscriber {
                secret: secret(source, &format!("{key}.secret"), raw.secret, base)?,
                name,
                url: raw.url,
                resource_types: raw.resource_types.into_iter().collect(),
                states,
                from_beginning,
                timeout,
            },
        );
    }
    let retry_initial =
        duration(source, "events.retry_initial", raw.retry_initial.as_deref())?.unwrap_or(defaults.retry_initial);
    let retry_max = duration(source, "events.retry_max", raw.retry_max.as_deref())?.unwrap_or(defaults.retry_max);
    if retry_max < retry_initial {
        return Err(source.error("events.retry_max", "must not be shorter than `retry_initial`"));
    }
    Ok(EventsConfig { subscribers, retry_initial, retry_max })
}
