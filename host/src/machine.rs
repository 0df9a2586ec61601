//! The provisioning state machine: which event may move an order from which state to which.
//!
//! **Architecture invariant**: this module is the only place that decides whether a state
//! change is allowed. The store calls [`apply`] inside the transaction that writes the change
//! and its history row; nothing else writes a state.
//!
//! The table is the one of the product's spec (§2), as data, plus two rows the spec implies:
//! a review rule's *hard block* closes a new order (state 0, closed as blocked), the same way a
//! reviewer's decline does; and an operator *cancelling* a run held by a threshold (§3) closes
//! its orders (state 0, closed as cancelled) before they are fulfilled.

use std::fmt;

use crate::model::NotificationKind;
use crate::model::ProvisioningState::{
    self, AwaitingApproval, Error, Errored, Executed, Inactive, Pending, Transmitted, Verified,
};

/// Something that happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Compute finds the managed system already matches the desired state.
    AlreadyMatches,
    /// Compute finds the assignment's validity window already over.
    WindowAlreadyOver,
    /// The review rule says no review is needed.
    NoReviewNeeded,
    /// The review rule says a review is needed.
    ReviewNeeded,
    /// The review rule blocks the order outright.
    RuleBlocks,
    /// The review rule trapped, timed out or answered badly.
    RuleFailed,
    /// A reviewer approves.
    Approve,
    /// A reviewer declines.
    Decline,
    /// A reviewer postpones, with a note.
    Postpone,
    /// The connector returned OK.
    ConnectorOk,
    /// The connector returned an error.
    ConnectorError,
    /// The order was handed to a person or external desk (manual connection, or the
    /// connector said so).
    HandOver,
    /// A person confirms they carried the order out.
    Confirm,
    /// A person reports an error.
    ReportError,
    /// A transmitted order was left longer than its connection's transmitted validity.
    TransmittedExpired,
    /// A transient error's retry time was reached and the retry policy allows another attempt.
    RetryDue,
    /// An operator retries an errored order.
    Retry,
    /// Synchronisation sees the order's change in the managed system.
    Seen,
    /// The order's validity window ended before it was fulfilled.
    WindowEnded,
    /// The desired state changed again: the order is closed and a new one replaces it.
    Superseded,
    /// An operator cancels a run held by a threshold: its orders are closed unfulfilled.
    Cancel,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 21] = [
        Event::AlreadyMatches,
        Event::WindowAlreadyOver,
        Event::NoReviewNeeded,
        Event::ReviewNeeded,
        Event::RuleBlocks,
        Event::RuleFailed,
        Event::Approve,
        Event::Decline,
        Event::Postpone,
        Event::ConnectorOk,
        Event::ConnectorError,
        Event::HandOver,
        Event::Confirm,
        Event::ReportError,
        Event::TransmittedExpired,
        Event::RetryDue,
        Event::Retry,
        Event::Seen,
        Event::WindowEnded,
        Event::Superseded,
        Event::Cancel,
    ];

    /// The event's name as stored in history, e.g. `review-needed`.
    pub fn name(self) -> &'static str {
        match self {
            Event::AlreadyMatches => "already-matches",
            Event::WindowAlreadyOver => "window-already-over",
            Event::NoReviewNeeded => "no-review-needed",
            Event::ReviewNeeded => "review-needed",
            Event::RuleBlocks => "rule-blocks",
            Event::RuleFailed => "rule-failed",
            Event::Approve => "approve",
            Event::Decline => "decline",
            Event::Postpone => "postpone",
            Event::ConnectorOk => "connector-ok",
            Event::ConnectorError => "connector-error",
            Event::HandOver => "hand-over",
            Event::Confirm => "confirm",
            Event::ReportError => "report-error",
            Event::TransmittedExpired => "transmitted-expired",
            Event::RetryDue => "retry-due",
            Event::Retry => "retry",
            Event::Seen => "seen",
            Event::WindowEnded => "window-ended",
            Event::Superseded => "superseded",
            Event::Cancel => "cancel",
        }
    }
}

