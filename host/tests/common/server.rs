//! A `provision serve` process for the API and browser tests, on a free port, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::command;

/// A running server and the lines it logs.
pub struct Server {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// Lines it wrote on stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// `provision serve --config CONFIG` in `dir` on a free port, waiting until /healthz answers.
    pub fn start(dir: &Path, config: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let mut child =
            command(dir, &["serve", "--config", config.to_str().unwrap(), "--listen", &listen, "--log-level", "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start provision serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let url = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("provision serve exited early ({status}): {:?}", log.lock().unwrap());
            }
            if ureq::get(format!("{url}/healthz")).call().is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "provision serve did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(25));
        }
        Server { child, url, log }
    }

    /// Sends SIGTERM and waits for the process; returns its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY: signalling our own child process by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().ok()?.code()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process by its pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// A request to the server (see [`call`]).
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
        call(&self.url, method, path, token, body)
    }

    /// Whether a logged line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }
}

/// A request to the server at `url` with a bearer token and a JSON body: the status, the
/// `Location` header and the answer (a text that is not JSON as a string).
pub fn call(url: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{url}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = agent.run(request.body(body).unwrap()).expect("the server answers");
    let status = response.status().as_u16();
    let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string());
    let text = response.into_body().read_to_string().unwrap();
    (status, location, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

impl Drop for Server {
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the server said, which is usually why it failed.
        if std::thread::panicking() {
            eprintln!(
                "provision serve ({}) logged:",
                match exited {
                    Some(status) => format!("had exited: {status}"),
                    None => "still running".to_string(),
                }
            );
            for line in self.log.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                eprintln!("  {line}");
            }
        }
    }
}
