//! Provisioning review: orders a review rule held (AwaitingApproval) wait for a person with
//! `/Custom/ProvisioningPolicy/ReviewProvisioning/{EntityType}` to approve (→ Pending), decline
//! (→ None, closed; not generated again until the desired state changes) or postpone (stays,
//! with the comment in history). Several at once needs `BulkReviewProvisioning` too. Nobody
//! reviews an order whose owner is themselves.

use crate::machine::Event;
use crate::model::{Order, ProvisioningState};
use std::collections::BTreeMap;

use crate::limits;
use crate::operators::{Act, ActionError, Paging, WorkItem, act, work_list, work_totals};
use crate::permissions::Action;
use crate::store::Store;

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Release the orders to fulfilment.
    Approve,
    /// Refuse them.
    Decline,
    /// Decide later; a comment says why.
    Postpone,
}

/// The orders awaiting a review that `login` may review, of one entity type or of every entity
/// type they hold the permission for.
pub fn list(
    store: &Store,
    login: &str,
    entity_type: Option<&str>,
    paging: Paging,
) -> Result<Vec<WorkItem>, ActionError> {
    work_list(store, login, entity_type, Action::ReviewProvisioning, ProvisioningState::AwaitingApproval, paging)
}

/// How many orders awaiting a review `login` may act on, per entity type.
pub fn totals(store: &Store, login: &str) -> Result<BTreeMap<String, u64>, ActionError> {
    work_totals(store, login, Action::ReviewProvisioning, ProvisioningState::AwaitingApproval)
}

/// Records a decision on orders, all or nothing. A postpone needs a comment.
pub fn decide(
    store: &mut Store,
    login: &str,
    orders: &[i64],
    decision: Decision,
    comment: Option<&str>,
) -> Result<Vec<Order>, ActionError> {
    let comment = comment.map(str::trim).filter(|c| !c.is_empty());
    if let Some(comment) = comment {
        limits::check("the comment", comment, limits::COMMENT)?;
    }
    let (event, reason) = match decision {
        Decision::Approve => (Event::Approve, comment.map_or_else(|| format!("approved by {login}"), String::from)),
        Decision::Decline => (Event::Decline, comment.map_or_else(|| format!("declined by {login}"), String::from)),
        Decision::Postpone => {
            (Event::Postpone, comment.ok_or(ActionError::Missing("a postpone needs a comment saying why"))?.to_string())
        }
    };
    act(
        store,
        Act {
            login,
            orders,
            action: Action::ReviewProvisioning,
            bulk: Action::BulkReviewProvisioning,
            not_own: true,
            event,
            reason,
        },
    )
}
