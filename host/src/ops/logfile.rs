//! Log files, one per app (`DIR/APP.log`), rotated by size: guest output
//! and the host's events about that app, each line with time, app and
//! generation. `wasm-host logs` reads them.
//!
//! The host's own events, every one of them, also go to `host.log` in the
//! same directory, kept the same way ([`for_host`], written by the
//! formatter in `log_format`).
//!
//! The files are set up once per process ([`init`]); before that, nothing
//! is written, and an event that names no app goes only to `host.log`. Writing never fails a
//! request: a full disk costs log lines, not traffic.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How the files are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// Where the files go.
    pub dir: PathBuf,
    /// A file is rotated when it would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one (`APP.log.1` …).
    pub keep: u32,
}

struct LogFiles {
    settings: LogSettings,
    open: Mutex<HashMap<String, Arc<AppLog>>>,
}

static FILES: OnceLock<LogFiles> = OnceLock::new();

/// Starts writing per-app log files as `settings` say; later calls are
/// ignored. Fails if the directory cannot be made.
pub fn init(settings: LogSettings) -> std::io::Result<()> {
    std::fs::create_dir_all(&settings.dir)?;
    let _ = FILES.set(LogFiles {
        settings,
        open: Mutex::new(HashMap::new()),
    });
    Ok(())
}

/// The directory the files are in, once [`init`] ran.
pub fn dir() -> Option<PathBuf> {
    FILES.get().map(|f| f.settings.dir.clone())
}

/// The log file of `app`, if files are kept.
pub fn for_app(app: &str) -> Option<Arc<AppLog>> {
    let files = FILES.get()?;
    let mut open = files.open.lock().ok()?;
    if let Some(log) = open.get(app) {
        return Some(log.clone());
    }
    let log = Arc::new(AppLog::open(&files.settings, app).ok()?);
    open.insert(app.to_string(), log.clone());
    Some(log)
}

/// The name the host's own log file goes by in the log directory
/// (`host.log`). An app named `host` shares it rather than racing it over
/// rotation: both go through the one open file.
pub const HOST_LOG: &str = "host";

/// The host's own log file, if files are kept (see `log_format`).
pub fn for_host() -> Option<Arc<AppLog>> {
    for_app(HOST_LOG)
}

/// The path of `app`'s current log file in `dir`.
pub fn path_in(dir: &Path, app: &str) -> PathBuf {
    dir.join(format!("{app}.log"))
}

/// One app's log file.
pub struct AppLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Mutex<(File, u64)>,
}

impl AppLog {
    fn open(settings: &LogSettings, app: &str) -> std::io::Result<Self> {
        let path = path_in(&settings.dir, app);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_bytes: settings.max_bytes,
            keep: settings.keep,
            file: Mutex::new((file, size)),
        })
    }

    /// Appends one line (a newline is added), stamped with the time.
    pub fn line(&self, text: &[u8]) {
        self.append(text, true);
    }

    /// Appends one line as it is (a newline is added), without a time
    /// stamp: for lines that carry their own time, as JSON lines do.
    pub fn unstamped_line(&self, text: &[u8]) {
        self.append(text, false);
    }

    fn append(&self, text: &[u8], stamped: bool) {
        let mut out = Vec::with_capacity(text.len() + 32);
        if stamped {
            out.extend_from_slice(now().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(text.strip_suffix(b"\n").unwrap_or(text));
        out.push(b'\n');
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        if file.1 + out.len() as u64 > self.max_bytes
            && file.1 > 0
            && let Ok(fresh) = self.rotate()
        {
            *file = (fresh, 0);
        }
        if file.0.write_all(&out).is_ok() {
            file.1 += out.len() as u64;
        }
    }

    /// `APP.log.(n)` → `.(n+1)`, …, `APP.log` → `.1`; the oldest goes.
    fn rotate(&self) -> std::io::Result<File> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The tracing target of access-log events (one per request, when the
/// access log is on). The log format tells them apart by it (`"kind":
/// "access"` in JSON), the log filter lets them through at `info` whatever
/// `WASM_HOST_LOG` says, and the per-app files leave them out.
pub const ACCESS_TARGET: &str = "wasm_host::access";

/// A tracing layer that copies every event with an `app` field into that
/// app's file.
pub struct AppEvents;

impl<S: Subscriber> Layer<S> for AppEvents {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Access lines stay out of the per-app files: they are one per
        // request, and `wasm-host logs` is for guest output and versions.
        if FILES.get().is_none() || event.metadata().target() == ACCESS_TARGET {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(app) = fields.app.take() else { return };
        let Some(log) = for_app(&app) else { return };
        // Values come from outside (paths, guest errors): escaped, so one
        // event stays one line here as on stderr.
        let line = format!(
            "{} {}{}",
            event.metadata().level(),
            escaped(&fields.message),
            escaped(&fields.rest)
        );
        log.line(line.as_bytes());
    }
}

#[derive(Default)]
struct Fields {
    app: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "app" => self.app = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "app" => self.app = Some(format!("{value:?}").trim_matches('"').to_string()),
            "message" => self.message = format!("{value:?}"),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

/// Writes `text` to `out` with every control character (C0, DEL, C1) and
/// the Unicode line and paragraph separators escaped; tabs are kept, as
/// they do not break a line.
pub fn escape_controls(text: &str, out: &mut impl fmt::Write) -> fmt::Result {
    let mut clean = 0;
    for (at, c) in text.char_indices() {
        let escaped = match c {
            '\t' => continue,
            '\n' => "\\n",
            '\r' => "\\r",
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => "",
            _ => continue,
        };
        out.write_str(&text[clean..at])?;
        if escaped.is_empty() {
            match c as u32 {
                n @ 0..=0x7f => write!(out, "\\x{n:02x}")?,
                n => write!(out, "\\u{{{n:x}}}")?,
            }
        } else {
            out.write_str(escaped)?;
        }
        clean = at + c.len_utf8();
    }
    out.write_str(&text[clean..])
}

/// `text` with control characters escaped, as [`escape_controls`] does.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing to a String cannot fail.
    let _ = escape_controls(text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_keep_a_bounded_number() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            dir: dir.path().to_path_buf(),
            max_bytes: 200,
            keep: 2,
        };
        let log = AppLog::open(&settings, "shop").unwrap();
        for i in 0..40 {
            log.line(format!("line {i:02} of some length").as_bytes());
        }
        let current = std::fs::read_to_string(dir.path().join("shop.log")).unwrap();
        assert!(current.len() <= 200, "{}", current.len());
        assert!(current.contains("line 39"), "{current}");
        assert!(dir.path().join("shop.log.1").exists());
        assert!(dir.path().join("shop.log.2").exists());
        assert!(!dir.path().join("shop.log.3").exists());
        let older = std::fs::read_to_string(dir.path().join("shop.log.1")).unwrap();
        assert!(!older.contains("line 39"), "{older}");
    }
}
