//! The application layer: the operations people and scripts perform on the host, each one
//! function that authorises its caller and keeps the rules, whoever asks. The CLI, the API and
//! the pages parse, resolve a [`Principal`], call one of these and print; none of them decides.
//!
//! A person's action on their work lists is [`act`] (the rules live in [`crate::review`] and
//! [`crate::manual`], through [`crate::operators`]), followed by [`notify_after_action`]; a job
//! run is [`crate::jobs`].

pub mod desired;
pub mod history;

use crate::host::Host;
use crate::model::{Order, ProvisioningState};
use crate::notify::NotifyReport;
use crate::operators::ActionError;
use crate::permissions::{Action, Capability, Denied, authorize, authorize_capability};
use crate::review::Decision;
use crate::store::{OrderFilter, StoreError, User, UserSpec};

/// Who acts: a user of the host with the permissions their profiles give, resolved once per
/// request or command.
#[derive(Debug, Clone)]
pub struct Principal {
    user: User,
}

impl Principal {
    /// The user `login`, or [`ActionError::UnknownUser`].
    pub fn of(host: &Host, login: &str) -> Result<Principal, ActionError> {
        Ok(Principal { user: crate::operators::user(&host.store, login)? })
    }

    /// A principal for a user already read (an API token's or a session's).
    pub fn from_user(user: User) -> Principal {
        Principal { user }
    }

    /// The user.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// The login.
    pub fn login(&self) -> &str {
        &self.user.login
    }

    /// How history names this principal.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user.login)
    }

    /// Whether the user holds a capability.
    pub fn may(&self, capability: Capability) -> bool {
        self.require(capability).is_ok()
    }

    /// The capability, or the refusal naming its path.
    pub fn require(&self, capability: Capability) -> Result<(), Denied> {
        authorize_capability(&self.user.login, &self.user.permissions, capability)
    }

    /// Whether the user may perform `action` on orders of `entity_type`.
    pub fn may_act(&self, action: Action, entity_type: &str) -> bool {
        authorize(&self.user.login, &self.user.permissions, action, entity_type).is_ok()
    }
}

/// What a person does to orders in their work lists, by the name every front end uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkAction {
    /// A reviewer releases the orders to fulfilment.
    Approve,
    /// A reviewer refuses them.
    Decline,
    /// A reviewer decides later (the text says why).
    Postpone,
    /// An implementer confirms the orders were carried out by hand.
    Confirm,
    /// An implementer reports they could not be (the text says what went wrong).
    ReportError,
}

impl WorkAction {
    /// A reviewer's actions.
    pub const REVIEW: &[WorkAction] = &[WorkAction::Approve, WorkAction::Decline, WorkAction::Postpone];
    /// An implementer's actions.
    pub const MANUAL: &[WorkAction] = &[WorkAction::Confirm, WorkAction::ReportError];

    /// The name in the CLI's commands, the API's paths and the pages' forms.
    pub fn name(self) -> &'static str {
        match self {
            WorkAction::Approve => "approve",
            WorkAction::Decline => "decline",
            WorkAction::Postpone => "postpone",
            WorkAction::Confirm => "confirm",
            WorkAction::ReportError => "report-error",
        }
    }

    /// The action called `name` among `among`, or [`ActionError::UnknownName`] listing them.
    pub fn named(name: &str, among: &[WorkAction]) -> Result<WorkAction, ActionError> {
        among.iter().copied().find(|a| a.name() == name).ok_or_else(|| ActionError::UnknownName {
            what: "action",
            name: name.to_string(),
            known: among.iter().map(|a| a.name().to_string()).collect(),
        })
    }
}

/// A person acts on orders, all or nothing, in one short transaction beside any running job
/// (a worker's later write under its fence meets the new state; the machine refuses an action
/// on an order a job has just moved). `text` is the comment, or the error report's message.
/// The notifications the change causes are queued in the same transaction: call
/// [`notify_after_action`] once it returned.
pub fn act(
    host: &mut Host,
    who: &Principal,
    orders: &[i64],
    action: WorkAction,
    text: Option<&str>,
) -> Result<Vec<Order>, ActionError> {
    let (store, login) = (&mut host.store, who.login());
    let decision = match action {
        WorkAction::Approve => Decision::Approve,
        WorkAction::Decline => Decision::Decline,
        WorkAction::Postpone => Decision::Postpone,
        WorkAction::Confirm => return crate::manual::confirm(store, login, orders, text),
        WorkAction::ReportError => {
            return crate::manual::report_error(store, login, orders, text.unwrap_or_default());
        }
    };
    crate::review::decide(store, login, orders, decision, text)
}

/// Routes what people's actions queued into the outbox and delivers it. Every front end calls
/// this after a successful [`act`] (or [`retry`]): the CLI before it exits, `serve` beside its
/// answer. A failing router or webhook is in the report; the intents stay queued for the next
/// pass, so nothing an action caused is lost.
pub fn notify_after_action(host: &mut Host) -> Result<NotifyReport, StoreError> {
    crate::notify::route_and_deliver(host)
}

/// Which orders an operator retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrySelection {
    /// These orders (each must be Errored).
    Orders(Vec<i64>),
    /// Every Errored order of these resource types (none named: of every type).
    Errored {
        /// The resource types.
        resource_types: Vec<String>,
    },
}

