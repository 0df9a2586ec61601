//! What one guest call sees of the host: the per-call store data (WASI context with only the
//! granted directories, memory limiter, captured stderr) and the host side of the imports every
//! world shares (`log`, `config`) and the router's `directory`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{config, directory, log, types};
use crate::permissions::{Directory, PathMatch};

/// Bytes of a guest's stderr kept per call: enough for a panic message, bounded so that a
/// chatty guest cannot grow the host.
pub(crate) const STDERR_TAIL: usize = 4096;
/// Log lines a guest may write per call before the host drops the rest.
const MAX_LOG_LINES: usize = 1000;
/// Longest log message kept, in bytes.
const MAX_LOG_MESSAGE: usize = crate::limits::PLUGIN_LOG_LINE;

/// The data of one call's `Store`: created fresh for every batch so nothing leaks between them.
pub(crate) struct GuestState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub outbound: super::outbound::Outbound,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub plugin: Arc<str>,
    pub config: Arc<BTreeMap<String, String>>,
    pub directory: Option<Arc<Directory>>,
    pub log_lines: usize,
    /// Secret config values, scrubbed from what the guest logs.
    pub secrets: Arc<Vec<String>>,
    /// When probed (`provision plugin test`): the guest's log lines, as the host kept them.
    pub captured: Option<Vec<LogLine>>,
}

/// One line a guest logged, as the host kept it (scrubbed, bounded).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message, then its fields as ` key=value`.
    pub message: String,
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

/// `text` with every secret replaced by `***`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    text
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Refuses memory growth past the plugin's limit, and remembers that it did so the host can
/// tell "out of memory" from any other trap the refusal leads to.
pub(crate) struct MemoryLimiter {
    pub limit: usize,
    pub refused: Option<usize>,
    /// The largest size a memory grew to, bytes.
    pub peak: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            self.peak = self.peak.max(current);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a well-behaved guest needs a few thousand at most.
        Ok(desired <= 100_000)
    }
}

impl log::Host for GuestState {
    fn write(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(target: "plugin", plugin = %self.plugin, "more than {MAX_LOG_LINES} log lines in one call; dropping the rest");
            }
            return;
        }
        let mut message = scrub(&message, &self.secrets);
        truncate(&mut message, MAX_LOG_MESSAGE);
        let mut fields = scrub(&fields.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>(), &self.secrets);
        truncate(&mut fields, MAX_LOG_MESSAGE);
        if let Some(captured) = &mut self.captured {
            let level = match level {
                log::Level::Trace => "trace",
                log::Level::Debug => "debug",
                log::Level::Info => "info",
                log::Level::Warn => "warn",
                log::Level::Error => "error",
            };
            captured.push(LogLine { level, message: format!("{message}{fields}") });
        }
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Info => tracing::info!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Error => tracing::error!(target: "plugin", plugin, "{message}{fields}"),
        }
    }
}

impl config::Host for GuestState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl types::Host for GuestState {}

impl directory::Host for GuestState {
    fn users_with_permission(&mut self, path: String, how: directory::PathMatch) -> Vec<types::User> {
        let how = match how {
            directory::PathMatch::Exact => PathMatch::Exact,
            directory::PathMatch::Prefix => PathMatch::Prefix,
            directory::PathMatch::Grants => PathMatch::Grants,
        };
        let Some(directory) = &self.directory else { return Vec::new() };
        directory
            .users_with_permission(&path, how)
            .into_iter()
            .map(|u| types::User {
                login: u.login.clone(),
                display_name: u.display_name.clone(),
                email: u.email.clone(),
            })
            .collect()
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

/// A guest's stdout or stderr: keeps only the last bytes written, never refuses a write.
/// (wasmtime's `MemoryOutputPipe` traps the guest once full, which would turn a chatty plugin
/// into a failing one.)
#[derive(Clone, Default)]
pub(crate) struct OutputTail {
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl OutputTail {
    /// What the guest wrote last, as text.
    pub fn text(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = buffer.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let keep = bytes.len().min(STDERR_TAIL);
        buffer.extend(&bytes[bytes.len() - keep..]);
        let excess = buffer.len().saturating_sub(STDERR_TAIL);
        buffer.drain(..excess);
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputTail {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for OutputTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A guest's panic output, as one line: Rust's `thread '<unnamed>' panicked at src/lib.rs:3:5:
/// MESSAGE` plus its backtrace note becomes `panicked at src/lib.rs:3:5: MESSAGE`.
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .map(|l| match l.strip_prefix("thread '") {
            // `thread '<unnamed>' (1) panicked at ...`: keep from `panicked`.
            Some(rest) => rest.find("panicked at").map_or(l, |at| &rest[at..]),
            None => l,
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_output_becomes_one_line() {
        let stderr = "\nthread '<unnamed>' (1) panicked at src/lib.rs:12:9:\nrule exploded on order 7\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(panic_message(stderr).unwrap(), "panicked at src/lib.rs:12:9: rule exploded on order 7");
        assert_eq!(panic_message("  \n"), None);
    }

    #[test]
    fn output_tail_keeps_the_last_bytes() {
        let tail = OutputTail::default();
        tail.push(&vec![b'a'; STDERR_TAIL]);
        tail.push(b"the end");
        let text = tail.text();
        assert_eq!(text.len(), STDERR_TAIL);
        assert!(text.ends_with("the end"));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let mut text = "ééé".to_string();
        truncate(&mut text, 3);
        assert_eq!(text, "é…");
    }
}
