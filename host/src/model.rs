//! Domain types: the words of the product, with no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The nine provisioning states, numbered as the product documentation numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ProvisioningState {
    /// Internal: no order outstanding; also where a declined, blocked or superseded order ends.
    None = 0,
    /// Ready to be fulfilled, not yet sent.
    Pending = 1,
    /// Handed to a human or an external desk, no feedback yet.
    Transmitted = 2,
    /// The fulfilment returned an error.
    Errored = 3,
    /// The change is seen in the synchronised data of the managed system.
    Verified = 4,
    /// Blocked until a reviewer decides.
    AwaitingApproval = 5,
    /// Blocked as useless: its validity window ended before it could be fulfilled.
    Inactive = 6,
    /// Evaluating the order failed (the review rule trapped, answered badly or timed out).
    Error = 7,
    /// The fulfilment returned OK, not yet seen in synchronised data.
    Executed = 8,
}

impl ProvisioningState {
    /// Every state, by number.
    pub const ALL: [ProvisioningState; 9] = [
        Self::None,
        Self::Pending,
        Self::Transmitted,
        Self::Errored,
        Self::Verified,
        Self::AwaitingApproval,
        Self::Inactive,
        Self::Error,
        Self::Executed,
    ];

    /// The state's number (0..=8).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The state for a number, if it is one of the nine.
    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }

    /// The state's name, e.g. `AwaitingApproval`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Pending => "Pending",
            Self::Transmitted => "Transmitted",
            Self::Errored => "Errored",
            Self::Verified => "Verified",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Inactive => "Inactive",
            Self::Error => "Error",
            Self::Executed => "Executed",
        }
    }

    /// Whether an order in this state is still outstanding: something is still to happen to it.
    /// A change of desired state supersedes an open order.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Transmitted | Self::Errored | Self::AwaitingApproval | Self::Error | Self::Executed
        )
    }
}

impl fmt::Display for ProvisioningState {
    /// `4 Verified`: number and name, as operators read them in the product's pages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.number(), self.name())
    }
}

/// Serialised as `{"number": 4, "name": "Verified"}`: both ways people and scripts name it.
/// In JSON a state is `{"number": 4, "name": "Verified"}`.
impl utoipa::PartialSchema for ProvisioningState {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let names: Vec<&str> = ProvisioningState::ALL.iter().map(|s| s.name()).collect();
        ObjectBuilder::new()
            .description(Some("A provisioning state, numbered as the product documentation numbers them"))
            .property("number", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(8)))
            .required("number")
            .property("name", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)))
            .required("name")
            .into()
    }
}

impl utoipa::ToSchema for ProvisioningState {}

impl Serialize for ProvisioningState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut state = serializer.serialize_struct("ProvisioningState", 2)?;
        state.serialize_field("number", &self.number())?;
        state.serialize_field("name", self.name())?;
        state.end()
    }
}

/// Read from a number (`4`) or a name (`"verified"`, `"awaiting-approval"`).
impl<'de> Deserialize<'de> for ProvisioningState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u8),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => ProvisioningState::try_from(n).map_err(serde::de::Error::custom),
            Raw::Name(name) => name.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl From<ProvisioningState> for u8 {
    fn from(state: ProvisioningState) -> u8 {
        state.number()
    }
}

impl TryFrom<u8> for ProvisioningState {
    type Error = UnknownState;
    fn try_from(n: u8) -> Result<Self, UnknownState> {
        Self::from_number(n).ok_or_else(|| UnknownState(n.to_string()))
    }
}

/// A state number or name that is not one of the nine.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown provisioning state `{0}` (expected 0-8 or a name: None, Pending, Transmitted, Errored, Verified, AwaitingApproval, Inactive, Error, Executed)"
)]
pub struct UnknownState(pub String);

impl FromStr for ProvisioningState {
    type Err = UnknownState;
    /// Accepts the number (`4`) or the name in any case (`verified`, `awaiting-approval`).
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        if let Ok(n) = s.parse::<u8>() {
            return Self::try_from(n);
        }
        let wanted: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        Self::ALL
            .into_iter()
            .find(|state| state.name().eq_ignore_ascii_case(&wanted))
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// What an order does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Create the resource.
    Added,
    /// Change attributes or entitlements of the resource.
    Modified,
    /// Remove the resource.
    Deleted,
}

