//! The operator and notification parts of the config: users and profiles seeded into the
//! database, and where notifications are delivered (SMTP relay, webhooks) with their secrets.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Source, SourceError, check_name, duration};

/// A user declared in config (the config is authoritative for the users it lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// Login.
    pub login: String,
    /// Name to show.
    pub display_name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// The identity this user is, as (entity type, key).
    pub identity: Option<(String, String)>,
    /// Exactly the profiles they hold.
    pub profiles: Vec<String>,
}

/// A profile declared in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Exactly the permission paths it holds.
    pub permissions: Vec<String>,
}

/// A secret value as the config names it: an environment variable, a file, or (discouraged)
/// the config itself. The config holds only the reference, checked for shape at load; the value
/// is read by [`Secret::resolve`] when the part that uses it runs (a delivery, a plugin call),
/// so a command that never delivers or calls that plugin does not need it. It never appears in
/// `Debug` output, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(SecretSource);

#[derive(Clone, PartialEq, Eq)]
enum SecretSource {
    Inline(String),
    Env(String),
    File(PathBuf),
}

/// Why a secret could not be read; names the variable or file, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is missing.
    #[error("environment variable {0} is not set (or not UTF-8)")]
    Unset(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// It is there but empty.
    #[error("the secret in {0} is empty")]
    Empty(String),
}

impl Secret {
    /// A secret given in the config itself (tests, `plugin test`).
    pub fn inline(value: impl Into<String>) -> Secret {
        Secret(SecretSource::Inline(value.into()))
    }

    /// Reads the value now, from where the config says it lives.
    pub fn resolve(&self) -> Result<String, SecretError> {
        let (value, from) = match &self.0 {
            SecretSource::Inline(value) => (value.clone(), "the config".to_string()),
            SecretSource::Env(var) => (
                std::env::var(var).map_err(|_| SecretError::Unset(var.clone()))?,
                format!("environment variable {var}"),
            ),
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SecretError::File { path: path.display().to_string(), message: e.to_string() })?;
                (text.trim_end_matches(['\n', '\r']).to_string(), format!("file {}", path.display()))
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(from));
        }
        Ok(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Where it lives is not secret; the value is.
        match &self.0 {
            SecretSource::Inline(_) => f.write_str("Secret(***)"),
            SecretSource::Env(var) => write!(f, "Secret(env {var})"),
            SecretSource::File(path) => write!(f, "Secret(file {})", path.display()),
        }
    }
}

/// How TLS is used with the SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain text (a relay on localhost or a test server).
    None,
    /// Upgrade with STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The SMTP relay notifications are e-mailed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Relay host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: SmtpTls,
    /// The From address.
    pub from: String,
    /// Login and password, if the relay wants them.
    pub credentials: Option<(String, Secret)>,
    /// Per-message timeout.
    pub timeout: Duration,
}

/// A webhook notifications are POSTed to, signed with HMAC-SHA256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Its name (the delivery channel is `webhook:NAME`).
    pub name: String,
    /// The URL.
    pub url: String,
    /// The HMAC key.
    pub secret: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Delivery of notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationsConfig {
    /// The SMTP relay, if e-mail is configured.
    pub smtp: Option<SmtpConfig>,
    /// Webhooks by name.
    pub webhooks: Vec<WebhookConfig>,
    /// Delay before the first retry of a failed delivery.
    pub retry_initial: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
    /// Attempts before a delivery is marked failed (an operator can retry it).
    pub max_attempts: u32,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            smtp: None,
            webhooks: Vec::new(),
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            max_attempts: 10,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    display_name: Option<String>,
    email: Option<String>,
    identity: Option<String>,
    #[serde(default)]
    profiles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    permissions: Vec<String>,
}

