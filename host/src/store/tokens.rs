//! API tokens and web sessions. A token or session id is 32 random bytes shown once; only its
//! sha256 is stored, so a copy of the database signs nobody in.

use super::db::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError};

/// An API token as listed (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Its id.
    pub id: i64,
    /// The user it acts as.
    pub login: String,
    /// What it is for.
    pub name: String,
    /// Unix ms.
    #[serde(with = "crate::model::rfc3339")]
    pub created_at: i64,
    /// Unix ms; none: never.
    #[serde(with = "crate::model::rfc3339::option")]
    pub expires_at: Option<i64>,
}

/// A signed-in browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub login: String,
    /// The token every form of the session must carry.
    pub csrf: String,
}

/// 32 random bytes, hex: a token, a session id, a CSRF token.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not something to limp on from.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator");
    hex::encode(bytes)
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Store {
    /// Creates an API token for a user; returns its value, shown once.
    pub fn create_token(&mut self, login: &str, name: &str, expires_at: Option<i64>) -> Result<(i64, String)> {
        crate::limits::check("the token name", name, crate::limits::NAME)?;
        self.user(login)?;
        let token = format!("prv_{}", random_secret());
        let id = self.conn.query_row(
            "INSERT INTO api_tokens (login, name, hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            params![login, name, hash(&token), self.clock.now_ms(), expires_at],
            |r| r.get(0),
        )?;
        Ok((id, token))
    }

    /// The user a token acts as, if it is valid (known, not expired).
    pub fn token_user(&self, token: &str) -> Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT login FROM api_tokens WHERE hash = ?1 AND (expires_at IS NULL OR expires_at > ?2)")?
            .query_row(params![hash(token), self.clock.now_ms()], |r| r.get(0))
            .optional()
    }

    /// Every token, newest first (values are never stored).
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, login, name, created_at, expires_at FROM api_tokens ORDER BY id DESC")?;
        let rows = stmt.query_map((), |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                login: r.get(1)?,
                name: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
            })
        })?;
        rows.collect::<Result<_, _>>()
    }

    /// Revokes a token.
    pub fn revoke_token(&mut self, id: i64) -> Result<()> {
        if self.conn.execute("DELETE FROM api_tokens WHERE id = ?1", [id])? == 0 {
            return Err(StoreError::NotFound(format!("there is no token {id}")));
        }
        Ok(())
    }

    /// Starts a browser session for a user; returns the session id (for the cookie).
    pub fn create_session(&mut self, login: &str, lifetime_ms: i64) -> Result<String> {
        let id = random_secret();
        let now = self.clock.now_ms();
        self.conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        self.conn.execute(
            "INSERT INTO sessions (hash, login, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash(&id), login, random_secret(), now, now + lifetime_ms],
        )?;
        Ok(id)
    }

    /// The session of a cookie, if it is valid.
    pub fn session(&self, id: &str) -> Result<Option<Session>> {
        self.conn
            .prepare_cached("SELECT login, csrf FROM sessions WHERE hash = ?1 AND expires_at > ?2")?
            .query_row(params![hash(id), self.clock.now_ms()], |r| Ok(Session { login: r.get(0)?, csrf: r.get(1)? }))
            .optional()
    }

    /// Ends a session.
    pub fn end_session(&mut self, id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM sessions WHERE hash = ?1", [hash(id)])?;
        Ok(())
    }
}
