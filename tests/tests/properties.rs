//! Property test: random sequences of events, applied one by one or in batches (all or nothing,
//! or each on its own) through the store, never produce a transition the table does not list,
//! a gap in an order's history, or an order in two states; a refused event changes nothing.

use std::path::Path;

use proptest::prelude::*;
use provision::config::{Config, Source};
use provision::machine::{self, Event};
use provision::model::{Change, ProvisioningState, ResourceContent};
use provision::store::{Identity, NewOrder, Store, Transition};

const ORDERS: usize = 6;

const CONFIG: &str = r#"
[entity_types.Directory_User]
notifications = false

[connections.desk]
kind = "manual-ticket"

[resource_types.Ticket]
entity_type = "Directory_User"
connection = "desk"
"#;

/// A store with one identity and `ORDERS` orders created by the given events (those the
/// machine refuses for a new order are not created).
fn store(creations: &[Event]) -> (Store, Vec<(i64, Option<ProvisioningState>)>) {
    let mut store = Store::open_in_memory().unwrap();
    let config = Config::from_source(Source::from_text(Path::new("/p/provision.toml"), CONFIG)).unwrap();
    store.sync_catalog(&config).unwrap();
    store
        .upsert_identities(&[Identity {
            entity_type: "Directory_User".into(),
            key: "ann".into(),
            display_name: "Ann".into(),
            attributes: Default::default(),
        }])
        .unwrap();
    let content =
        ResourceContent { attributes: [("title".into(), "t".into())].into(), entitlements: Default::default() };
    let mut orders = Vec::new();
    for event in creations {
        let id = store.allocate_order_ids(1).unwrap();
        let order = NewOrder {
            id,
            identity_id: 1,
            resource_type: "Ticket".into(),
            resource_id: None,
            change: Change::between(None, Some(&content)).unwrap(),
            valid_until: None,
            event: *event,
            held_run: None,
            reason: "created".into(),
            actor: "test".into(),
        };
        let created = store.create_orders(std::slice::from_ref(&order), None);
        assert_eq!(created.is_ok(), machine::apply(None, *event).is_ok(), "creation by {event}");
        orders.push((id, machine::apply(None, *event).ok()));
    }
    (store, orders)
}

/// Checks the invariants for every order against the model.
fn check(store: &Store, model: &[(i64, Option<ProvisioningState>)]) -> Result<(), TestCaseError> {
    for (id, expected) in model {
        let Some(expected) = expected else {
            prop_assert!(store.order(*id).is_err(), "order {} exists though its creation was refused", id);
            continue;
        };
        let order = store.order(*id).unwrap();
        prop_assert_eq!(order.state, *expected, "order {} is not in the state the machine says", id);
        let history = store.history(*id).unwrap();
        prop_assert!(!history.is_empty());
        prop_assert_eq!(history[0].from, None, "order {}'s history does not start with its creation", id);
        let mut previous: Option<ProvisioningState> = None;
        for (n, row) in history.iter().enumerate() {
            prop_assert_eq!(row.from, previous, "gap in order {}'s history at row {}", id, n);
            let event = Event::from_name(&row.event).expect("a known event");
            prop_assert_eq!(
                machine::apply(row.from, event),
                Ok(row.to),
                "unlisted transition in order {}'s history",
                id
            );
            previous = Some(row.to);
        }
        prop_assert_eq!(previous, Some(order.state), "order {}'s history does not end in its state", id);
    }
    let counted: i64 = store.count_by_state().unwrap().iter().map(|(_, n)| n).sum();
    prop_assert_eq!(
        counted as usize,
        model.iter().filter(|(_, s)| s.is_some()).count(),
        "an order counted in two states"
    );
    Ok(())
}

fn event() -> impl Strategy<Value = Event> {
    (0..Event::ALL.len()).prop_map(|i| Event::ALL[i])
}

/// One step: events for some orders, applied together, all-or-nothing or each on its own.
fn step() -> impl Strategy<Value = (Vec<(usize, Event)>, bool)> {
    (prop::collection::vec((0..ORDERS, event()), 1..4), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_events_keep_every_invariant(
        creations in prop::collection::vec(event(), ORDERS),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let (mut store, mut model) = store(&creations);
        check(&store, &model)?;
        for (events, all_or_nothing) in steps {
            let transitions: Vec<Transition> = events
                .iter()
                .map(|(i, event)| Transition::new(model[*i].0, *event, "random"))
                .collect();
            // What the machine allows, in order (a batch may move one order twice).
            let mut next = model.clone();
            let mut refused = false;
            for (i, event) in &events {
                match next[*i].1.map(|state| machine::apply(Some(state), *event)) {
                    Some(Ok(to)) => next[*i].1 = Some(to),
                    _ => refused = true,
                }
            }
            if all_or_nothing {
                let result = store.apply_all(&transitions, "test").unwrap();
                prop_assert_eq!(result.is_err(), refused);
                if !refused {
                    model = next;
                }
            } else {
                let results = store.apply(&transitions, "test").unwrap();
                for ((i, event), result) in events.iter().zip(results) {
                    let allowed = model[*i].1.map(|state| machine::apply(Some(state), *event));
                    match allowed {
                        Some(Ok(to)) => {
                            prop_assert_eq!(result.ok(), Some(to));
                            model[*i].1 = Some(to);
                        }
                        _ => prop_assert!(result.is_err()),
                    }
                }
            }
            check(&store, &model)?;
        }
    }
}