/// `"value"`, `{ env = "VAR" }` or `{ file = "path" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawSecret {
    Inline(String),
    Env { env: String },
    File { file: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifications {
    smtp: Option<RawSmtp>,
    #[serde(default)]
    webhooks: BTreeMap<String, RawWebhook>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    max_attempts: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<SmtpTls>,
    from: String,
    username: Option<String>,
    password: Option<RawSecret>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: RawSecret,
    timeout: Option<String>,
}

/// A secret reference, checked for shape only: the value is read when it is used.
pub(super) fn secret(source: &Source, key: &str, raw: RawSecret, base: &Path) -> Result<Secret, SourceError> {
    let secret = match raw {
        RawSecret::Inline(value) if value.is_empty() => return Err(source.error(key, "the secret is empty")),
        RawSecret::Inline(value) => SecretSource::Inline(value),
        RawSecret::Env { env } => {
            if env.is_empty() || env.contains(['=', '\0']) {
                return Err(source.error(key, format!("`{env}` is not an environment variable name")));
            }
            SecretSource::Env(env)
        }
        RawSecret::File { file } if file.is_empty() => return Err(source.error(key, "the secret file has no name")),
        RawSecret::File { file } => SecretSource::File(base.join(file)),
    };
    Ok(Secret(secret))
}

pub(super) fn users(
    source: &Source,
    raw: BTreeMap<String, RawUser>,
    profiles: &BTreeMap<String, ProfileConfig>,
) -> Result<BTreeMap<String, UserConfig>, SourceError> {
    let mut users = BTreeMap::new();
    for (login, raw) in raw {
        let key = format!("users.{login}");
        check_name(source, &key, &login)?;
        let identity = match raw.identity {
            None => None,
            Some(text) => match text.split_once(':') {
                Some((et, k)) if !et.is_empty() && !k.is_empty() => Some((et.to_string(), k.to_string())),
                _ => {
                    return Err(source
                        .error(format!("{key}.identity"), "must be ENTITY_TYPE:KEY, e.g. \"Directory_User:alice\""));
                }
            },
        };
        for (i, profile) in raw.profiles.iter().enumerate() {
            if !profiles.contains_key(profile) {
                let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
                return Err(source.error(
                    format!("{key}.profiles[{i}]"),
                    format!("unknown profile `{profile}` (the config defines: {})", known.join(", ")),
                ));
            }
        }
        users.insert(
            login.clone(),
            UserConfig { login, display_name: raw.display_name, email: raw.email, identity, profiles: raw.profiles },
        );
    }
    Ok(users)
}

/// The profiles; a permission path that can never match is an error, one naming an entity type
/// the config does not define a warning (pushed to `warnings`, naming file, line and key).
pub(super) fn profiles<'a>(
    source: &Source,
    raw: BTreeMap<String, RawProfile>,
    entity_types: impl Iterator<Item = &'a String> + Clone,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, ProfileConfig>, SourceError> {
    let mut profiles = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("profiles.{name}");
        check_name(source, &key, &name)?;
        for (i, path) in raw.permissions.iter().enumerate() {
            let key = format!("{key}.permissions[{i}]");
            match crate::permissions::validate(path, entity_types.clone()) {
                Ok(None) => {}
                Ok(Some(warning)) => warnings.push(source.error(key, warning).to_string()),
                Err(problem) => return Err(source.error(key, problem)),
            }
        }
        profiles
            .insert(name.clone(), ProfileConfig { name, description: raw.description, permissions: raw.permissions });
    }
    Ok(profiles)
}

pub(super) fn notifications(
    source: &Source,
    raw: RawNotifications,
    base: &Path,
) -> Result<NotificationsConfig, SourceError> {
    let defaults = NotificationsConfig::default();
    let smtp = match raw.smtp {
        None => None,
        Some(smtp) => {
            let tls = smtp.tls.unwrap_or(SmtpTls::Starttls);
            let port = smtp.port.unwrap_or(match tls {
                SmtpTls::None => 25,
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
            });
            if smtp.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(
                    source.error("notifications.smtp.from", format!("`{}` is not an e-mail address", smtp.from))
                );
            }
            let credentials = match (smtp.username, smtp.password) {
                (Some(user), Some(password)) => {
                    Some((user, secret(source, "notifications.smtp.password", password, base)?))
                }
                (None, None) => None,
                _ => {
                    return Err(source.error("notifications.smtp", "give both `username` and `password`, or neither"));
                }
            };
            let timeout = duration(source, "notifications.smtp.timeout", smtp.timeout.as_deref())?
                .unwrap_or(Duration::from_secs(30));
            Some(SmtpConfig { host: smtp.host, port, tls, from: smtp.from, credentials, timeout })
        }
    };
    let mut webhooks = Vec::new();
    for (name, hook) in raw.webhooks {
        let key = format!("notifications.webhooks.{name}");
        check_name(source, &key, &name)?;
        if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
            return Err(source.error(format!("{key}.url"), "must be an http:// or https:// URL"));
        }
        let secret = secret(source, &format!("{key}.secret"), hook.secret, base)?;
        let timeout =
            duration(source, &format!("{key}.timeout"), hook.timeout.as_deref())?.unwrap_or(Duration::from_secs(30));
        webhooks.push(WebhookConfig { name, url: hook.url, secret, timeout });
    }
    let retry_initial = duration(source, "notifications.retry_initial", raw.retry_initial.as_deref())?
        .unwrap_or(defaults.retry_initial);
    let retry_max =
        duration(source, "notifications.retry_max", raw.retry_max.as_deref())?.unwrap_or(defaults.retry_max);
    let max_attempts = raw.max_attempts.unwrap_or(defaults.max_attempts);
    if max_attempts == 0 {
        return Err(source.error("notifications.max_attempts", "must be at least 1"));
    }
    Ok(NotificationsConfig { smtp, webhooks, retry_initial, retry_max, max_attempts })
}
