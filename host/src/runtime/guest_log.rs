//! Guest stdout and stderr, forwarded to the host's stderr one line at a
//! time with a prefix naming the app and generation (`[hello#3] …`), and
//! copied into the app's log file when files are kept.
//!
//! Lines from concurrent requests never interleave mid-line: each complete
//! line is written with a single locked write.
//!
//! A guest may ask for a new stdout or stderr handle for every write (the
//! WASI bindings hand out a fresh `output-stream` per `get-stderr` call),
//! so the partial line belongs to the stream of one store, not to a handle:
//! a handle that is dropped mid-line leaves its bytes for the next handle,
//! and the line is written once its newline arrives, or when the store
//! goes away.
//!
//! With `--log-format json`, a line goes to stderr as a JSON object
//! (`"kind":"guest"`, with `app`, `generation` and the line as `message`)
//! so stderr stays all JSON; the app's file keeps the prefixed text.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use crate::ops::log_format::{self, LogFormat};
use crate::ops::logfile::{self, AppLog};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest partial line kept before it is written out anyway.
const MAX_PENDING: usize = 16 * 1024;

/// A guest output stream (stdout or stderr) bound to one version.
///
/// Each clone is a separate stream with its own partial line: the host
/// clones one per store and per stream (stdout, stderr), so concurrent
/// requests and the two streams never share a half-written line.
pub struct GuestLog {
    sink: Arc<Sink>,
}

impl GuestLog {
    /// Output prefixed with `[app#generation] `.
    pub fn new(app: &str, generation: u64) -> Self {
        Self::fresh(
            Origin {
                app: app.into(),
                generation,
                prefix: format!("[{app}#{generation}] ").into(),
            },
            logfile::for_app(app),
        )
    }

    fn fresh(origin: Origin, file: Option<Arc<AppLog>>) -> Self {
        Self {
            sink: Arc::new(Sink {
                origin,
                file,
                pending: Mutex::new(BytesMut::new()),
            }),
        }
    }
}

impl Clone for GuestLog {
    /// Same app, generation and file, with an empty partial line (see the
    /// type's doc: a clone is a new stream).
    fn clone(&self) -> Self {
        Self::fresh(self.sink.origin.clone(), self.sink.file.clone())
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        // Every handle of this stream writes into the same partial line.
        Box::new(LineWriter {
            sink: self.sink.clone(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 guests ask for this; they get unprefixed stderr.
        Box::new(tokio::io::stderr())
    }
}

/// Whose output a stream carries.
#[derive(Clone)]
struct Origin {
    app: Arc<str>,
    generation: u64,
    /// `[app#generation] `.
    prefix: Arc<str>,
}

/// One stream's origin, file and partial line, shared by its handles.
struct Sink {
    origin: Origin,
    file: Option<Arc<AppLog>>,
    pending: Mutex<BytesMut>,
}

impl Sink {
    fn emit(&self, line: &[u8]) {
        let prefix = &self.origin.prefix;
        let mut out = Vec::with_capacity(prefix.len() + line.len() + 1);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
        // The host's stderr going away must not fail the guest.
        match log_format::format() {
            LogFormat::Text => {
                let _ = std::io::stderr().lock().write_all(&out);
            }
            LogFormat::Json => {
                let text = String::from_utf8_lossy(line);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                let mut json =
                    log_format::guest_json(&self.origin.app, self.origin.generation, text);
                json.push('\n');
                let _ = std::io::stderr().lock().write_all(json.as_bytes());
            }
        }
        if let Some(file) = &self.file {
            file.line(&out);
        }
    }

    /// Adds `bytes` to the partial line and writes every line completed.
    fn write(&self, bytes: &[u8]) {
        // A panic while holding the lock cannot leave the buffer in a state
        // worse than a lost line: keep using it.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line = pending.split_to(end + 1);
            self.emit(&line);
        }
        if pending.len() > MAX_PENDING {
            let line = pending.split();
            self.emit(&line);
        }
    }
}

impl Drop for Sink {
    /// The store is gone: what is left of a line is written as it is.
    fn drop(&mut self) {
        let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let line = pending.split();
            self.emit(&line);
        }
    }
}

/// One handle the guest holds on a stream.
struct LineWriter {
    sink: Arc<Sink>,
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the stream still holds back.
    fn pending(log: &GuestLog) -> Vec<u8> {
        log.sink.pending.lock().unwrap().to_vec()
    }

    #[test]
    fn a_line_written_through_fresh_handles_stays_whole() {
        let log = GuestLog::new("unit", 1);
        for piece in ["one ", "line ", "in pieces"] {
            let mut handle = log.p2_stream();
            handle.write(Bytes::from(piece)).unwrap();
            drop(handle);
        }
        assert_eq!(pending(&log), b"one line in pieces");
        let mut handle = log.p2_stream();
        handle.write(Bytes::from_static(b"\nnext")).unwrap();
        assert_eq!(pending(&log), b"next");
        // A clone is another stream: it starts with no partial line.
        assert!(pending(&log.clone()).is_empty());
    }
}
