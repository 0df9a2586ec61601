//! Permission paths, such as `/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User`.
//!
//! Two rules, from the product documentation:
//! - an *action* is allowed when the user holds the exact path or any parent of it;
//! - a *notification* goes only to holders of the exact path: a parent allows the action but
//!   does not receive the notifications.

use std::fmt;

use serde::Serialize;

/// The actions of people on orders, each guarded per source entity type by the path
/// `/Custom/ProvisioningPolicy/{Action}/{EntityType}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// Approve, decline or postpone one order.
    ReviewProvisioning,
    /// The same for several orders at once (also needs `ReviewProvisioning`).
    BulkReviewProvisioning,
    /// Confirm or report an error on one manual order.
    PerformManualProvisioning,
    /// The same for several orders at once (also needs `PerformManualProvisioning`).
    BulkPerformManualProvisioning,
    /// Change desired state: create, replace or remove identities of the entity type, set or
    /// withdraw their assignments (the API, feeds, a person's request for a change).
    ManageDesiredState,
}

impl Action {
    /// The action's name in permission paths.
    pub fn name(self) -> &'static str {
        match self {
            Action::ReviewProvisioning => "ReviewProvisioning",
            Action::BulkReviewProvisioning => "BulkReviewProvisioning",
            Action::PerformManualProvisioning => "PerformManualProvisioning",
            Action::BulkPerformManualProvisioning => "BulkPerformManualProvisioning",
            Action::ManageDesiredState => "ManageDesiredState",
        }
    }

    /// The permission path guarding the action for an entity type.
    pub fn path(self, entity_type: &str) -> String {
        format!("/Custom/ProvisioningPolicy/{}/{entity_type}", self.name())
    }

    /// What the action does to what, in words.
    fn describe(self, entity_type: &str) -> String {
        let verb = match self {
            Action::ReviewProvisioning => "review",
            Action::BulkReviewProvisioning => "review in bulk",
            Action::PerformManualProvisioning => "provision manually",
            Action::BulkPerformManualProvisioning => "provision manually in bulk",
            Action::ManageDesiredState => return format!("change the desired state of {entity_type} identities"),
        };
        format!("{verb} {entity_type} orders")
    }
}

/// What operators do beyond orders of one entity type: see the host's state, or operate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Capability {
    /// Read orders, identities, job runs, plugins and the notification outbox
    /// (`/Custom/ProvisioningPolicy/View`).
    View,
    /// Run, simulate, resume and cancel jobs, retry orders, enable plugins, deliver
    /// notifications (`/Custom/ProvisioningPolicy/Operate`).
    Operate,
}

impl Capability {
    /// The capability's permission path.
    pub fn path(self) -> &'static str {
        match self {
            Capability::View => "/Custom/ProvisioningPolicy/View",
            Capability::Operate => "/Custom/ProvisioningPolicy/Operate",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Capability::View => "view the host's orders, runs and plugins",
            Capability::Operate => "operate the host (jobs, retries, plugins)",
        }
    }
}

/// A refused action: who, what, and the permission it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub struct Denied {
    /// The user.
    pub login: String,
    /// What they tried, in words.
    pub action: String,
    /// The permission path that would allow it.
    pub missing: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user `{}` may not {}: that needs the permission {} (or a parent of it)",
            self.login, self.action, self.missing
        )
    }
}

/// The same authorisation for capabilities: the path or any parent of it.
pub fn authorize_capability(login: &str, held: &[String], capability: Capability) -> Result<(), Denied> {
    if held.iter().any(|path| grants(path, capability.path())) {
        return Ok(());
    }
    Err(Denied {
        login: login.to_string(),
        action: capability.describe().to_string(),
        missing: capability.path().to_string(),
    })
}

/// The authorisation function: `login`, holding `held`, may perform `action` on orders of
/// `entity_type` when it holds the action's path or any parent of it.
pub fn authorize(login: &str, held: &[String], action: Action, entity_type: &str) -> Result<(), Denied> {
    let wanted = action.path(entity_type);
    if held.iter().any(|path| grants(path, &wanted)) {
        return Ok(());
    }
    Err(Denied { login: login.to_string(), action: action.describe(entity_type), missing: wanted })
}

/// Whether holding `held` makes a user receive the notifications guarded by `path`: only the
/// exact path does.
pub fn is_notified(held: &[String], path: &str) -> bool {
    held.iter().any(|p| is_exact(p, path))
}

/// How a permission path is matched against the paths users hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// Holders of exactly this path (who receive notifications).
    Exact,
    /// Holders of this path or of any path below it.
    Prefix,
    /// Holders of this path or of any parent of it (who may perform the action).
    Grants,
}

fn segments(path: &str) -> impl Iterator<Item = &str> + Clone {
    path.split('/').filter(|s| !s.is_empty())
}

