//! Operators: users, profiles and the permission paths profiles hold.

use std::collections::BTreeMap;

use super::db::{Db, OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store, StoreError};
use crate::limits;
use crate::permissions::{Directory, DirectoryUser};

/// An operator of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Unique login.
    pub login: String,
    /// Name to show.
    pub display_name: String,
    /// Where e-mail notifications go.
    pub email: Option<String>,
    /// The identity this user is, as (entity type, key): nobody reviews their own orders.
    pub identity: Option<(String, String)>,
    /// Profiles held.
    pub profiles: Vec<String>,
    /// Permission paths held through those profiles.
    pub permissions: Vec<String>,
}

/// A named set of permission paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Permission paths.
    pub permissions: Vec<String>,
}

/// A user to create or update.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    /// Unique login.
    pub login: String,
    /// Name to show (default: the login).
    pub display_name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// The identity this user is.
    pub identity: Option<(String, String)>,
}

fn insert_permissions(tx: &Db, profile: &str, paths: &[String]) -> Result<()> {
    for path in paths {
        tx.execute(
            "INSERT INTO profile_permissions (profile, path) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![profile, path],
        )?;
    }
    Ok(())
}

impl Store {
    /// Creates a user, or updates the fields given.
    pub fn upsert_user(&mut self, user: &UserSpec) -> Result<()> {
        limits::check("the login", &user.login, limits::NAME)?;
        if let Some(name) = &user.display_name {
            limits::check("the display name", name, limits::NAME)?;
        }
        if let Some(email) = &user.email {
            limits::check("the e-mail address", email, limits::EMAIL)?;
        }
        let (et, key) = user.identity.clone().unzip();
        self.conn.execute(
            "INSERT INTO users (login, display_name, email, identity_entity_type, identity_key, created_at)
             VALUES (?1, COALESCE(?2, ?1), ?3, ?4, ?5, ?6)
             ON CONFLICT (login) DO UPDATE SET display_name = COALESCE(?2, users.display_name),
                email = COALESCE(?3, users.email), identity_entity_type = COALESCE(?4, users.identity_entity_type),
                identity_key = COALESCE(?5, users.identity_key)",
            params![user.login, user.display_name, user.email, et, key, self.clock.now_ms()],
        )?;
        Ok(())
    }

    /// Removes a user (their profiles go with them; history keeps their login).
    pub fn remove_user(&mut self, login: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM users WHERE login = ?1", [login])? > 0)
    }

    /// Creates a profile, or updates its description.
    pub fn upsert_profile(&mut self, name: &str, description: Option<&str>) -> Result<()> {
        limits::check("the profile name", name, limits::NAME)?;
        if let Some(description) = description {
            limits::check("the description", description, limits::DESCRIPTION)?;
        }
        self.conn.execute(
            "INSERT INTO profiles (name, description) VALUES (?1, COALESCE(?2, ''))
             ON CONFLICT (name) DO UPDATE SET description = COALESCE(?2, profiles.description)",
            params![name, description],
        )?;
        Ok(())
    }

    /// Removes a profile.
    pub fn remove_profile(&mut self, name: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM profiles WHERE name = ?1", [name])? > 0)
    }