impl ChangeKind {
    /// The stored number of the kind.
    pub fn number(self) -> u8 {
        match self {
            Self::Added => 0,
            Self::Modified => 1,
            Self::Deleted => 2,
        }
    }

    /// The kind for a stored number.
    pub fn from_number(n: u8) -> Option<Self> {
        [Self::Added, Self::Modified, Self::Deleted].get(usize::from(n)).copied()
    }

    /// Lower-case name: `added`, `modified`, `deleted`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Modified => "modified",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why people are told about orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationKind {
    /// Orders were handed to people for manual provisioning (Transmitted).
    ManualOrdersTransmitted,
    /// Orders wait for a reviewer (AwaitingApproval).
    OrdersAwaitingApproval,
    /// Orders wait for an operator (Errored).
    OrdersErrored,
}

impl NotificationKind {
    /// Every kind.
    pub const ALL: [NotificationKind; 3] =
        [Self::ManualOrdersTransmitted, Self::OrdersAwaitingApproval, Self::OrdersErrored];

    /// The kind's stored name, e.g. `orders-errored`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ManualOrdersTransmitted => "manual-orders-transmitted",
            Self::OrdersAwaitingApproval => "orders-awaiting-approval",
            Self::OrdersErrored => "orders-errored",
        }
    }

    /// The kind for a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The desired or actual content of one resource: attribute values and entitlements.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceContent {
    /// Single-valued attributes by name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Entitlements, e.g. group memberships.
    #[serde(default)]
    pub entitlements: BTreeSet<String>,
}

/// What one order changes: the payload a connector carries out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    /// Added, modified or deleted.
    pub kind: ChangeKind,
    /// Added: every attribute; modified: the attributes whose value changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Modified: attributes to clear.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub cleared: BTreeSet<String>,
    /// Entitlements to grant.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub granted: BTreeSet<String>,
    /// Entitlements to revoke.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub revoked: BTreeSet<String>,
}

impl Change {
    /// The change that takes `actual` (none: the resource does not exist) to `desired` (none:
    /// it should not exist), or `None` when they already match.
    pub fn between(actual: Option<&ResourceContent>, desired: Option<&ResourceContent>) -> Option<Change> {
        match (actual, desired) {
            (None, None) => None,
            (None, Some(desired)) => Some(Change {
                kind: ChangeKind::Added,
                attributes: desired.attributes.clone(),
                cleared: BTreeSet::new(),
                granted: desired.entitlements.clone(),
                revoked: BTreeSet::new(),
            }),
            (Some(_), None) => Some(Change::deletion()),
            (Some(actual), Some(desired)) => {
                let attributes: BTreeMap<_, _> = desired
                    .attributes
                    .iter()
                    .filter(|(name, value)| actual.attributes.get(*name) != Some(*value))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                let cleared: BTreeSet<_> =
                    actual.attributes.keys().filter(|name| !desired.attributes.contains_key(*name)).cloned().collect();
                let granted: BTreeSet<_> = desired.entitlements.difference(&actual.entitlements).cloned().collect();
                let revoked: BTreeSet<_> = actual.entitlements.difference(&desired.entitlements).cloned().collect();
                if attributes.is_empty() && cleared.is_empty() && granted.is_empty() && revoked.is_empty() {
                    None
                } else {
                    Some(Change { kind: ChangeKind::Modified, attributes, cleared, granted, revoked })
                }
            }
        }
    }

    /// A deletion: no attributes, no entitlements.
    pub fn deletion() -> Change {
        Change {
            kind: ChangeKind::Deleted,
            attributes: BTreeMap::new(),
            cleared: BTreeSet::new(),
            granted: BTreeSet::new(),
            revoked: BTreeSet::new(),
        }
    }

