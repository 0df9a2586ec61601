//! Events out: every order state change published to webhook subscribers as a CloudEvent,
//! signed, in order, filtered per subscriber; nothing lost while a receiver is down, and a
//! repeat only ever with the id of the first.

use std::collections::BTreeSet;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use provision::model::ManualClock;
use provision_tests::servers::{Received, WebhookReceiver, free_port};
use provision_tests::{Deployment, complete};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "s3cret";

fn with_subscribers(port: u16) -> Deployment {
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&format!(
        "{config}\n[events]\nretry_initial = \"1s\"\nretry_max = \"4s\"\n\n\
         [events.subscribers.siem]\nurl = \"http://127.0.0.1:{port}/all\"\nsecret = \"{SECRET}\"\n\n\
         [events.subscribers.finance]\nurl = \"http://127.0.0.1:{port}/finance\"\nsecret = \"{SECRET}\"\n\
         resource_types = [\"Finance_Group_Membership\"]\nstates = [\"AwaitingApproval\", \"verified\"]\n"
    ));
    deployment
}

fn signed(request: &Received) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&request.body);
    request.header("x-provision-signature") == Some(&format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

fn events(receiver: &WebhookReceiver, path: &str) -> Vec<Value> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.url == path)
        .map(|r| {
            assert!(signed(&r), "a valid signature: {:?}", r.headers);
            assert_eq!(r.header("content-type"), Some("application/cloudevents+json; charset=utf-8"));
            serde_json::from_slice(&r.body).unwrap()
        })
        .collect()
}

/// The history of every order, as (history id, resource type, to state) in history order.
fn history(host: &provision::host::Host) -> Vec<(i64, String, String)> {
    host.store
        .audit_page(i64::MIN, i64::MAX, 0, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.resource_type, r.to.name().to_string()))
        .collect()
}

#[test]
fn every_state_change_reaches_its_subscribers_signed_in_order_after_an_outage() {
    let port = free_port();
    let deployment = with_subscribers(port);
    let mut host = deployment.host();
    let clock = Arc::new(ManualClock::at(provision::model::now_ms()));
    host.store.set_clock(clock.clone());
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);
    let config = host.config.events.clone();
    let installation = host.store.installation().to_string();

    // Nobody listens: nothing is delivered, both subscribers back off.
    let report = provision::events::deliver(&mut host.store, &config, "test").unwrap();
    assert_eq!(report.delivered, 0);
    assert_eq!(report.failed.len(), 2, "{report:?}");
    let again = provision::events::deliver(&mut host.store, &config, "test").unwrap();
    assert_eq!(again.skipped.len(), 2, "not due before the backoff: {again:?}");

    // It comes back, failing at first: the first event is tried again, under its id.
    let receiver = WebhookReceiver::start_on(port);
    receiver.answer(503);
    clock.advance(1_000);
    let report = provision::events::deliver(&mut host.store, &config, "test").unwrap();
    assert_eq!((report.delivered, report.failed.len()), (0, 2), "{report:?}");
    let state = host.store.subscribers().unwrap();
    assert!(
        state.iter().all(|s| s.failures == 2 && s.last_error.as_deref().unwrap_or_default().contains("503")),
        "{state:?}"
    );
    receiver.answer(200);
    clock.advance(2_000);
    let report = provision::events::deliver(&mut host.store, &config, "test").unwrap();
    assert!(report.failed.is_empty(), "{report:?}");

    let all = events(&receiver, "/all");
    let expected = history(&host);
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), expected.len(), "one event per state change: {ids:?}");
    assert_eq!(ids.len(), expected.len() + 1, "the one refused with 503 came again");
    assert_eq!(ids[0], ids[1], "the repeat has the first one's id");
    let delivered: Vec<&str> = ids[1..].to_vec();
    let wanted: Vec<String> = expected.iter().map(|(id, _, _)| format!("{installation}-{id}")).collect();
    assert_eq!(delivered, wanted, "in history order, nothing lost");
    for (event, (_, resource_type, state)) in all[1..].iter().zip(&expected) {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "provision.order.state-changed");
        assert_eq!(event["source"], format!("urn:provision:{installation}"));
        assert_eq!(event["subject"], format!("orders/{}", event["data"]["order"]));
        assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
        assert_eq!(
            (event["data"]["resource_type"].as_str(), event["data"]["to"]["name"].as_str()),
            (Some(resource_type.as_str()), Some(state.as_str()))
        );
    }
    // The finance subscriber had only its resource type's changes into its states.
    let finance = events(&receiver, "/finance");
    let finance_ids: BTreeSet<&str> = finance.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let wanted: BTreeSet<String> = expected
        .iter()
        .filter(|(_, rt, state)| {
            rt == "Finance_Group_Membership" && ["AwaitingApproval", "Verified"].contains(&state.as_str())
        })
        .map(|(id, _, _)| format!("{installation}-{id}"))
        .collect();
    assert_eq!(finance_ids, wanted.iter().map(String::as_str).collect(), "{finance:?}");
    assert_eq!(wanted.len(), 1, "the sensitive membership awaits approval");

    // Later changes follow: the membership approved, carried out and verified.
    let order = finance[0]["data"]["order"].as_i64().unwrap();
    provision::review::decide(&mut host.store, "rita", &[order], provision::review::Decision::Approve, None).unwrap();
    complete(&mut host);
    provision::events::deliver(&mut host.store, &config, "test").unwrap();
    let finance = events(&receiver, "/finance");
    assert_eq!(finance.last().unwrap()["data"]["to"]["name"], "Verified", "{finance:?}");
    assert_eq!(events(&receiver, "/all").len(), history(&host).len() + 1);
    let state = host.store.subscribers().unwrap();
    assert!(state.iter().all(|s| s.failures == 0 && s.behind == 0), "{state:?}");
}

