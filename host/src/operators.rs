//! What people do to orders, checked the same way whoever asks (CLI today, the web pages
//! later): the acting user must exist and hold the permission for every order's entity type
//! (the Bulk one too for several orders), must not act on their own orders where that is
//! forbidden, and every order must be in a state the machine allows. All or nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::machine::Event;
use crate::model::{Order, ProvisioningState};
use crate::permissions::{Action, Denied, authorize};
use crate::store::{OrderFilter, Store, StoreError, Transition, User};

/// Why an action by a person was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The acting user does not exist.
    #[error("there is no user `{0}` (create one with `provision users add`)")]
    UnknownUser(String),
    /// No order was given.
    #[error("no order given")]
    NoOrders,
    /// An order id does not exist.
    #[error("there is no order {0}")]
    NoSuchOrder(i64),
    /// The user lacks a permission.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The user would act on an order they own.
    #[error("user `{login}` may not review order {order}: it is their own ({owner})")]
    OwnOrder {
        /// The user.
        login: String,
        /// The order.
        order: i64,
        /// The order's owner.
        owner: String,
    },
    /// The state machine refused some orders (each named with its state).
    #[error("refused, nothing changed:\n  {}", .0.join("\n  "))]
    Refused(Vec<String>),
    /// A name the host does not know (a resource type), with the ones it knows.
    #[error("unknown {what} `{name}` (the config defines: {})", .known.join(", "))]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The names the config defines.
        known: Vec<String>,
    },
    /// A value that cannot be used (an e-mail address that does not parse).
    #[error("{0}")]
    Invalid(String),
    /// A required text is missing or empty.
    #[error("{0}")]
    Missing(&'static str),
    /// A text is over its limit (`crate::limits`).
    #[error(transparent)]
    TooLong(#[from] crate::limits::TooLong),
    /// A request carries more items than one may (the text says how many and the limit).
    #[error("{0}")]
    TooMany(String),
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ActionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoSuchOrder(id) => ActionError::NoSuchOrder(id),
            other => ActionError::Store(other),
        }
    }
}

/// One action of a person on some orders.
pub(crate) struct Act<'a> {
    /// Who.
    pub login: &'a str,
    /// Which orders.
    pub orders: &'a [i64],
    /// The permission needed for one order.
    pub action: Action,
    /// The permission needed, also, for several.
    pub bulk: Action,
    /// Whether acting on one's own order is refused (reviews).
    pub not_own: bool,
    /// What happens to each order.
    pub event: Event,
    /// The history reason.
    pub reason: String,
}

/// The user, or [`ActionError::UnknownUser`].
pub fn user(store: &Store, login: &str) -> Result<User, ActionError> {
    store.user(login).map_err(|_| ActionError::UnknownUser(login.to_string()))
}

/// Whether `user` is the owner of `order`: their linked identity, or, for a user with no
/// linked identity, an owner whose key is their login.
pub fn owns(user: &User, order: &Order) -> bool {
    is_owner(user, &order.entity_type, &order.owner)
}

/// Whether `user` is the identity `owner` of `entity_type` (the login stands for the key when
/// no identity is linked).
pub fn is_owner(user: &User, entity_type: &str, owner: &str) -> bool {
    match &user.identity {
        Some((et, key)) => et == entity_type && key == owner,
        None => user.login == owner,
    }
}

