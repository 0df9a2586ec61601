//! Real servers the tests start on loopback: an SMTP server (aiosmtpd, from the virtual
//! environment `tests/setup.sh` makes) writing what it receives to a maildir, and a webhook
//! receiver recording every request, and a relay that records what goes over the wire and can
//! make a server go away mid-run, and a slow but concurrent SCIM service.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local address").port()
}

/// The Python of `tests/.venv`.
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run tests/setup.sh first", python.display());
    python
}

/// Waits until something accepts connections on `port`, while `child` is alive.
fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on port {port} within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real SMTP server (aiosmtpd) storing every message it accepts in a maildir.
pub struct SmtpServer {
    child: Child,
    maildir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl SmtpServer {
    /// Starts one on `port` and waits until it listens.
    pub fn start(port: u16) -> SmtpServer {
        let maildir = tempfile::tempdir().expect("maildir");
        let mut child = Command::new(venv_python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            // A path that does not exist yet: aiosmtpd creates the maildir layout only then.
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        wait_for_port(port, &mut child, "aiosmtpd");
        SmtpServer { child, maildir, port }
    }

    /// Every message received so far, as raw text, in no particular order.
    pub fn messages(&self) -> Vec<String> {
        let mut messages = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.path().join("mail").join(sub)) else { continue };
            for entry in entries.flatten() {
                messages.push(std::fs::read_to_string(entry.path()).expect("read a message"));
            }
        }
        messages
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real SCIM 2.0 server (scim2-server), in memory, with a bearer token.
pub struct ScimServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The bearer token it accepts.
    pub token: String,
}

impl ScimServer {
    /// Starts one on `port` and waits until it listens.
    pub fn start(port: u16, token: &str) -> ScimServer {
        let scim = venv_python().with_file_name("scim2-server");
        let mut child = Command::new(scim)
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scim2-server");
        wait_for_port(port, &mut child, "scim2-server");
        // Listening is not serving: the server may still swap its first socket for the real
        // one (a connection to the first is reset). Ready is when it answers.
        let server = ScimServer { child, port, token: token.to_string() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        while agent.get(format!("{}/ServiceProviderConfig", server.url())).call().is_err() {
            assert!(Instant::now() < deadline, "scim2-server did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET path` with the token, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        self.request("GET", path, None)
    }

    /// A request with the token; the JSON answer (null when empty).
    pub fn request(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("{}{path}", self.url());
        let auth = format!("Bearer {}", self.token);
        let response = match body {
            None => agent.run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(&url)
                    .header("Authorization", &auth)
                    .body(())
                    .expect("request"),
            ),
            Some(body) => agent.run(
                ureq::http::Request::builder()
                    .method(method)
                    .uri(&url)
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/scim+json")
                    .body(body.to_string())
                    .expect("request"),
            ),
        };
        let text = response.expect("the SCIM server answers").into_body().read_to_string().unwrap_or_default();
        if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON from the SCIM server")
        }
    }

    /// Stops it (its resources are lost: it keeps them in memory).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path.
    pub url: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What a test server answers.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// An empty answer with a status.
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Vec::new() }
    }
}

type Handler = Box<dyn Fn(&Received) -> Reply + Send + Sync>;

/// An HTTP server on loopback recording every request and answering as its handler says.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    received: Arc<Mutex<Vec<Received>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl HttpServer {
    /// Starts one on a free port.
    pub fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> HttpServer {
        HttpServer::start_on(0, handler)
    }

    /// Starts one on `port` of 127.0.0.1 (0: a free one).
    pub fn start_on(port: u16, handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> HttpServer {
        let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port)).expect("start a test HTTP server"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Box::new(handler);
        let thread = {
            let (server, received) = (server.clone(), received.clone());
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    let headers = request
                        .headers()
                        .iter()
                        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
                        .collect();
                    let got = Received { url: request.url().to_string(), headers, body };
                    received.lock().expect("lock").push(got.clone());
                    let reply = handler(&got);
                    let mut response = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
                    for (name, value) in reply.headers {
                        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                            response = response.with_header(header);
                        }
                    }
                    let _ = request.respond(response);
                }
            })
        };
        HttpServer { server, received, thread: Some(thread), port }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A webhook receiver: records every request and answers with a status of the test's choosing.
