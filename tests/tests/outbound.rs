//! Outbound HTTP from plugins: only granted origins are reached. A probe component asks for
//! URLs; the host refuses other hosts, ports, schemes, ungranted IP literals, redirects to
//! ungranted servers and forged Host headers, bounds request and response sizes and time, and
//! logs each refusal.

use std::time::Duration;

use provision::config::{HttpGrant, HttpLimits, PluginConfig, PluginSource};
use provision::model::{Change, Order, ProvisioningState, ResourceContent};
use provision::plugins::{Outcome, Runtime};
use provision_tests::guests;
use provision_tests::servers::{HttpServer, Reply};

fn order(id: i64, url: &str, host: Option<&str>) -> Order {
    order_with(id, url, host.map(|h| ("host", h)).as_slice())
}

/// An order for the probe: its `url` and further attributes (`host`, `post-bytes`).
fn order_with(id: i64, url: &str, extra: &[(&str, &str)]) -> Order {
    let mut attributes = vec![("url".to_string(), url.to_string())];
    attributes.extend(extra.iter().map(|(name, value)| (name.to_string(), value.to_string())));
    let content = ResourceContent { attributes: attributes.into_iter().collect(), entitlements: Default::default() };
    Order {
        id,
        idempotency_key: format!("probe-{id}"),
        owner: "probe".into(),
        entity_type: "Directory_User".into(),
        resource_type: "Probe".into(),
        classification: "basic".into(),
        resource_id: None,
        change: Change::between(None, Some(&content)).unwrap(),
        state: ProvisioningState::Pending,
        closed: None,
        message: None,
        attempts: 1,
        created_at: 0,
        updated_at: 0,
        next_attempt_at: None,
        held_run: None,
    }
}

fn message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Executed { resource_id } => format!("executed: {}", resource_id.clone().unwrap_or_default()),
        Outcome::Failed { message, .. } => format!("failed: {message}"),
        Outcome::Transmitted { reference } => format!("transmitted: {reference}"),
    }
}

#[test]
fn only_granted_origins_are_reached() {
    let other = HttpServer::start(|_| Reply { status: 200, headers: vec![], body: b"secret data".to_vec() });
    let other_port = other.port;
    let granted = HttpServer::start(move |request| match request.url.as_str() {
        "/redirect" => Reply {
            status: 302,
            headers: vec![("Location".into(), format!("http://localhost:{other_port}/stolen"))],
            body: vec![],
        },
        "/big" => Reply { status: 200, headers: vec![], body: vec![b'x'; 300 * 1024] },
        "/slow" => {
            // A server that takes its time, to meet the plugin's request timeout.
            std::thread::sleep(Duration::from_secs(3));
            Reply::status(200)
        }
        _ => Reply { status: 200, headers: vec![], body: b"hello".to_vec() },
    });
    let port = granted.port;

    let mut config = PluginConfig::new("probe", PluginSource::File(write(guests::HTTP_PROBE)));
    config.http = vec![HttpGrant { scheme: "http".into(), host: "localhost".into(), port }];
    config.http_limits =
        HttpLimits { timeout: Duration::from_millis(500), max_request: 1024, max_response: 100 * 1024 };
    let runtime = Runtime::new(Some(std::path::Path::new(provision_tests::CACHE_DIR))).unwrap();
    let probe = runtime.load(&config).unwrap();

    // Request bodies are bounded: 512 bytes go out, 4 KiB (over the 1 KiB limit) do not. (This
    // comes first: `/slow` below keeps the one-thread test server busy for seconds.)
    let posts = [
        order_with(20, &format!("http://localhost:{port}/posted"), &[("post-bytes", "512")]),
        order_with(21, &format!("http://localhost:{port}/posted"), &[("post-bytes", "4096")]),
    ];
    let outcomes = probe.fulfil(&posts).unwrap();
    assert_eq!(message(&outcomes[0]), "executed: 200 5 bytes");
    assert_eq!(message(&outcomes[1]), "failed: ErrorCode::HttpRequestBodySize(Some(1024))");
    let posted: Vec<usize> = granted.received().iter().filter(|r| r.url == "/posted").map(|r| r.body.len()).collect();
    assert_eq!(posted, [512], "only the small body reached the server");

    let cases = [
        (format!("http://localhost:{port}/ok"), None, "executed: 200 5 bytes"),
        (format!("http://127.0.0.1:{port}/ok"), None, "failed: ErrorCode::HttpRequestDenied"),
        (format!("http://localhost:{other_port}/ok"), None, "failed: ErrorCode::HttpRequestDenied"),
        (format!("https://localhost:{port}/ok"), None, "failed: ErrorCode::HttpRequestDenied"),
        (format!("http://granted-nowhere.invalid:{port}/ok"), None, "failed: ErrorCode::HttpRequestDenied"),
        (format!("http://localhost:{port}/redirect"), None, "failed: ErrorCode::HttpRequestDenied"),
        (format!("http://localhost:{port}/ok"), Some("evil.example"), "failed: "),
        (format!("http://localhost:{port}/big"), None, "failed: "),
        (format!("http://localhost:{port}/slow"), None, "failed: "),
    ];
    let orders: Vec<Order> = cases.iter().enumerate().map(|(i, (url, host, _))| order(i as i64, url, *host)).collect();
    provision_tests::logs();
    let outcomes = probe.fulfil(&orders).unwrap();
    let log = provision_tests::logs();
    for ((url, host, expected), outcome) in cases.iter().zip(&outcomes) {
        let got = message(outcome);
        eprintln!("{url} (Host {host:?}): {got}");
        assert!(got.starts_with(expected), "{url} (Host {host:?}): expected {expected:?}, got {got:?}");
    }
    assert!(message(&outcomes[7]).contains("body size exceeds limit: 102400 bytes"), "{}", message(&outcomes[7]));
    assert!(
        message(&outcomes[8]).contains("Timeout") || message(&outcomes[8]).contains("timeout"),
        "{}",
        message(&outcomes[8])
    );
    assert!(
        message(&outcomes[6]).to_lowercase().contains("forbidden"),
        "a Host header must be refused: {}",
        message(&outcomes[6])
    );

    // Nothing reached the ungranted server, not even through the redirect; the granted one
    // never saw a forged Host.
    assert!(other.received().is_empty(), "{:?}", other.received());
    assert!(granted.received().iter().all(|r| r.header("host") == Some(format!("localhost:{port}").as_str())));
    // Each refusal is a line in the host's log naming plugin and URL.
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused an outbound request")).collect();
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{other_port}/ok"),
        format!("https://localhost:{port}/ok"),
        format!("http://granted-nowhere.invalid:{port}/ok"),
        format!("http://localhost:{other_port}/stolen"),
    ] {
        assert!(refusals.iter().any(|l| l.contains(&url) && l.contains("probe")), "no log line for {url}:\n{log}");
    }
    assert!(refusals.iter().any(|l| l.contains("tried to set a Host header") && l.contains("probe")), "{log}");
}

