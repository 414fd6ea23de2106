//! Guest stdout and stderr, forwarded to the host's stderr one line at a
//! time with a prefix naming the app and generation (`[hello#3] …`), and
//! copied into the app's log file when files are kept.
//!
//! Lines from concurrent requests never interleave mid-line: each complete
//! line is written with a single locked write.

use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::logfile::{self, AppLog};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest partial line kept before it is written out anyway.
const MAX_PENDING: usize = 16 * 1024;

/// A guest output stream (stdout or stderr) bound to one version.
#[derive(Clone)]
pub struct GuestLog {
    prefix: Arc<str>,
    file: Option<Arc<AppLog>>,
}

impl GuestLog {
    /// Output prefixed with `[app#generation] `.
    pub fn new(app: &str, generation: u64) -> Self {
        Self {
            prefix: format!("[{app}#{generation}] ").into(),
            file: logfile::for_app(app),
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            prefix: self.prefix.clone(),
            file: self.file.clone(),
            pending: BytesMut::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 guests ask for this; they get unprefixed stderr.
        Box::new(tokio::io::stderr())
    }
}

/// Splits guest output into lines and writes each with the prefix.
struct LineWriter {
    prefix: Arc<str>,
    file: Option<Arc<AppLog>>,
    pending: BytesMut,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let mut out = Vec::with_capacity(self.prefix.len() + line.len() + 1);
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
        // The host's stderr going away must not fail the guest.
        let _ = std::io::stderr().lock().write_all(&out);
        if let Some(file) = &self.file {
            file.line(&out);
        }
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.pending.extend_from_slice(&bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line = self.pending.split_to(end + 1);
            self.emit(&line);
        }
        if self.pending.len() > MAX_PENDING {
            let line = self.pending.split();
            self.emit(&line);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = self.pending.split();
            self.emit(&line);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}