pub struct WebhookReceiver {
    server: HttpServer,
    status: Arc<Mutex<u16>>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl WebhookReceiver {
    /// Starts one on a free port, answering 200.
    pub fn start() -> WebhookReceiver {
        WebhookReceiver::start_on(0)
    }

    /// Starts one on `port` (0: a free one), answering 200: a receiver that was down comes
    /// back where its clients expect it.
    pub fn start_on(port: u16) -> WebhookReceiver {
        let status = Arc::new(Mutex::new(200));
        let answer = status.clone();
        let server = HttpServer::start_on(port, move |_| Reply::status(*answer.lock().expect("lock")));
        let port = server.port;
        WebhookReceiver { server, status, port }
    }

    /// Answers every later request with this status.
    pub fn answer(&self, status: u16) {
        *self.status.lock().expect("lock") = status;
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.server.received()
    }
}

/// A TCP relay in front of a server: it records every request that passes (what went over the
/// wire, not what the client meant to send) and can make the server go away mid-run: given a
/// `trigger`, it drops the first request containing it unanswered and stops listening, so later
/// connections are refused as if the server had stopped, until [`Relay::restore`]. The server
/// behind keeps its data, so what happened before the outage is still there.
pub struct Relay {
    /// Its port on 127.0.0.1: point the client here.
    pub port: u16,
    upstream: u16,
    requests: Arc<Mutex<Vec<RelayedRequest>>>,
    tripped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A request that went through a [`Relay`].
#[derive(Debug, Clone)]
pub struct RelayedRequest {
    /// `METHOD /path?query`.
    pub line: String,
    /// The body, as text.
    pub body: String,
}

impl Relay {
    /// Relays to `upstream` on a free port.
    pub fn start(upstream: u16) -> Relay {
        Relay::open(upstream, None)
    }

    /// Relays to `upstream` until a request containing `trigger` arrives.
    pub fn with_outage(upstream: u16, trigger: &str) -> Relay {
        Relay::open(upstream, Some(trigger.as_bytes().to_vec()))
    }

    fn open(upstream: u16, trigger: Option<Vec<u8>>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("local address").port();
        let mut relay = Relay {
            port,
            upstream,
            requests: Arc::default(),
            tripped: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        relay.thread = Some(relay.serve(listener, trigger));
        relay
    }

    /// Every request that reached the server so far.
    pub fn requests(&self) -> Vec<RelayedRequest> {
        self.requests.lock().expect("lock").clone()
    }

    /// Whether the trigger came: the server has "stopped".
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// The server is back: listens again on the same port and passes everything through.
    pub fn restore(&mut self) {
        assert!(self.tripped(), "restore needs the outage to have happened");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // std sets SO_REUSEADDR on Unix, so the port just closed can be bound again.
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("listen again on the relay's port");
        self.thread = Some(self.serve(listener, None));
    }

    fn serve(&self, listener: TcpListener, trigger: Option<Vec<u8>>) -> JoinHandle<()> {
        let (upstream, requests, tripped, stop) =
            (self.upstream, self.requests.clone(), self.tripped.clone(), self.stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut client) = client else { continue };
                let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok((request, head)) = read_request(&mut client) else { continue };
                if trigger.as_ref().is_some_and(|t| request.windows(t.len()).any(|w| w == t.as_slice())) {
                    tripped.store(true, Ordering::SeqCst);
                    return; // drops this connection unanswered, then the listener
                }
                let text = String::from_utf8_lossy(&request);
                let line = text.lines().next().unwrap_or_default().trim_end_matches(" HTTP/1.1").to_string();
                let body = text[head..].to_string();
                requests.lock().expect("lock").push(RelayedRequest { line, body });
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                if server.write_all(&request).is_err() {
                    continue;
                }
                let (Ok(mut answer_to), Ok(mut answer_from)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let _ = client.set_read_timeout(None);
                // One request per connection is what wasi-http's client sends; anything more on
                // the same connection still goes through, unrecorded.
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut answer_from, &mut answer_to);
                    let _ = answer_to.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client, &mut server);
                    let _ = server.shutdown(Shutdown::Write);
                });
            }
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes a waiting accept
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One whole HTTP/1 request (the head, then as many body bytes as its Content-Length says), and
/// where its body starts.
fn read_request(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, usize)> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut wanted = None;
    loop {
        if let Some((body, total)) = wanted
            && request.len() >= total
        {
            return Ok((request, body));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        request.extend_from_slice(&chunk[..n]);
        if wanted.is_none()
            && let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            wanted = Some((end + 4, end + 4 + length));
        }
    }
}

/// A SCIM service that is slow but concurrent: every request is answered after a fixed delay,
/// on one of 32 threads; it counts the users created and remembers the most requests it ever
/// had in flight (a managed system that answers after a latency, for per-connection
/// concurrency's test and benchmark). It keeps the users it created (so a `read` lists them,
/// and a second POST of the same `externalId` is a 409), logs every request with its arrival,
/// answer and the requests in flight then, and can refuse its first writes ([`Faults`]).
pub struct SlowScim {
    server: Arc<tiny_http::Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The most requests in flight at once.
    pub most: Arc<AtomicUsize>,
    /// Users created (POST /Users).
    pub created: Arc<AtomicUsize>,
    /// Every request, in the order they arrived.
    pub log: Arc<Mutex<Vec<Served>>>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// Writes the service refuses: the first `count` POSTs are answered `status` (with
/// `Retry-After: retry_after` seconds if set), before anything else happens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// How many.
    pub count: usize,
    /// With what (429, 503, ...).
    pub status: u16,
    /// The Retry-After header's seconds.
    pub retry_after: Option<u64>,
}