    /// Whether `actual` (none: absent) shows this change as carried out.
    pub fn is_seen_in(&self, actual: Option<&ResourceContent>) -> bool {
        match (self.kind, actual) {
            (ChangeKind::Deleted, actual) => actual.is_none(),
            (_, None) => false,
            (_, Some(actual)) => {
                self.attributes.iter().all(|(name, value)| actual.attributes.get(name) == Some(value))
                    && self.cleared.iter().all(|name| !actual.attributes.contains_key(name))
                    && self.granted.is_subset(&actual.entitlements)
                    && self.revoked.is_disjoint(&actual.entitlements)
            }
        }
    }

    /// A short stable digest of the change: two orders for the same slot with the same
    /// fingerprint ask for the same write, which is how compute stays idempotent.
    pub fn fingerprint(&self) -> String {
        // Serialising BTree-backed fields is deterministic; serde_json cannot fail on them.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&canonical)[..12])
    }

    /// What a person should do in the managed system, e.g. `Create SaaS_Account for alice:
    /// set email = alice@example.com, userName = alice; grant Users`.
    pub fn suggestion(&self, order: &Order) -> String {
        let target = match &order.resource_id {
            Some(id) => format!("{} {id} of {}", order.resource_type, order.owner),
            None => format!("{} for {}", order.resource_type, order.owner),
        };
        let mut parts = Vec::new();
        if !self.attributes.is_empty() {
            let set: Vec<String> = self.attributes.iter().map(|(n, v)| format!("{n} = {v}")).collect();
            parts.push(format!("set {}", set.join(", ")));
        }
        if !self.cleared.is_empty() {
            parts.push(format!("clear {}", self.cleared.iter().cloned().collect::<Vec<_>>().join(", ")));
        }
        if !self.granted.is_empty() {
            parts.push(format!("grant {}", self.granted.iter().cloned().collect::<Vec<_>>().join(", ")));
        }
        if !self.revoked.is_empty() {
            parts.push(format!("revoke {}", self.revoked.iter().cloned().collect::<Vec<_>>().join(", ")));
        }
        let verb = match self.kind {
            ChangeKind::Added => "Create",
            ChangeKind::Modified => "Change",
            ChangeKind::Deleted => "Delete",
        };
        if parts.is_empty() { format!("{verb} {target}") } else { format!("{verb} {target}: {}", parts.join("; ")) }
    }

    /// One line for people: `+userName=alice +group:Finance -group:Sales`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.attributes.iter().map(|(n, v)| format!("{n}={v}")));
        parts.extend(self.cleared.iter().map(|n| format!("{n}=(cleared)")));
        parts.extend(self.granted.iter().map(|e| format!("+{e}")));
        parts.extend(self.revoked.iter().map(|e| format!("-{e}")));
        parts.join(" ")
    }
}

/// A stored provisioning order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Order {
    /// The order's id.
    pub id: i64,
    /// Stable for every attempt at this order; passed to connectors.
    pub idempotency_key: String,
    /// Key of the owning identity.
    pub owner: String,
    /// The owner's entity type.
    pub entity_type: String,
    /// The resource type.
    pub resource_type: String,
    /// The resource type's classification (e.g. `sensitive`), for review rules.
    pub classification: String,
    /// The resource's id in the managed system, when known.
    pub resource_id: Option<String>,
    /// What to write.
    pub change: Change,
    /// Current state.
    pub state: ProvisioningState,
    /// Why the order was closed (declined, blocked, superseded), if it was.
    pub closed: Option<String>,
    /// Reason or error message of the last state change.
    pub message: Option<String>,
    /// Fulfilment attempts so far.
    pub attempts: u32,
    /// Creation time, Unix milliseconds.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Last change, Unix milliseconds.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// For an Errored order with a transient error: when it is due again, Unix milliseconds.
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
    /// The job run whose threshold holds it from fulfilment, if any.
    pub held_run: Option<i64>,
}

/// One row of an order's append-only history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// Unix milliseconds.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// The state before; `None` for the order's creation.
    pub from: Option<ProvisioningState>,
    /// The state after.
    pub to: ProvisioningState,
    /// The machine event that caused it.
    pub event: String,
    /// Who: `job:compute`, `plugin:NAME`, `user:LOGIN`.
    pub actor: String,
    /// Why, in words.
    pub reason: String,
}

