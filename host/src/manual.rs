//! Manual provisioning: orders of a `manual-ticket` connection (or handed over by a
//! connector) wait in Transmitted for a person with
//! `/Custom/ProvisioningPolicy/PerformManualProvisioning/{EntityType}`, who reads the suggested
//! change, makes it in the managed system, then confirms (→ Executed) or reports an error
//! (→ Errored). Several at once needs `BulkPerformManualProvisioning` too.

use crate::machine::Event;
use crate::model::{Order, ProvisioningState};
use std::collections::BTreeMap;

use crate::limits;
use crate::operators::{Act, ActionError, Paging, WorkItem, act, work_list, work_totals};
use crate::permissions::Action;
use crate::store::Store;

/// The transmitted orders of an entity type (or of every entity type `login` may provision).
pub fn list(
    store: &Store,
    login: &str,
    entity_type: Option<&str>,
    paging: Paging,
) -> Result<Vec<WorkItem>, ActionError> {
    work_list(store, login, entity_type, Action::PerformManualProvisioning, ProvisioningState::Transmitted, paging)
}

/// How many orders transmitted for manual provisioning `login` may act on, per entity type.
pub fn totals(store: &Store, login: &str) -> Result<BTreeMap<String, u64>, ActionError> {
    work_totals(store, login, Action::PerformManualProvisioning, ProvisioningState::Transmitted)
}

/// Confirms that the orders were carried out in the managed system.
pub fn confirm(
    store: &mut Store,
    login: &str,
    orders: &[i64],
    comment: Option<&str>,
) -> Result<Vec<Order>, ActionError> {
    let comment = comment.map(str::trim).filter(|c| !c.is_empty());
    if let Some(comment) = comment {
        limits::check("the comment", comment, limits::COMMENT)?;
    }
    let reason = comment.map_or_else(|| format!("done by {login}"), String::from);
    act(store, manual(login, orders, Event::Confirm, reason))
}

/// Reports that the orders could not be carried out, with what went wrong.
pub fn report_error(store: &mut Store, login: &str, orders: &[i64], message: &str) -> Result<Vec<Order>, ActionError> {
    let message = message.trim();
    if message.is_empty() {
        return Err(ActionError::Missing("an error report needs a message saying what went wrong"));
    }
    limits::check("the message", message, limits::COMMENT)?;
    act(store, manual(login, orders, Event::ReportError, message.to_string()))
}

fn manual<'a>(login: &'a str, orders: &'a [i64], event: Event, reason: String) -> Act<'a> {
    Act {
        login,
        orders,
        action: Action::PerformManualProvisioning,
        bulk: Action::BulkPerformManualProvisioning,
        not_own: false,
        event,
        reason,
    }
}