impl Event {
    /// The event of a stored name.
    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an event may start from: a new order (not stored yet) or a stored state.
pub type Origin = Option<ProvisioningState>;

/// The origin of an order that does not exist yet.
pub const NEW: Origin = None;

/// The states an order is "open" in; a desired-state change supersedes it from any of them.
const OPEN: &[Origin] =
    &[Some(Pending), Some(Transmitted), Some(Errored), Some(AwaitingApproval), Some(Error), Some(Executed)];

/// The transition table: (event, states it may start from, resulting state).
/// `None` in the origins stands for a new order.
pub const TABLE: &[(Event, &[Origin], ProvisioningState)] = &[
    (Event::AlreadyMatches, &[NEW], Verified),
    (Event::WindowAlreadyOver, &[NEW], Inactive),
    (Event::NoReviewNeeded, &[NEW, Some(Error)], Pending),
    (Event::ReviewNeeded, &[NEW, Some(Error)], AwaitingApproval),
    (Event::RuleFailed, &[NEW, Some(Error)], Error),
    (Event::RuleBlocks, &[NEW, Some(Error)], ProvisioningState::None),
    (Event::Approve, &[Some(AwaitingApproval)], Pending),
    (Event::Decline, &[Some(AwaitingApproval)], ProvisioningState::None),
    (Event::Postpone, &[Some(AwaitingApproval)], AwaitingApproval),
    (Event::ConnectorOk, &[Some(Pending)], Executed),
    (Event::ConnectorError, &[Some(Pending)], Errored),
    (Event::HandOver, &[Some(Pending)], Transmitted),
    (Event::Confirm, &[Some(Transmitted)], Executed),
    (Event::ReportError, &[Some(Transmitted)], Errored),
    (Event::TransmittedExpired, &[Some(Transmitted)], Errored),
    (Event::RetryDue, &[Some(Errored)], Pending),
    (Event::Retry, &[Some(Errored)], Pending),
    (Event::Seen, &[Some(Executed)], Verified),
    (Event::WindowEnded, &[Some(Pending), Some(AwaitingApproval), Some(Errored)], Inactive),
    (Event::Superseded, OPEN, ProvisioningState::None),
    (Event::Cancel, &[Some(Pending), Some(AwaitingApproval), Some(Error)], ProvisioningState::None),
];

/// A state change the table does not allow. The order is left untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    /// The order's state (none: a new order).
    pub from: Origin,
    /// The event that was refused.
    pub event: Event,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed: Vec<String> = TABLE
            .iter()
            .filter(|(event, _, _)| *event == self.event)
            .flat_map(|(_, origins, _)| origins.iter())
            .map(|origin| origin.map_or_else(|| "a new order".to_string(), |s| s.to_string()))
            .collect();
        match self.from {
            Some(state) => write!(f, "event `{}` is not allowed for an order in state {state}", self.event)?,
            None => write!(f, "event `{}` cannot create an order", self.event)?,
        }
        write!(f, " (allowed from: {})", allowed.join(", "))
    }
}

/// Whom a state change concerns: entering Transmitted, AwaitingApproval or Errored means people
/// have something to do. The store queues the notification in the transaction of the change.
pub fn notification(from: Origin, to: ProvisioningState) -> Option<NotificationKind> {
    if from == Some(to) {
        return None;
    }
    match to {
        Transmitted => Some(NotificationKind::ManualOrdersTransmitted),
        AwaitingApproval => Some(NotificationKind::OrdersAwaitingApproval),
        Errored => Some(NotificationKind::OrdersErrored),
        _ => None,
    }
}

