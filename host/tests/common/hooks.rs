//! A webhook receiver that holds requests while the test says so: a job delivering to it stays
//! at an observable point (its request arrived) until released.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

/// The receiver: every request is reported (after its body is read), then held while held.
pub struct Hooks {
    /// Its port on 127.0.0.1.
    pub port: u16,
    held: Arc<(Mutex<bool>, Condvar)>,
}

impl Hooks {
    /// Starts holding (`held`) or answering at once; `arrived` is called for each request.
    pub fn start(held: bool, arrived: impl Fn() + Send + Sync + 'static) -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Arc::new((Mutex::new(held), Condvar::new()));
        let (held, arrived) = (gate.clone(), Arc::new(arrived));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (gate, arrived) = (gate.clone(), arrived.clone());
                std::thread::spawn(move || answer(stream, &gate, &*arrived));
            }
        });
        Hooks { port, held }
    }

    /// Holds the requests that arrive from now on.
    pub fn hold(&self) {
        *self.held.0.lock().unwrap() = true;
    }

    /// Answers held requests and every later one at once.
    pub fn release(&self) {
        let (held, changed) = &*self.held;
        *held.lock().unwrap() = false;
        changed.notify_all();
    }
}

fn answer(mut stream: TcpStream, gate: &(Mutex<bool>, Condvar), arrived: &(dyn Fn() + Send + Sync)) {
    // Read the head, then the body it announces, so the client is never cut off mid-send.
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    arrived();
    let (held, changed) = gate;
    let mut holding = held.lock().unwrap();
    while *holding {
        holding = changed.wait(holding).unwrap();
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}
