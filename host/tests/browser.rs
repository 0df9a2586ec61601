//! The pages in a real headless Chromium (Debian's chromium and chromium-driver, installed by
//! tests/setup.sh), driven over WebDriver: sign in, approve an order, bulk-confirm two manual
//! orders, read an identity's states, run a job. Every page is photographed; with
//! `UPDATE_SCREENSHOTS=1` the pictures replace docs/screenshots/ (the README shows them), otherwise
//! they go to the target directory so a test run leaves the work tree clean.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

mod common;
use common::server::Server;
use common::{run, text};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver() -> (Driver, String) {
    for program in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run tests/setup.sh (it installs chromium and chromium-driver)"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

async fn browser(driver: &str, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,860", format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn sign_in(client: &Client, url: &str, token: &str) {
    client.goto(&format!("{url}/login")).await.unwrap();
    client.find(Locator::Css("#token")).await.unwrap().send_keys(token).await.unwrap();
    client.find(Locator::Css("#sign-in")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("#sign-out")).await.expect("signed in");
}

async fn sign_out(client: &Client) {
    client.find(Locator::Css("#sign-out")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("#token")).await.expect("signed out");
}

async fn message(client: &Client) -> String {
    client.wait().for_element(Locator::Css("#message")).await.expect("a message").text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reviewers_provisioners_and_operators_use_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["demo", "--dir", "demo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.path().join("demo/provision.toml");
    let token = |user: &str| {
        let out = run(dir.path(), &["tokens", "create", "--user", user, "--config", config.to_str().unwrap()]);
        text(&out.stdout).trim().to_string()
    };
    let (rita, hank, root) = (token("rita"), token("hank"), token("root"));
    let server = Server::start(dir.path(), &config);
    let url = server.url.clone();
    let (_driver, driver_url) = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver_url, profile.path()).await;

    client.goto(&format!("{url}/")).await.unwrap();
    client.wait().for_element(Locator::Css("#token")).await.expect("sent to sign in");
    shoot(&client, "sign-in").await;

    // A reviewer approves the sensitive order.
    sign_in(&client, &url, &rita).await;
    assert!(client.find(Locator::LinkText("Manual Provisioning")).await.is_err(), "rita sees a page she may not use");
    client.goto(&format!("{url}/review")).await.unwrap();
    let row = client.find(Locator::Css("#order-3")).await.expect("order 3 awaits review").text().await.unwrap();
    assert!(row.contains("Finance_Group_Membership") && row.contains("sensitive"), "{row}");
    shoot(&client, "review").await;
    client.find(Locator::Css("#approve-3")).await.unwrap().click().await.unwrap();
    let done = message(&client).await;
    assert!(done.contains("order 3 → 1 Pending"), "{done}");
    assert!(client.find(Locator::Css("#order-3")).await.is_err(), "approved, it left the review list");
    sign_out(&client).await;

    // The help desk confirms both badges at once.
    sign_in(&client, &url, &hank).await;
    client.goto(&format!("{url}/manual")).await.unwrap();
    shoot(&client, "manual").await;
    for id in [1, 2] {
        client.find(Locator::Css(&format!("#select-{id}"))).await.unwrap().click().await.unwrap();
    }
    client.find(Locator::Css("#bulk-confirm-Directory_User")).await.unwrap().click().await.unwrap();
    let done = message(&client).await;
    assert!(done.contains("order 1 → 8 Executed") && done.contains("order 2 → 8 Executed"), "{done}");
    sign_out(&client).await;

    // An operator runs the job, then reads alice's states.
    sign_in(&client, &url, &root).await;
    client.goto(&format!("{url}/jobs")).await.unwrap();
    client.find(Locator::Css("#run-job")).await.unwrap().click().await.unwrap();
    let started = message(&client).await;
    assert!(started.contains("Run 2 started"), "the page answers at once: {started}");
    // The run goes on beside the page: reload until the list shows how it ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        client.goto(&format!("{url}/jobs")).await.unwrap();
        let runs = client.find(Locator::Css("#run-2")).await.unwrap().text().await.unwrap();
        if !runs.contains("running") {
            break runs;
        }
        assert!(Instant::now() < deadline, "run 2 still running: {runs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(runs.contains("complete") && runs.contains("succeeded") && runs.contains("executed 1"), "{runs}");
    shoot(&client, "jobs").await;

    client.goto(&format!("{url}/identities/Directory_User/alice")).await.unwrap();
    let states = client.find(Locator::Css("#permissions")).await.unwrap().text().await.unwrap();
    let finance = client.find(Locator::Css("#slot-Finance_Group_Membership")).await.unwrap().text().await.unwrap();
    let account = client.find(Locator::Css("#slot-SaaS_Account")).await.unwrap().text().await.unwrap();
    assert!(finance.contains("4 Verified"), "approved, run, verified: {states}");
    assert!(account.contains("4 Verified"), "{states}");
    shoot(&client, "identity").await;

    client.goto(&format!("{url}/plugins")).await.unwrap();
    let plugins = client.find(Locator::Css("#plugins")).await.unwrap().text().await.unwrap();
    assert!(plugins.contains("files") && plugins.contains("connector") && plugins.contains("healthy"), "{plugins}");
    shoot(&client, "plugins").await;

    client.close().await.unwrap();
    drop(server);
}

/// The text of `css` once it contains `wanted` (the page may change it by itself), or a failure
/// naming what it showed.
async fn until_shows(client: &Client, css: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown.contains(wanted) {
            return shown;
        }
        assert!(Instant::now() < deadline, "{css} never showed `{wanted}`: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The product documentation's verification: pick a user in the directory, request an
/// entitlement, and check its provisioning state at every step on the user's page.
#[tokio::test(flavor = "multi_thread")]
async fn a_requested_entitlement_is_followed_from_the_directory_to_verified() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["demo", "--dir", "demo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.path().join("demo/provision.toml");
    let c = config.to_str().unwrap();
    common::configure(
        dir.path(),
        &config,
        &[
            &["profiles", "add", "Requesters"],
            &["profiles", "allow", "Requesters", "/Custom/ProvisioningPolicy/ManageDesiredState/Directory_User"],
            &["users", "add", "rick", "--name", "Rick Requester", "--profile", "Requesters"],
        ],
    );
    let token = |user: &str| {
        let out = run(dir.path(), &["tokens", "create", "--user", user, "--config", c]);
        text(&out.stdout).trim().to_string()
    };
    let (rick, rita, root) = (token("rick"), token("rita"), token("root"));
    let server = Server::start(dir.path(), &config);
    let url = server.url.clone();
    let (_driver, driver_url) = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver_url, profile.path()).await;

    // The requester finds carol in the Directory; he sees nothing he may not use.
    sign_in(&client, &url, &rick).await;
    assert!(client.find(Locator::LinkText("Jobs")).await.is_err(), "rick may not view jobs");
    client.find(Locator::LinkText("Directory")).await.expect("the Directory link").click().await.unwrap();
    let all = client.wait().for_element(Locator::Css("#directory")).await.unwrap().text().await.unwrap();
    assert!(all.contains("alice") && all.contains("bob") && all.contains("carol"), "{all}");
    client.find(Locator::Css("#q")).await.unwrap().send_keys("Engineering").await.unwrap();
    client.find(Locator::Css("#find")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.current_url().await.unwrap().as_str().contains("q=Engineering") {
        assert!(Instant::now() < deadline, "the search did not load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = client.wait().for_element(Locator::Css("#directory")).await.unwrap().text().await.unwrap();
    assert!(found.contains("carol") && !found.contains("alice"), "found by her department: {found}");
    shoot(&client, "directory").await;
    client.find(Locator::LinkText("carol")).await.unwrap().click().await.unwrap();
    let before = until_shows(&client, "#slot-Finance_Group_Membership", "no order").await;
    assert!(before.contains("nothing"), "{before}");

    // He requests the sensitive finance membership for her.
    let rt = "Finance_Group_Membership";
    client.find(Locator::Css(&format!("#request-{rt} summary"))).await.unwrap().click().await.unwrap();
    client
        .find(Locator::Css(&format!("#attributes-{rt}")))
        .await
        .unwrap()
        .send_keys("group = Finance-Approvers")
        .await
        .unwrap();
    client
        .find(Locator::Css(&format!("#entitlements-{rt}")))
        .await
        .unwrap()
        .send_keys("Finance-Approvers")
        .await
        .unwrap();
    client.execute(&format!("document.getElementById('request-{rt}').scrollIntoView()"), vec![]).await.unwrap();
    shoot(&client, "request-form").await;
    client.find(Locator::Css(&format!("#set-{rt}"))).await.unwrap().click().await.unwrap();
    let recorded = message(&client).await;
    assert!(recorded.contains("is recorded; compute run"), "{recorded}");
    // The page follows the order by itself: the review rule holds it for a reviewer.
    let waiting = until_shows(&client, &format!("#slot-{rt}"), "5 AwaitingApproval").await;
    let order: i64 = waiting
        .split("order ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the order's number: {waiting}"));
    let history = client.find(Locator::Css("#desired-history")).await.unwrap().text().await.unwrap();
    assert!(history.contains("user:rick") && history.contains(&format!("{rt} created")), "{history}");
    shoot(&client, "request").await;
    sign_out(&client).await;

    // A reviewer approves it.
    sign_in(&client, &url, &rita).await;
    client.goto(&format!("{url}/review")).await.unwrap();
    client
        .find(Locator::Css(&format!("#approve-{order}")))
        .await
        .expect("it awaits rita's review")
        .click()
        .await
        .unwrap();
    let approved = message(&client).await;
    assert!(approved.contains(&format!("order {order} → 1 Pending")), "{approved}");
    sign_out(&client).await;

    // The requester watches while an operator's run has the connector carry it out.
    sign_in(&client, &url, &rick).await;
    client.goto(&format!("{url}/identities/Directory_User/carol")).await.unwrap();
    until_shows(&client, &format!("#slot-{rt}"), "1 Pending").await;
    let started = server.call("POST", "/api/v1/jobs/run", &root, Some(json!({})));
    assert_eq!(started.0, 202, "{:?}", started.2);
    let verified = until_shows(&client, &format!("#slot-{rt}"), "4 Verified").await;
    assert!(verified.contains("Finance-Approvers"), "the resource as synchronised: {verified}");
    // Every state in turn, on her page.
    let steps = until_shows(&client, &format!("#order-{order}"), "4 Verified").await;
    let at = |state: &str| steps.find(state).unwrap_or_else(|| panic!("{state} missing: {steps}"));
    assert!(at("5 AwaitingApproval") < at("1 Pending") && at("1 Pending") < at("8 Executed"), "{steps}");
    assert!(at("8 Executed") < steps.rfind("4 Verified").unwrap(), "{steps}");
    assert!(steps.contains("user:rita"), "the reviewer is named: {steps}");
    client.close().await.unwrap();
    drop(server);
}