/// Checks that a permission path is absolute and has no empty or `.`/`..` segment.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("permission path `{path}` must start with `/`"));
    }
    if segments(path).next().is_none() {
        return Err(format!("permission path `{path}` names nothing"));
    }
    if path.trim_end_matches('/').split('/').skip(1).any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!("permission path `{path}` has an empty, `.` or `..` segment"));
    }
    Ok(())
}

/// The segments below `/Custom/ProvisioningPolicy` that guard something, in the order they are
/// listed to people.
pub const KNOWN_ACTIONS: [&str; 7] = [
    "ReviewProvisioning",
    "BulkReviewProvisioning",
    "PerformManualProvisioning",
    "BulkPerformManualProvisioning",
    "ManageDesiredState",
    "View",
    "Operate",
];

/// Checks what a permission path means, beyond its shape ([`check_path`]). A path that can
/// never match anything the host checks is refused: matching is by segment and case-sensitive,
/// so `/custom/provisioningpolicy` or `.../Review/...` would silently allow nothing. A path
/// naming an entity type that `entity_types` does not hold is allowed (the type may be added
/// later) but comes back as a warning, with the type it probably meant when only the case
/// differs.
pub fn validate<'a>(path: &str, entity_types: impl IntoIterator<Item = &'a String>) -> Result<Option<String>, String> {
    check_path(path)?;
    let refuse = |why: String| {
        format!(
            "permission path `{path}` can never match: {why}. Paths are /Custom/ProvisioningPolicy/ACTION[/ENTITY_TYPE], \
             compared segment by segment and case-sensitively; the actions are {}",
            KNOWN_ACTIONS.join(", ")
        )
    };
    let parts: Vec<&str> = segments(path).collect();
    for (i, expected) in ["Custom", "ProvisioningPolicy"].into_iter().enumerate() {
        match parts.get(i) {
            Some(&part) if part == expected => {}
            Some(part) if part.eq_ignore_ascii_case(expected) => {
                return Err(refuse(format!("`{part}` is not `{expected}` (case matters)")));
            }
            Some(part) => {
                return Err(refuse(format!("the host guards nothing under `{part}`, only under `{expected}`")));
            }
            None => return Ok(None),
        }
    }
    let Some(&action) = parts.get(2) else { return Ok(None) };
    if !KNOWN_ACTIONS.contains(&action) {
        let hint = KNOWN_ACTIONS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(action))
            .map(|known| format!(" (did you mean {known}?)"))
            .unwrap_or_default();
        return Err(refuse(format!("unknown action `{action}`{hint}")));
    }
    let Some(&entity_type) = parts.get(3) else { return Ok(None) };
    if matches!(action, "View" | "Operate") {
        return Err(refuse(format!("nothing lies below `{action}`, which is for every entity type")));
    }
    if parts.len() > 4 {
        return Err(refuse(format!("nothing lies below the entity type `{entity_type}`")));
    }
    let known: Vec<&String> = entity_types.into_iter().collect();
    if known.iter().any(|k| k.as_str() == entity_type) {
        return Ok(None);
    }
    let warning = match known.iter().find(|k| k.eq_ignore_ascii_case(entity_type)) {
        Some(meant) => format!(
            "permission path `{path}` names the unknown entity type `{entity_type}`: did you mean {meant}? (case matters)"
        ),
        None => {
            let defined: Vec<&str> = known.iter().map(|k| k.as_str()).collect();
            format!(
                "permission path `{path}` names the unknown entity type `{entity_type}` (defined: {}); it allows nothing until the config defines it",
                if defined.is_empty() { "none".to_string() } else { defined.join(", ") }
            )
        }
    };
    Ok(Some(warning))
}

/// Whether holding `held` allows the action guarded by `wanted`: the same path or a parent.
/// Paths compare segment by segment, so `/A/B` is a parent of `/A/B/C` but not of `/A/BC`,
/// and a trailing slash does not matter.
pub fn grants(held: &str, wanted: &str) -> bool {
    let held: Vec<&str> = segments(held).collect();
    let wanted: Vec<&str> = segments(wanted).collect();
    !held.is_empty() && wanted.starts_with(&held)
}

/// Whether `held` is exactly `wanted` (ignoring a trailing slash).
pub fn is_exact(held: &str, wanted: &str) -> bool {
    segments(held).eq(segments(wanted))
}

/// Whether `path` matches `wanted` under `how`.
pub fn matches(held: &str, wanted: &str, how: PathMatch) -> bool {
    match how {
        PathMatch::Exact => is_exact(held, wanted),
        PathMatch::Prefix => grants(wanted, held),
        PathMatch::Grants => grants(held, wanted),
    }
}

/// An operator as the directory knows them, with every permission path their profiles hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectoryUser {
    /// Unique login.
    pub login: String,
    /// Name to show.
    pub display_name: String,
    /// E-mail address, if any.
    pub email: Option<String>,
    /// Permission paths held through profiles.
    pub permissions: Vec<String>,
}

