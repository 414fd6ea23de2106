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
//!
//! With `--log-format json` ([`LogFormat::Json`]) every line on stderr and
//! in `host.log` is instead one JSON object ([`JsonLines`]): `timestamp`,
//! `level`, `kind` (`host` for the host's events, `access` for access
//! lines, `guest` for guest output on stderr), `message`, and each field of
//! the event under its own name. JSON escaping keeps one event on one line
//! there.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::ops::logfile::{self, ACCESS_TARGET, AppLog, escape_controls};

/// How the host writes its log lines (stderr and `host.log`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIME LEVEL message field=value …`, for people.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "`{other}` is not a log format: use `text` or `json`"
            )),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets the process's log format, once, before logging starts; later
/// calls are ignored.
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// The process's log format (text until [`set_format`] says otherwise).
/// Guest output written straight to stderr follows it too.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// One JSON log line being built: the fixed keys first, then fields in the
/// order they are added.
pub struct JsonLine {
    out: String,
}

/// Keys every line has; an event field of the same name is written as
/// `field.NAME` so no object ever carries a key twice.
const FIXED_KEYS: [&str; 3] = ["timestamp", "level", "kind"];

impl JsonLine {
    /// A line of `kind` at `level`, stamped with the time now.
    pub fn new(kind: &str, level: &str) -> Self {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut line = Self {
            out: String::with_capacity(256),
        };
        line.out.push('{');
        line.raw("timestamp", Value::from(time));
        line.raw("level", Value::from(level));
        line.raw("kind", Value::from(kind));
        line
    }

    /// Adds `key: value`.
    pub fn field(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        if FIXED_KEYS.contains(&key) {
            self.raw(&format!("field.{key}"), value);
        } else {
            self.raw(key, value);
        }
    }

    fn raw(&mut self, key: &str, value: Value) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        // `Value`'s Display is its JSON text, escapes included, and cannot
        // fail.
        self.out.push_str(&Value::from(key).to_string());
        self.out.push(':');
        self.out.push_str(&value.to_string());
    }

    /// The finished object, without a newline.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

impl Visit for JsonLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field.name(), value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field.name(), value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The message (format arguments) and `%`-recorded values print
        // their text this way, without quotes.
        self.field(field.name(), format!("{value:?}"));
    }
}

/// The event format of `--log-format json`: one [`JsonLine`] per event.
/// Spans are not written (the host logs with fields, not spans).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let kind = if meta.target() == ACCESS_TARGET {
            "access"
        } else {
            "host"
        };
        let mut line = JsonLine::new(kind, meta.level().as_str());
        event.record(&mut line);
        writer.write_str(&line.finish())?;
        writer.write_char('\n')
    }
}

/// A line of guest output as the JSON format writes it on stderr.
pub fn guest_json(app: &str, generation: u64, text: &str) -> String {
    let mut line = JsonLine::new("guest", "INFO");
    line.field("app", app);
    line.field("generation", generation);
    line.field("message", text);
    line.finish()
}

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
/// before. In text, each event becomes one [`AppLog::line`], stamped with
/// the time there, so the layer writing here leaves its own timestamp out;
/// a JSON line carries its own time and is written as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostFile {
    unstamped: bool,
}

impl HostFile {
    /// Lines the file stamps with the time (text).
    pub fn stamped() -> Self {
        Self { unstamped: false }
    }

    /// Lines written as they are (JSON, which has a `timestamp` key).
    pub fn unstamped() -> Self {
        Self { unstamped: true }
    }
}

impl<'a> MakeWriter<'a> for HostFile {
    type Writer = HostLine;

    fn make_writer(&'a self) -> HostLine {
        HostLine {
            file: logfile::for_host(),
            unstamped: self.unstamped,
            pending: Vec::new(),
        }
    }
}

/// One event on its way into `host.log`: collected whole, written as one
/// line when the formatter is done with it.
pub struct HostLine {
    file: Option<Arc<AppLog>>,
    unstamped: bool,
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
            if self.unstamped {
                file.unstamped_line(&self.pending);
            } else {
                file.line(&self.pending);
            }
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

    #[test]
    fn json_lines_are_one_object_per_event() {
        use tracing_subscriber::layer::SubscriberExt;
        let captured = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = captured.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || Sink(sink.clone()))
            .event_format(JsonLines);
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let path = "/tmp/x\n{\"forged\":1}";
            tracing::warn!(path = %path, generation = 3u64, level = "mine", "reload of {path} refused");
            tracing::info!(target: ACCESS_TARGET, status = 200u64, "access");
        });
        let text = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["kind"], "host");
        assert_eq!(lines[0]["path"], "/tmp/x\n{\"forged\":1}");
        assert_eq!(lines[0]["generation"], 3);
        assert_eq!(lines[0]["field.level"], "mine");
        assert!(
            lines[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("reload of /tmp/x\n")
        );
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["kind"], "access");
        assert_eq!(lines[1]["status"], 200);
    }
}