/// Performs an action after every check; returns the orders as they are afterwards.
pub(crate) fn act(store: &mut Store, act: Act<'_>) -> Result<Vec<Order>, ActionError> {
    let user = user(store, act.login)?;
    let ids: Vec<i64> = act.orders.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    if ids.is_empty() {
        return Err(ActionError::NoOrders);
    }
    let orders: Vec<Order> = ids.iter().map(|id| store.order(*id)).collect::<Result<_, _>>()?;
    let entity_types: BTreeSet<&str> = orders.iter().map(|o| o.entity_type.as_str()).collect();
    for entity_type in entity_types {
        authorize(&user.login, &user.permissions, act.action, entity_type)?;
        if ids.len() > 1 {
            authorize(&user.login, &user.permissions, act.bulk, entity_type)?;
        }
    }
    if act.not_own
        && let Some(own) = orders.iter().find(|o| owns(&user, o))
    {
        return Err(ActionError::OwnOrder { login: user.login, order: own.id, owner: own.owner.clone() });
    }
    let transitions: Vec<Transition> =
        ids.iter().map(|id| Transition::new(*id, act.event, act.reason.clone())).collect();
    if let Err(refusals) = store.apply_all(&transitions, &format!("user:{}", user.login))? {
        return Err(ActionError::Refused(refusals.iter().map(ToString::to_string).collect()));
    }
    Ok(ids.iter().map(|id| store.order(*id)).collect::<Result<_, _>>()?)
}

/// Where a page of a work list starts and how long it is (none: all of it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Paging {
    /// Only orders with an id above this.
    pub after: Option<i64>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// A work list's page function (`review::list`, `manual::list`).
pub type ListFn = fn(&Store, &str, Option<&str>, Paging) -> Result<Vec<WorkItem>, ActionError>;
/// A work list's totals function (`review::totals`, `manual::totals`).
pub type TotalsFn = fn(&Store, &str) -> Result<BTreeMap<String, u64>, ActionError>;

/// How many orders in `state` wait for `login`, per entity type they may act on with `action`.
pub(crate) fn work_totals(
    store: &Store,
    login: &str,
    action: Action,
    state: ProvisioningState,
) -> Result<BTreeMap<String, u64>, ActionError> {
    let user = user(store, login)?;
    let mut totals =
        store.count_orders_by_entity_type(&OrderFilter { states: vec![state], ..OrderFilter::default() })?;
    totals.retain(|entity_type, _| authorize(&user.login, &user.permissions, action, entity_type).is_ok());
    Ok(totals)
}

/// The orders in `state` that `login` may act on with `action`, of one entity type (which they
/// must then hold the permission for) or of every entity type they hold it for, in id order.
pub(crate) fn work_list(
    store: &Store,
    login: &str,
    entity_type: Option<&str>,
    action: Action,
    state: ProvisioningState,
    paging: Paging,
) -> Result<Vec<WorkItem>, ActionError> {
    let user = user(store, login)?;
    let entity_types = match entity_type {
        Some(entity_type) => {
            authorize(&user.login, &user.permissions, action, entity_type)?;
            vec![entity_type.to_string()]
        }
        None => work_totals(store, login, action, state)?.into_keys().collect(),
    };
    if entity_types.is_empty() {
        return Ok(Vec::new());
    }
    let filter = OrderFilter {
        states: vec![state],
        entity_types,
        after: paging.after,
        limit: paging.limit,
        ..OrderFilter::default()
    };
    Ok(store
        .orders(&filter)?
        .into_iter()
        .map(|order| WorkItem { suggestion: order.change.suggestion(&order), own: owns(&user, &order), order })
        .collect())
}

/// An order as a person sees it in a work list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WorkItem {
    /// The order.
    pub order: Order,
    /// What to do, in words.
    pub suggestion: String,
    /// Whether it is the user's own (they may see it, not review it).
    pub own: bool,
}

/// An operator retries Errored orders (→ Pending, fresh retry budget), all or nothing.
pub fn retry(store: &mut Store, login: &str, orders: &[i64]) -> Result<Vec<Order>, ActionError> {
    let user = user(store, login)?;
    if orders.is_empty() {
        return Err(ActionError::NoOrders);
    }
    let reason = format!("retried by {}", user.login);
    let transitions: Vec<Transition> =
        orders.iter().map(|id| Transition::new(*id, crate::machine::Event::Retry, reason.clone())).collect();
    if let Err(refusals) = store.apply_all(&transitions, &format!("user:{}", user.login))? {
        return Err(ActionError::Refused(refusals.iter().map(ToString::to_string).collect()));
    }
    Ok(orders.iter().map(|id| store.order(*id)).collect::<Result<_, _>>()?)
}
