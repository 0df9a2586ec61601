//! Real servers the tests start on loopback: an SMTP server (aiosmtpd, from the virtual
//! environment `tests/setup.sh` makes) writing what it receives to a maildir, and a webhook
//! receiver recording every request.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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

/// An HTTP server recording every request and answering with a status of the test's choosing.
pub struct WebhookReceiver {
    server: Arc<tiny_http::Server>,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<u16>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl WebhookReceiver {
    /// Starts one on a free port.
    pub fn start() -> WebhookReceiver {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("start the webhook receiver"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(200));
        let thread = {
            let (server, received, status) = (server.clone(), received.clone(), status.clone());
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    let headers = request
                        .headers()
                        .iter()
                        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
                        .collect();
                    received.lock().expect("lock").push(Received { url: request.url().to_string(), headers, body });
                    let code = *status.lock().expect("lock");
                    let _ = request.respond(tiny_http::Response::empty(code));
                }
            })
        };
        WebhookReceiver { server, received, status, thread: Some(thread), port }
    }

    /// Answers every later request with this status.
    pub fn answer(&self, status: u16) {
        *self.status.lock().expect("lock") = status;
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
