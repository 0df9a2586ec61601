//! Notifications end to end: routed by the bundled permission-router, e-mailed through a real
//! SMTP server and POSTed to a webhook receiver started by the test; delivery that survives a
//! relay that is down (and a host restart) without losing or doubling a message.

use hmac::{Hmac, Mac};
use provision::notify;
use provision_tests::servers::{SmtpServer, WebhookReceiver, free_port};
use provision_tests::{Deployment, complete};
use sha2::Sha256;

const SECRET: &str = "webhook-test-secret";

/// The quickstart deployment with e-mail to `smtp_port` and a webhook to `hook_port`.
fn deployment(smtp_port: u16, hook_port: u16, extra: &str) -> Deployment {
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&format!(
        "{config}\n[notifications]\nretry_initial = \"0s\"\nmax_attempts = 5\n{extra}\n\n\
         [notifications.smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\nfrom = \"Provisioning <provision@example.com>\"\ntimeout = \"5s\"\n\n\
         [notifications.webhooks.ops]\nurl = \"http://127.0.0.1:{hook_port}/hooks/provision\"\nsecret = \"{SECRET}\"\n"
    ));
    deployment
}

fn to_line(message: &str) -> String {
    message.lines().find(|l| l.starts_with("To:")).unwrap_or_default().to_string()
}

#[test]
fn notifications_reach_exact_holders_by_email_and_signed_webhook() {
    let smtp = SmtpServer::start(free_port());
    let hooks = WebhookReceiver::start();
    let deployment = deployment(smtp.port, hooks.port, "");
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.notifications.notifications, 2, "{report:?}");
    assert_eq!(
        report.notifications.delivered,
        4,
        "two notifications, by e-mail and webhook: {:#?}",
        host.store.notifications(None, None)
    );

    let mut messages = smtp.messages();
    messages.sort_by_key(|m| to_line(m));
    assert_eq!(messages.len(), 2, "{messages:#?}");
    // The manual badges go to the help desk only: root holds a parent path, which allows the
    // action but does not receive the notification.
    let manual = messages.iter().find(|m| m.contains("to provision manually")).expect("the manual notification");
    assert!(to_line(manual).contains("hank@example.com"), "{manual}");
    assert!(!manual.contains("rita@example.com"));
    // The SMTP envelope (aiosmtpd records it as X-RcptTo) says the same as the header.
    assert!(manual.contains("X-RcptTo: hank@example.com\n"), "{manual}");
    assert!(
        manual.contains("create Badge_Access for bob") && manual.contains("create Badge_Access for carol"),
        "{manual}"
    );
    let review = messages.iter().find(|m| m.contains("awaiting your review")).expect("the review notification");
    // Alice is a reviewer too, but the only order waiting is her own: she is not asked.
    assert!(to_line(review).contains("rita@example.com") && !review.contains("alice@example.com"), "{review}");
    assert!(review.contains("X-RcptTo: rita@example.com\n"), "{review}");
    assert!(review.contains("Finance_Group_Membership"), "{review}");
    assert!(review.contains("From: Provisioning <provision@example.com>"), "{review}");

    let received = hooks.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.url, "/hooks/provision");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&request.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(request.header("x-provision-signature"), Some(expected.as_str()), "bad HMAC");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["entity_type"], "Directory_User");
        assert!(request.header("x-provision-delivery").is_some());
    }
    let kinds: Vec<String> = received
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"manual-orders-transmitted".into()) && kinds.contains(&"orders-awaiting-approval".into()));

    for n in host.store.notifications(None, None).unwrap() {
        assert!(n.deliveries.iter().all(|d| d.status == "sent" && d.attempts == 1), "{n:?}");
    }
    // Nothing is sent twice by later passes.
    let again = notify::route_and_deliver(&mut host).unwrap();
    assert_eq!((again.routed, again.delivered), (0, 0));
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(hooks.received().len(), 2);
}

#[test]
fn a_relay_that_is_down_delays_mail_but_loses_and_doubles_nothing() {
    let port = free_port();
    let hooks = WebhookReceiver::start();
    hooks.answer(503);
    let deployment = deployment(port, hooks.port, "");
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert_eq!(report.notifications.notifications, 2);
    assert_eq!((report.notifications.delivered, report.notifications.retrying), (0, 4));

    // Another pass while everything is still down, then a restart of the host.
    notify::route_and_deliver(&mut host).unwrap();
    drop(host);
    let mut host = deployment.host();
    let pending = host.store.notifications(Some("pending"), None).unwrap();
    assert_eq!(pending.len(), 2, "accepted notifications must survive a restart");
    for n in &pending {
        for d in &n.deliveries {
            assert_eq!(d.attempts, 2, "{d:?}");
            assert!(d.last_error.as_deref().is_some_and(|e| !e.is_empty()), "{d:?}");
        }
    }

    // The relay and the receiver come back.
    let smtp = SmtpServer::start(port);
    hooks.answer(200);
    let report = notify::route_and_deliver(&mut host).unwrap();
    assert_eq!(report.delivered, 4, "{report:?}");
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(hooks.received().iter().filter(|r| !r.body.is_empty()).count(), 2 + 4, "2 accepted + 4 refused");
    let again = notify::route_and_deliver(&mut host).unwrap();
    assert_eq!(again.delivered, 0);
    assert_eq!(smtp.messages().len(), 2, "a message was sent twice");
    assert!(host.store.notifications(Some("pending"), None).unwrap().is_empty());
}