/// A snapshot of operators and their permissions, given to notification routers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    /// The users, sorted by login.
    pub users: Vec<DirectoryUser>,
}

impl Directory {
    /// The users holding `path` under `how`, sorted by login.
    pub fn users_with_permission(&self, path: &str, how: PathMatch) -> Vec<&DirectoryUser> {
        self.users.iter().filter(|u| u.permissions.iter().any(|held| matches(held, path, how))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANUAL: &str = "/Custom/ProvisioningPolicy/PerformManualProvisioning/Directory_User";

    #[test]
    fn a_parent_grants_the_action_but_is_not_exact() {
        let parent = "/Custom/ProvisioningPolicy/PerformManualProvisioning/";
        assert!(grants(parent, MANUAL));
        assert!(grants(MANUAL, MANUAL));
        assert!(!is_exact(parent, MANUAL));
        assert!(is_exact(&format!("{MANUAL}/"), MANUAL));
        assert!(!grants(MANUAL, parent), "a child does not grant its parent");
        assert!(!grants("/Custom/ProvisioningPolicy/PerformManual", MANUAL), "segments, not characters");
        assert!(!grants("/", MANUAL), "the root path is not a permission");
    }

    #[test]
    fn the_seeds_example_parent_allows_every_entity_type_but_is_not_notified() {
        let parent = vec!["/Custom/ProvisioningPolicy/PerformManualProvisioning/".to_string()];
        let exact = vec![MANUAL.to_string()];
        for entity_type in ["Directory_User", "Device", "Contractor"] {
            assert!(authorize("p", &parent, Action::PerformManualProvisioning, entity_type).is_ok());
            assert!(!is_notified(&parent, &Action::PerformManualProvisioning.path(entity_type)));
        }
        assert!(authorize("e", &exact, Action::PerformManualProvisioning, "Directory_User").is_ok());
        assert!(is_notified(&exact, MANUAL));
        let denied = authorize("e", &exact, Action::PerformManualProvisioning, "Device").unwrap_err();
        assert_eq!(denied.missing, "/Custom/ProvisioningPolicy/PerformManualProvisioning/Device");
        assert!(denied.to_string().contains("user `e` may not provision manually Device orders"), "{denied}");
        // Bulk is its own path: holding the single action does not allow bulk.
        assert!(authorize("e", &exact, Action::BulkPerformManualProvisioning, "Directory_User").is_err());
        // The whole policy tree allows everything.
        let root = vec!["/Custom/ProvisioningPolicy".to_string()];
        assert!(authorize("r", &root, Action::BulkReviewProvisioning, "Device").is_ok());
        assert!(!is_notified(&root, MANUAL));
    }

    #[test]
    fn permission_paths_are_checked() {
        assert!(check_path(MANUAL).is_ok());
        assert!(check_path("/Custom/ProvisioningPolicy/").is_ok());
        assert!(check_path("Custom/x").is_err());
        assert!(check_path("/").is_err());
        assert!(check_path("/a//b").is_err());
        assert!(check_path("/a/../b").is_err());
    }

    #[test]
    fn the_known_actions_are_the_ones_the_host_checks() {
        for action in [
            Action::ReviewProvisioning,
            Action::BulkReviewProvisioning,
            Action::PerformManualProvisioning,
            Action::BulkPerformManualProvisioning,
            Action::ManageDesiredState,
        ] {
            assert!(KNOWN_ACTIONS.contains(&action.name()), "{action:?}");
            assert_eq!(validate(&action.path("Device"), &["Device".to_string()]), Ok(None));
        }
        for capability in [Capability::View, Capability::Operate] {
            assert_eq!(validate(capability.path(), &[]), Ok(None), "{capability:?}");
        }
        assert!(validate("/Custom/Other", &[]).is_err(), "outside the policy tree");
    }

    #[test]
    fn directory_filters_by_match() {
        let user = |login: &str, paths: &[&str]| DirectoryUser {
            login: login.into(),
            display_name: login.into(),
            email: None,
            permissions: paths.iter().map(|p| p.to_string()).collect(),
        };
        let directory = Directory {
            users: vec![
                user("exact", &[MANUAL]),
                user("parent", &["/Custom/ProvisioningPolicy/PerformManualProvisioning"]),
                user("other", &["/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User"]),
            ],
        };
        let logins = |how| -> Vec<String> {
            directory.users_with_permission(MANUAL, how).into_iter().map(|u| u.login.clone()).collect()
        };
        assert_eq!(logins(PathMatch::Exact), ["exact"]);
        assert_eq!(logins(PathMatch::Grants), ["exact", "parent"]);
        let below: Vec<_> = directory
            .users_with_permission("/Custom/ProvisioningPolicy", PathMatch::Prefix)
            .into_iter()
            .map(|u| u.login.as_str())
            .collect();
        assert_eq!(below, ["exact", "parent", "other"]);
    }
}