/// One request the slow SCIM service served.
#[derive(Debug, Clone)]
pub struct Served {
    /// When it arrived.
    pub arrived: Instant,
    /// When it was answered.
    pub answered: Instant,
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub url: String,
    /// The status answered.
    pub status: u16,
    /// Requests in flight when it arrived, itself included.
    pub in_flight: usize,
    /// A POST's `externalId`.
    pub external_id: Option<String>,
}

impl SlowScim {
    /// Starts it; each request is answered `delay` after it arrived.
    pub fn start(delay: Duration) -> SlowScim {
        SlowScim::with_faults(delay, Faults::default())
    }

    /// Starts it, refusing its first writes as `faults` says.
    pub fn with_faults(delay: Duration, faults: Faults) -> SlowScim {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the slow SCIM server"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let (most, created, now) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let users: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let refused = Arc::new(AtomicUsize::new(0));
        let threads = (0..32)
            .map(|_| {
                let (server, most, created, now) = (server.clone(), most.clone(), created.clone(), now.clone());
                let (log, users, refused) = (log.clone(), users.clone(), refused.clone());
                std::thread::spawn(move || {
                    while let Ok(mut request) = server.recv() {
                        let arrived = Instant::now();
                        let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(in_flight, Ordering::SeqCst);
                        let mut body = String::new();
                        let _ = request.as_reader().read_to_string(&mut body);
                        std::thread::sleep(delay);
                        let url = request.url().to_string();
                        let posted: Option<serde_json::Value> = serde_json::from_str(&body).ok();
                        let external_id = posted
                            .as_ref()
                            .and_then(|b| b.get("externalId"))
                            .and_then(|v| v.as_str())
                            .map(str::to_string);
                        let mut retry_after = None;
                        let (status, answer) = match (request.method(), url.as_str()) {
                            (tiny_http::Method::Post, _) if refused.fetch_add(1, Ordering::SeqCst) < faults.count => {
                                retry_after = faults.retry_after;
                                (faults.status, r#"{"detail":"slow down"}"#.to_string())
                            }
                            (tiny_http::Method::Post, "/Users") => {
                                let mut users = users.lock().expect("lock");
                                if users.iter().any(|u| u["externalId"].as_str() == external_id.as_deref()) {
                                    (409, r#"{"detail":"uniqueness"}"#.to_string())
                                } else {
                                    let n = created.fetch_add(1, Ordering::SeqCst);
                                    let mut user = posted.clone().unwrap_or_default();
                                    user["id"] = format!("u{n}").into();
                                    users.push(user.clone());
                                    (201, user.to_string())
                                }
                            }
                            (tiny_http::Method::Get, url) if url.starts_with("/Users") => {
                                let users = users.lock().expect("lock");
                                let query = |name: &str| {
                                    url.split(['?', '&'])
                                        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                                        .map(str::to_string)
                                };
                                let listed: Vec<&serde_json::Value> = match query("filter") {
                                    // `externalId eq "KEY"`, URL-encoded: the key is what is quoted.
                                    Some(filter) => {
                                        let decoded = filter.replace("%22", "\"").replace("%20", " ").replace('+', " ");
                                        let key = decoded.split('"').nth(1).unwrap_or_default().to_string();
                                        users
                                            .iter()
                                            .filter(|u| u["externalId"].as_str() == Some(key.as_str()))
                                            .collect()
                                    }
                                    None => {
                                        let start: usize =
                                            query("startIndex").and_then(|s| s.parse().ok()).unwrap_or(1);
                                        let count: usize = query("count").and_then(|s| s.parse().ok()).unwrap_or(100);
                                        users.iter().skip(start.saturating_sub(1)).take(count).collect()
                                    }
                                };
                                let page = serde_json::json!({ "totalResults": users.len(), "Resources": listed });
                                (200, page.to_string())
                            }
                            (tiny_http::Method::Get, url) if url.starts_with("/Groups") => {
                                (200, r#"{"totalResults":0,"Resources":[]}"#.to_string())
                            }
                            _ => (404, "{}".to_string()),
                        };
                        now.fetch_sub(1, Ordering::SeqCst);
                        let answered = Instant::now();
                        log.lock().expect("lock").push(Served {
                            arrived,
                            answered,
                            method: request.method().to_string(),
                            url,
                            status,
                            in_flight,
                            external_id,
                        });
                        let mut response = tiny_http::Response::from_string(answer).with_status_code(status);
                        if let Some(seconds) = retry_after
                            && let Ok(header) =
                                tiny_http::Header::from_bytes(b"Retry-After", seconds.to_string().as_bytes())
                        {
                            response = response.with_header(header);
                        }
                        let _ = request.respond(response);
                    }
                })
            })
            .collect();
        SlowScim { server, threads, most, created, log, port }
    }

    /// Every request so far, by arrival.
    pub fn served(&self) -> Vec<Served> {
        let mut served = self.log.lock().expect("lock").clone();
        served.sort_by_key(|s| s.arrived);
        served
    }
}

impl Drop for SlowScim {
    fn drop(&mut self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