/// An operator (`Operate`) retries Errored orders: back to Pending with a fresh retry budget,
/// all or nothing; returns them as they are now.
pub fn retry(host: &mut Host, who: &Principal, what: RetrySelection) -> Result<Vec<Order>, ActionError> {
    who.require(Capability::Operate)?;
    let ids = match what {
        RetrySelection::Orders(ids) => ids,
        RetrySelection::Errored { resource_types } => {
            if let Some(unknown) = resource_types.iter().find(|rt| !host.config.resource_types.contains_key(*rt)) {
                return Err(ActionError::UnknownName {
                    what: "resource type",
                    name: unknown.clone(),
                    known: host.config.resource_types.keys().cloned().collect(),
                });
            }
            let filter =
                OrderFilter { states: vec![ProvisioningState::Errored], resource_types, ..OrderFilter::default() };
            host.store.orders(&filter)?.iter().map(|o| o.id).collect()
        }
    };
    crate::operators::retry(&mut host.store, who.login(), &ids)
}

/// Users and profiles the config lists are set from it every time the host opens: a change made
/// elsewhere would quietly come undone at the next open, so it is refused, naming where to make
/// it. `table` is `users` or `profiles`.
pub fn not_from_config(host: &Host, table: &'static str, name: &str) -> Result<(), ActionError> {
    let listed = match table {
        "users" => host.config.users.contains_key(name),
        _ => host.config.profiles.contains_key(name),
    };
    if listed {
        return Err(ActionError::Refused(vec![format!(
            "`{name}` is set by the config ({}, [{table}.{name}]), which is applied every time the host opens: \
             change it there",
            host.config.source.file().display()
        )]));
    }
    Ok(())
}

/// Adds or replaces a user the config does not own, with the profiles to grant.
pub fn save_user(host: &mut Host, user: &UserSpec, profiles: &[String]) -> Result<(), ActionError> {
    crate::limits::check("the login", &user.login, crate::limits::NAME)?;
    if let Some(name) = &user.display_name {
        crate::limits::check("the name", name, crate::limits::NAME)?;
    }
    if let Some(email) = &user.email {
        crate::limits::check("the e-mail address", email, crate::limits::EMAIL)?;
        email
            .parse::<lettre::Address>()
            .map_err(|e| ActionError::Invalid(format!("the e-mail address `{email}`: {e}")))?;
    }
    not_from_config(host, "users", &user.login)?;
    host.store.upsert_user(user)?;
    if !profiles.is_empty() {
        host.store.grant_profiles(&user.login, profiles)?;
    }
    Ok(())
}

/// Grants profiles to a user the config does not own.
pub fn grant(host: &mut Host, login: &str, profiles: &[String]) -> Result<(), ActionError> {
    not_from_config(host, "users", login)?;
    crate::operators::user(&host.store, login)?;
    Ok(host.store.grant_profiles(login, profiles)?)
}

/// Takes profiles from a user the config does not own; returns how many it held.
pub fn revoke(host: &mut Host, login: &str, profiles: &[String]) -> Result<usize, ActionError> {
    not_from_config(host, "users", login)?;
    Ok(host.store.revoke_profiles(login, profiles)?)
}

/// Removes a user the config does not own.
pub fn remove_user(host: &mut Host, login: &str) -> Result<(), ActionError> {
    not_from_config(host, "users", login)?;
    if !host.store.remove_user(login)? {
        return Err(ActionError::UnknownUser(login.to_string()));
    }
    Ok(())
}

/// A loaded plugin as every front end shows it (`provision plugins list --json`, `GET
/// /api/v1/plugins`): one shape.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginView<'a> {
    /// Its name in the config.
    pub name: &'a str,
    /// The worlds it implements.
    pub worlds: Vec<crate::plugins::World>,
    /// A connector that can also read its managed system.
    pub can_read: bool,
    /// The WIT package version it was built against.
    pub wit_version: &'static str,
    /// What it says about itself.
    pub description: Option<&'a crate::plugins::Description>,
    /// Of its file or bundled bytes.
    pub sha256: &'a str,
    /// Bytes.
    pub size: u64,
    /// Compiling (or loading from the cache), linking and describing it, in milliseconds.
    pub load_ms: f64,
    /// Loaded from the compiled-component cache.
    pub from_cache: bool,
    /// What its calls cost in this process since it was loaded (a server's; none for a command,
    /// which has made none).
    pub since_load: Option<SinceLoad>,
    /// Its health: calls and failures counted in the database by every process.
    pub health: crate::store::Health,
    /// The last reload that was refused, if any.
    pub reload_refused: Option<Refusal>,
}

/// Calls in this process since a plugin was loaded, with their time.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct SinceLoad {
    /// Calls made.
    pub calls: u64,
    /// Time inside them, in milliseconds.
    pub call_time_ms: f64,
    /// Outbound HTTP requests.
    pub http_requests: u64,
    /// Time from sending those requests to their responses' headers, in milliseconds.
    pub http_time_ms: f64,
}

/// A refused reload.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Refusal {
    /// When (RFC 3339).
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// Why.
    pub reason: String,
}

/// Milliseconds of a duration, to the microsecond.
fn ms(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl<'a> PluginView<'a> {
    /// The view of `plugin` with its stored health; `since_load` for a long-running process.
    pub fn of(
        plugin: &'a crate::plugins::Plugin,
        health: crate::store::Health,
        since_load: bool,
        refused: Option<(i64, String)>,
    ) -> PluginView<'a> {
        let stats = plugin.stats();
        PluginView {
            name: &plugin.name,
            worlds: plugin.worlds(),
            can_read: plugin.can_read(),
            wit_version: plugin.wit_version(),
            description: plugin.description(),
            sha256: &plugin.sha256,
            size: plugin.size as u64,
            load_ms: ms(plugin.load_time),
            from_cache: plugin.from_cache,
            since_load: since_load.then_some(SinceLoad {
                calls: stats.calls,
                call_time_ms: ms(stats.call_time),
                http_requests: stats.http_requests,
                http_time_ms: ms(stats.http_time),
            }),
            health,
            reload_refused: refused.map(|(at, reason)| Refusal { at, reason }),
        }
    }
}
