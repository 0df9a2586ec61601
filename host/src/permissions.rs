//! Permission paths, such as `/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User`.
//!
//! Two rules, from the product documentation:
//! - an *action* is allowed when the user holds the exact path or any parent of it;
//! - a *notification* goes only to holders of the exact path: a parent allows the action but
//!   does not receive the notifications.

use serde::Serialize;

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