    /// Adds permission paths to a profile.
    pub fn allow(&mut self, profile: &str, paths: &[String]) -> Result<()> {
        for path in paths {
            limits::check("a permission path", path, limits::PERMISSION_PATH)?;
        }
        let tx = self.write_tx()?;
        if tx.query_row("SELECT 1 FROM profiles WHERE name = ?1", [profile], |_| Ok(())).optional()?.is_none() {
            return Err(StoreError::NotFound(format!("there is no profile `{profile}`")));
        }
        insert_permissions(&tx, profile, paths)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes permission paths from a profile.
    pub fn disallow(&mut self, profile: &str, paths: &[String]) -> Result<usize> {
        let tx = self.write_tx()?;
        let mut removed = 0;
        for path in paths {
            removed +=
                tx.execute("DELETE FROM profile_permissions WHERE profile = ?1 AND path = ?2", params![profile, path])?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Gives profiles to a user.
    pub fn grant_profiles(&mut self, login: &str, profiles: &[String]) -> Result<()> {
        let tx = self.write_tx()?;
        for profile in profiles {
            tx.execute(
                "INSERT INTO user_profiles (login, profile) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![login, profile],
            )
            .map_err(|e| match e.kind() {
                super::ErrorKind::Conflict => {
                    StoreError::NotFound(format!("no user `{login}` or no profile `{profile}`"))
                }
                _ => e,
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Takes profiles from a user.
    pub fn revoke_profiles(&mut self, login: &str, profiles: &[String]) -> Result<usize> {
        let tx = self.write_tx()?;
        let mut removed = 0;
        for profile in profiles {
            removed +=
                tx.execute("DELETE FROM user_profiles WHERE login = ?1 AND profile = ?2", params![login, profile])?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Makes a profile hold exactly `paths`, and a user hold exactly `profiles` (config seeding).
    pub fn set_profile_permissions(&mut self, profile: &str, paths: &[String]) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM profile_permissions WHERE profile = ?1", [profile])?;
        insert_permissions(&tx, profile, paths)?;
        tx.commit()?;
        Ok(())
    }

    /// Makes a user hold exactly `profiles` (config seeding).
    pub fn set_user_profiles(&mut self, login: &str, profiles: &[String]) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM user_profiles WHERE login = ?1", [login])?;
        for profile in profiles {
            tx.execute("INSERT INTO user_profiles (login, profile) VALUES (?1, ?2)", params![login, profile])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every user with their profiles and permissions, by login.
    pub fn users(&self) -> Result<Vec<User>> {
        let mut users: BTreeMap<String, User> = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT login, display_name, email, identity_entity_type, identity_key FROM users")?;
        let mut rows = stmt.query(())?;
        while let Some(row) = rows.next()? {
            let login: String = row.get(0)?;
            let identity = match (row.get::<_, Option<String>>(3)?, row.get::<_, Option<String>>(4)?) {
                (Some(et), Some(key)) => Some((et, key)),
                _ => None,
            };
            users.insert(
                login.clone(),
                User {
                    login,
                    display_name: row.get(1)?,
                    email: row.get(2)?,
                    identity,
                    profiles: vec![],
                    permissions: vec![],
                },
            );
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT up.login, up.profile, pp.path FROM user_profiles up
             LEFT JOIN profile_permissions pp ON pp.profile = up.profile ORDER BY up.login, up.profile, pp.path",
        )?;
        let mut rows = stmt.query(())?;
        while let Some(row) = rows.next()? {
            let login: String = row.get(0)?;
            let Some(user) = users.get_mut(&login) else { continue };
            let profile: String = row.get(1)?;
            if user.profiles.last() != Some(&profile) {
                user.profiles.push(profile);
            }
            if let Some(path) = row.get::<_, Option<String>>(2)?
                && !user.permissions.contains(&path)
            {
                user.permissions.push(path);
            }
        }
        Ok(users.into_values().collect())
    }

    /// One user.
    pub fn user(&self, login: &str) -> Result<User> {
        let mut user = self
            .conn
            .prepare_cached(
                "SELECT login, display_name, email, identity_entity_type, identity_key FROM users WHERE login = ?1",
            )?
            .query_row([login], |row| {
                let identity = match (row.get::<_, Option<String>>(3)?, row.get::<_, Option<String>>(4)?) {
                    (Some(et), Some(key)) => Some((et, key)),
                    _ => None,
                };
                Ok(User {
                    login: row.get(0)?,
                    display_name: row.get(1)?,
                    email: row.get(2)?,
                    identity,
                    profiles: vec![],
                    permissions: vec![],
                })
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("there is no user `{login}`")))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT up.profile, pp.path FROM user_profiles up LEFT JOIN profile_permissions pp ON pp.profile = up.profile
             WHERE up.login = ?1 ORDER BY up.profile, pp.path",
        )?;
        let mut rows = stmt.query([login])?;
        while let Some(row) = rows.next()? {
            let profile: String = row.get(0)?;
            if user.profiles.last() != Some(&profile) {
                user.profiles.push(profile);
            }
            if let Some(path) = row.get::<_, Option<String>>(1)?
                && !user.permissions.contains(&path)
            {
                user.permissions.push(path);
            }
        }
        Ok(user)
    }

    /// Every profile with its permissions, by name.
    pub fn profiles(&self) -> Result<Vec<Profile>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.name, p.description, pp.path FROM profiles p
             LEFT JOIN profile_permissions pp ON pp.profile = p.name ORDER BY p.name, pp.path",
        )?;
        let mut rows = stmt.query(())?;
        let mut profiles: Vec<Profile> = Vec::new();
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            if profiles.last().is_none_or(|p| p.name != name) {
                profiles.push(Profile { name, description: row.get(1)?, permissions: vec![] });
            }
            if let (Some(path), Some(profile)) = (row.get::<_, Option<String>>(2)?, profiles.last_mut()) {
                profile.permissions.push(path);
            }
        }
        Ok(profiles)
    }

    /// A snapshot of users and their permissions, for notification routers.
    pub fn directory(&self) -> Result<Directory> {
        Ok(Directory {
            users: self
                .users()?
                .into_iter()
                .map(|u| DirectoryUser {
                    login: u.login,
                    display_name: u.display_name,
                    email: u.email,
                    permissions: u.permissions,
                })
                .collect(),
        })
    }
}