/// Applies `event` to an order in state `from` (`None`: a new order): the new state, or why not.
pub fn apply(from: Origin, event: Event) -> Result<ProvisioningState, Refused> {
    TABLE
        .iter()
        .find(|(e, origins, _)| *e == event && origins.contains(&from))
        .map(|(_, _, to)| *to)
        .ok_or(Refused { from, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's table (§2), transcribed independently of [`TABLE`] as text:
    /// `from event to`, with `new` for a new order and `open` for every open state.
    const SPEC: &str = "
        new already-matches 4
        new window-already-over 6
        new no-review-needed 1
        7 no-review-needed 1
        new review-needed 5
        7 review-needed 5
        new rule-failed 7
        7 rule-failed 7
        new rule-blocks 0
        7 rule-blocks 0
        5 approve 1
        5 decline 0
        5 postpone 5
        1 connector-ok 8
        1 connector-error 3
        1 hand-over 2
        2 confirm 8
        2 report-error 3
        2 transmitted-expired 3
        3 retry-due 1
        3 retry 1
        8 seen 4
        1 window-ended 6
        5 window-ended 6
        3 window-ended 6
        open superseded 0
        1 cancel 0
        5 cancel 0
        7 cancel 0
    ";

    fn expected(from: Origin, event: Event) -> Option<ProvisioningState> {
        SPEC.lines().map(str::split_whitespace).find_map(|mut words| {
            let (origin, name, to) = (words.next()?, words.next()?, words.next()?);
            let origin_matches = match origin {
                "new" => from.is_none(),
                "open" => from.is_some_and(ProvisioningState::is_open),
                n => from.map(ProvisioningState::number) == n.parse().ok(),
            };
            (origin_matches && name == event.name()).then(|| ProvisioningState::from_number(to.parse().ok()?))?
        })
    }

    #[test]
    fn every_state_and_event_pair_follows_the_spec_table() {
        let origins = std::iter::once(None).chain(ProvisioningState::ALL.into_iter().map(Some));
        let mut allowed = 0;
        for from in origins {
            for event in Event::ALL {
                let got = apply(from, event);
                match expected(from, event) {
                    Some(to) => {
                        assert_eq!(got, Ok(to), "{from:?} --{event}--> should be {to}");
                        allowed += 1;
                    }
                    None => assert_eq!(got, Err(Refused { from, event }), "{from:?} --{event}--> should be refused"),
                }
            }
        }
        // 28 explicit rows plus `superseded` from each of the six open states.
        assert_eq!(allowed, 34);
    }

    #[test]
    fn open_states_are_the_ones_with_something_left_to_do() {
        let open: Vec<u8> = ProvisioningState::ALL.into_iter().filter(|s| s.is_open()).map(|s| s.number()).collect();
        assert_eq!(open, [1, 2, 3, 5, 7, 8]);
    }

    #[test]
    fn refusal_names_state_event_and_what_is_allowed() {
        let err = apply(Some(Verified), Event::Approve).unwrap_err().to_string();
        assert_eq!(
            err,
            "event `approve` is not allowed for an order in state 4 Verified (allowed from: 5 AwaitingApproval)"
        );
        let err = apply(None, Event::Seen).unwrap_err().to_string();
        assert!(err.starts_with("event `seen` cannot create an order"), "{err}");
    }

    #[test]
    fn people_are_told_when_an_order_waits_for_them() {
        assert_eq!(notification(NEW, AwaitingApproval), Some(NotificationKind::OrdersAwaitingApproval));
        assert_eq!(notification(Some(Error), AwaitingApproval), Some(NotificationKind::OrdersAwaitingApproval));
        assert_eq!(notification(Some(AwaitingApproval), AwaitingApproval), None, "a postpone is not news");
        assert_eq!(notification(Some(Pending), Transmitted), Some(NotificationKind::ManualOrdersTransmitted));
        assert_eq!(notification(Some(Transmitted), Errored), Some(NotificationKind::OrdersErrored));
        assert_eq!(notification(Some(Pending), Executed), None);
    }

    #[test]
    fn every_event_is_in_the_table_and_has_a_unique_name() {
        let mut names: Vec<&str> = Event::ALL.iter().map(|e| e.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Event::ALL.len());
        for event in Event::ALL {
            assert!(TABLE.iter().any(|(e, _, _)| *e == event), "{event} has no row");
        }
    }
}