#[test]
fn a_plugin_without_grants_reaches_nothing() {
    let server = HttpServer::start(|_| Reply::status(200));
    let config = PluginConfig::new("probe", PluginSource::File(write(guests::HTTP_PROBE)));
    let runtime = Runtime::new(Some(std::path::Path::new(provision_tests::CACHE_DIR))).unwrap();
    let probe = runtime.load(&config).unwrap();
    let outcomes = probe.fulfil(&[order(1, &format!("http://127.0.0.1:{}/", server.port), None)]).unwrap();
    assert_eq!(message(&outcomes[0]), "failed: ErrorCode::HttpRequestDenied");
    assert!(server.received().is_empty());
}

/// A granted server that accepts connections and then never answers (`headers`: sends a
/// response's headers and never its body): the guest waits in wasi:http, not in its code, and
/// the plugin's time limit must still end the call, whatever the HTTP timeout says.
#[test]
fn a_plugin_waiting_on_a_server_that_never_answers_ends_at_its_time_limit() {
    use std::io::{Read, Write};
    for (path, answer) in
        [("/silent", &b""[..]), ("/stalled", &b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nxy"[..])]
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, seen) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(answer);
                let _ = accepted.send(());
                held.push(stream);
            }
        });
        let mut config = PluginConfig::new("probe", PluginSource::File(write(guests::HTTP_PROBE)));
        config.http = vec![HttpGrant { scheme: "http".into(), host: "localhost".into(), port }];
        config.http_limits =
            HttpLimits { timeout: Duration::from_secs(120), max_request: 1024, max_response: 100 * 1024 };
        config.timeout = Duration::from_millis(500);
        let runtime = Runtime::new(Some(std::path::Path::new(provision_tests::CACHE_DIR))).unwrap();
        let probe = runtime.load(&config).unwrap();
        let started = std::time::Instant::now();
        let result = probe.fulfil(&[order(1, &format!("http://localhost:{port}{path}"), None)]);
        let elapsed = started.elapsed();
        eprintln!("{path}: the call ended after {elapsed:?} (limit 500 ms)");
        assert!(seen.try_recv().is_ok(), "{path}: the request never reached the server");
        match result {
            Err(provision::plugins::CallError::TimeLimit { limit, .. }) => assert_eq!(limit, config.timeout),
            other => panic!("{path}: expected the time limit, got {other:?}"),
        }
        // The limit plus its margin, and room for a loaded machine; the HTTP timeout is 120 s.
        assert!(elapsed < Duration::from_millis(500) + Duration::from_secs(2), "{path}: the call took {elapsed:?}");
    }
}

fn write(bytes: &[u8]) -> std::path::PathBuf {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file.into_temp_path().keep().unwrap()
}