#[test]
fn two_processes_delivering_at_once_send_each_event_once() {
    let receiver = WebhookReceiver::start();
    let deployment = with_subscribers(receiver.port);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);
    let expected = history(&host).len();
    let config = host.config.events.clone();
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let mut other = host.sibling().unwrap();
            let config = config.clone();
            scope.spawn(move || {
                for _ in 0..5 {
                    provision::events::deliver(&mut other.store, &config, &format!("worker-{worker}")).unwrap();
                }
            });
        }
    });
    let all = events(&receiver, "/all");
    let unique: BTreeSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((all.len(), unique.len()), (expected, expected), "each exactly once");
}

/// The export reads page after page (2 000 rows each): across pages every row comes once, in
/// order, in both formats.
#[test]
fn the_export_gives_every_row_once_across_pages() {
    let deployment = Deployment::quickstart();
    let mut data = String::new();
    for i in 0..1500 {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{i}\"\n\n\
             [[assignments]]\nidentity = \"u{i}\"\nresource_type = \"SaaS_Account\"\nattributes = {{ userName = \"u{i}\" }}\n\n"
        ));
    }
    deployment.write("many.toml", data);
    let mut host = deployment.host();
    deployment.import(&mut host, "many.toml", false);
    complete(&mut host);
    let expected: Vec<i64> = history(&host).into_iter().map(|(id, _, _)| id).collect();
    assert!(expected.len() > 4000, "more than two pages: {}", expected.len());

    let mut lines = Vec::new();
    let rows = provision::app::history::export(
        &host.store,
        0,
        i64::MAX,
        provision::app::history::Format::Jsonl,
        &mut lines,
        |_| {},
    )
    .unwrap();
    let ids: Vec<i64> = String::from_utf8(lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!((rows as usize, ids), (expected.len(), expected.clone()));

    let mut csv = Vec::new();
    provision::app::history::export(&host.store, 0, i64::MAX, provision::app::history::Format::Csv, &mut csv, |_| {})
        .unwrap();
    let text = String::from_utf8(csv).unwrap();
    let ids: Vec<i64> = text.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, expected);
}