#[test]
fn a_delivery_given_up_can_be_retried_and_notifications_can_be_switched_off() {
    let port = free_port();
    let hooks = WebhookReceiver::start();
    let deployment = deployment(port, hooks.port, "");
    let config =
        std::fs::read_to_string(deployment.config_path()).unwrap().replace("max_attempts = 5", "max_attempts = 1");
    deployment.set_config(&config);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert_eq!(report.notifications.gave_up, 2, "both e-mails fail at once with no relay: {report:?}");
    assert!(report.problems.iter().any(|p| p.contains("gave up after 1 attempts")), "{:?}", report.problems);
    let failed = host.store.notifications(Some("failed"), None).unwrap();
    let ids: Vec<i64> =
        failed.iter().flat_map(|n| &n.deliveries).filter(|d| d.status == "failed").map(|d| d.id).collect();
    assert_eq!(ids.len(), 2);

    let smtp = SmtpServer::start(port);
    assert_eq!(host.store.retry_deliveries(&ids).unwrap(), 2);
    assert_eq!(notify::route_and_deliver(&mut host).unwrap().delivered, 2);
    assert_eq!(smtp.messages().len(), 2);

    // Switched off for the entity type: intents are routed to nobody.
    let off = std::fs::read_to_string(deployment.config_path())
        .unwrap()
        .replace("display_name = \"Directory user\"", "display_name = \"Directory user\"\nnotifications = false");
    deployment.set_config(&off);
    drop(host);
    let mut host = deployment.host();
    let before = host.store.notifications(None, None).unwrap().len();
    let results = host
        .store
        .apply(
            &[provision::store::Transition::new(1, provision::machine::Event::ReportError, "badge printer jammed")],
            "user:hank",
        )
        .unwrap();
    assert!(results[0].is_ok());
    let report = notify::route_and_deliver(&mut host).unwrap();
    assert_eq!((report.routed, report.notifications), (1, 0));
    assert_eq!(host.store.notifications(None, None).unwrap().len(), before);
}

#[test]
fn a_webhook_secret_missing_at_delivery_fails_that_delivery_and_keeps_it() {
    // Unique to this test: no other test reads or writes it.
    const VAR: &str = "PROVISION_TEST_HOOKSECRET";
    let hooks = WebhookReceiver::start();
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&format!(
        "{config}\n[notifications]\nretry_initial = \"0s\"\nmax_attempts = 5\n\n\
         [notifications.webhooks.chat]\nurl = \"http://127.0.0.1:{}/hooks/provision\"\nsecret = {{ env = \"{VAR}\" }}\n",
        hooks.port
    ));
    // SAFETY: no other test touches this variable (see above).
    unsafe { std::env::remove_var(VAR) };
    // Opening the host (what every command does) does not need the secret.
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert_eq!((report.notifications.notifications, report.notifications.delivered), (2, 0), "{report:?}");
    assert_eq!(report.notifications.retrying, 2);
    assert!(
        report.problems.iter().any(|p| p.contains("webhook:chat")
            && p.contains(&format!("environment variable {VAR} is not set"))
            && p.contains("kept for retry")),
        "{:?}",
        report.problems
    );
    assert!(hooks.received().is_empty(), "sent unsigned");
    let pending = host.store.notifications(Some("pending"), None).unwrap();
    assert_eq!(pending.len(), 2);
    for d in pending.iter().flat_map(|n| &n.deliveries) {
        assert_eq!((d.status.as_str(), d.attempts), ("pending", 1), "{d:?}");
        assert!(d.last_error.as_deref().is_some_and(|e| e.contains(VAR)), "{d:?}");
    }

    // Once it is set, the kept deliveries go out, signed with it.
    unsafe { std::env::set_var(VAR, SECRET) };
    let again = notify::route_and_deliver(&mut host).unwrap();
    assert_eq!(again.delivered, 2, "{again:?}");
    for request in hooks.received() {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&request.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(request.header("x-provision-signature"), Some(expected.as_str()), "bad HMAC");
    }
}

/// Hosts that do not share a process (nor its lock) route and deliver the same queue at once:
/// each intent is routed into one notification and each delivery sent once, whoever wins.
#[test]
fn passes_of_several_hosts_at_once_tell_each_person_once() {
    let smtp = SmtpServer::start(free_port());
    let hooks = WebhookReceiver::start();
    let deployment = deployment(smtp.port, hooks.port, "");
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    // Compute and fulfil alone end without a notification pass: the intents wait, queued.
    let progress = indicatif::ProgressBar::hidden();
    provision::jobs::compute(&mut host, &progress).unwrap();
    provision::jobs::fulfil(&mut host, &progress).unwrap();
    assert!(smtp.messages().is_empty() && hooks.received().is_empty());
    drop(host);

    let hosts: Vec<_> = (0..4).map(|_| deployment.host()).collect();
    let reports: Vec<notify::NotifyReport> = std::thread::scope(|scope| {
        let passes: Vec<_> = hosts
            .into_iter()
            .map(|mut host| {
                scope.spawn(move || {
                    let mut total = notify::NotifyReport::default();
                    for _ in 0..3 {
                        let report = notify::route_and_deliver(&mut host).unwrap();
                        total.notifications += report.notifications;
                        total.delivered += report.delivered;
                    }
                    total
                })
            })
            .collect();
        passes.into_iter().map(|pass| pass.join().unwrap()).collect()
    });
    let host = deployment.host();
    let notifications = host.store.notifications(None, None).unwrap();
    assert_eq!(notifications.len(), 2, "one notification per kind: {notifications:#?}");
    assert_eq!(reports.iter().map(|r| r.notifications).sum::<u64>(), 2, "{reports:?}");
    assert_eq!(reports.iter().map(|r| r.delivered).sum::<u64>(), 4, "{reports:?}");
    assert_eq!(smtp.messages().len(), 2, "each e-mail once");
    assert_eq!(hooks.received().len(), 2, "each webhook once");
    for n in notifications {
        assert!(n.deliveries.iter().all(|d| d.status == "sent" && d.attempts == 1), "{n:?}");
    }
}