/// Formats Unix milliseconds as an RFC 3339 UTC time, second precision.
pub fn format_time(unix_ms: impl std::borrow::Borrow<i64>) -> String {
    let unix_ms = *unix_ms.borrow();
    match jiff::Timestamp::from_millisecond(unix_ms) {
        Ok(ts) => ts.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| ts.to_string()),
        Err(_) => unix_ms.to_string(),
    }
}

/// Times in JSON: Unix milliseconds in the host, RFC 3339 UTC strings outside it (the API, the
/// CLI's `--json`, events). `#[serde(with = "crate::model::rfc3339")]` on an `i64`,
/// `rfc3339::option` on an `Option<i64>`.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    fn text(unix_ms: i64) -> String {
        jiff::Timestamp::from_millisecond(unix_ms).map(|t| t.to_string()).unwrap_or_else(|_| unix_ms.to_string())
    }

    fn parse<E: serde::de::Error>(text: &str) -> Result<i64, E> {
        text.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).map_err(|_| {
            E::custom(format!("`{text}` is not a date-time with a UTC offset, such as 2027-01-01T00:00:00Z"))
        })
    }

    /// Writes the time.
    pub fn serialize<S: Serializer>(unix_ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&text(*unix_ms))
    }

    /// Reads a time.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        parse(&String::deserialize(deserializer)?)
    }

    /// The same for an optional time (`null` when absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the time, or null.
        pub fn serialize<S: Serializer>(unix_ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
            match unix_ms {
                Some(ms) => serializer.serialize_str(&super::text(*ms)),
                None => serializer.serialize_none(),
            }
        }

        /// Reads a time, or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
            Option::<String>::deserialize(deserializer)?.map(|t| super::parse(&t)).transpose()
        }
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Where the store reads the time (leases, expiries, history): passed in, so that a backend can
/// take it from the database server and tests can move it without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told (tests, replays).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock standing at `unix_ms`.
    pub fn at(unix_ms: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(unix_ms))
    }

    /// Moves the clock on by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(attrs: &[(&str, &str)], ents: &[&str]) -> ResourceContent {
        ResourceContent {
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            entitlements: ents.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn state_numbers_and_names_round_trip() {
        for state in ProvisioningState::ALL {
            assert_eq!(ProvisioningState::from_number(state.number()), Some(state));
            assert_eq!(state.name().parse::<ProvisioningState>().unwrap(), state);
            assert_eq!(state.number().to_string().parse::<ProvisioningState>().unwrap(), state);
        }
        assert_eq!("awaiting-approval".parse::<ProvisioningState>().unwrap(), ProvisioningState::AwaitingApproval);
        assert!("9".parse::<ProvisioningState>().is_err());
        assert!("Done".parse::<ProvisioningState>().is_err());
        assert_eq!(ProvisioningState::Verified.to_string(), "4 Verified");
    }

    #[test]
    fn change_between_describes_only_the_difference() {
        let actual = content(&[("mail", "a@x"), ("title", "Dev")], &["g1", "g2"]);
        let desired = content(&[("mail", "a@y"), ("phone", "1")], &["g2", "g3"]);
        let change = Change::between(Some(&actual), Some(&desired)).unwrap();
        assert_eq!(change.kind, ChangeKind::Modified);
        assert_eq!(change.summary(), "mail=a@y phone=1 title=(cleared) +g3 -g1");
        assert!(change.is_seen_in(Some(&desired)));
        assert!(!change.is_seen_in(Some(&actual)));
        assert_eq!(Change::between(Some(&desired), Some(&desired)), None);
        assert_eq!(Change::between(None, Some(&desired)).unwrap().kind, ChangeKind::Added);
        let deletion = Change::between(Some(&actual), None).unwrap();
        assert!(deletion.is_seen_in(None) && !deletion.is_seen_in(Some(&actual)));
    }

    #[test]
    fn fingerprint_tells_changes_apart() {
        let a = Change::between(None, Some(&content(&[("mail", "a@x")], &[]))).unwrap();
        let b = Change::between(None, Some(&content(&[("mail", "a@y")], &[]))).unwrap();
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
