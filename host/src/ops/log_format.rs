//! How the host's own log lines are written: one event is always exactly
//! one line, on stderr and in the host's log file (`host.log` in the log
//! directory, rotated like the per-app files).
//!
//! Field values carry text from outside — file names, guest error
//! messages, request data — and a newline or a terminal escape in one of
//! them would otherwise start a forged line (`…\n2025-… INFO version
//! live`) or rewrite the operator's terminal. [`EscapedFields`] formats
//! every field, the message included, through [`escape_controls`](logfile::escape_controls), so
//! control characters arrive as visible escapes (`\n`, `\x1b`). Time, level
//! and target are written by the formatter itself and never escaped.

use std::fmt;
use std::io;
use std::sync::Arc;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{DefaultFields, FormatFields, Writer};

use crate::ops::logfile::{self, AppLog, escape_controls};

/// tracing-subscriber's default field format, with every control
/// character in names and values escaped.
///
/// The inner formatter writes without ANSI styling (so the escaping never
/// mangles a style sequence of its own); the formatter's level colours on a
/// terminal are unaffected.
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl EscapedFields {
    /// The default format, escaped.
    pub fn new() -> Self {
        Self(DefaultFields::new())
    }
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut escaping = Escaping(&mut writer);
        self.0.format_fields(Writer::new(&mut escaping), fields)
    }
}

/// A `fmt::Write` that escapes what passes through it.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_controls(s, self.0)
    }
}

/// Where the host's own events go besides stderr: `host.log` in the log
/// directory once [`logfile::init`] ran (only `serve` runs it), nowhere
/// before. Each event becomes one [`AppLog::line`], stamped with the time
/// there, so the layer writing here leaves its own timestamp out.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostFile;

impl<'a> MakeWriter<'a> for HostFile {
    type Writer = HostLine;

    fn make_writer(&'a self) -> HostLine {
        HostLine {
            file: logfile::for_host(),
            pending: Vec::new(),
        }
    }
}

/// One event on its way into `host.log`: collected whole, written as one
/// line when the formatter is done with it.
pub struct HostLine {
    file: Option<Arc<AppLog>>,
    pending: Vec<u8>,
}

impl io::Write for HostLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_some() {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for HostLine {
    fn drop(&mut self) {
        if let Some(file) = &self.file
            && !self.pending.is_empty()
        {
            file.line(&self.pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::logfile::escaped;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(escaped("plain text\twith tab"), "plain text\twith tab");
        assert_eq!(
            escaped("a\nb\r\nc\x1b[31md\u{7f}\u{85}é\u{2028}"),
            "a\\nb\\r\\nc\\x1b[31md\\x7f\\u{85}é\\u{2028}"
        );
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn one_event_is_one_line() {
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let sink = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields::new());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let path = "/tmp/x\n2025-01-01T00:00:00Z  INFO forged";
            tracing::warn!(path = %path, reason = ?path, "reload of {path} refused");
            let _span = tracing::info_span!("span", name = %"a\nb").entered();
            tracing::info!("inside");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.lines().any(|l| l.starts_with("2025-01-01")), "{text}");
        assert!(text.contains("path=/tmp/x\\n2025"), "{text}");
        assert!(text.contains("name=a\\nb"), "{text}");
    }
}
