//! Settings from the command line, validated once into the values the rest
//! of the host runs on.
//!
//! Parsing helpers for flag values (durations, sizes, `HOST:PORT`) live here
//! too, so every flag reports a bad value the same way. Nothing here starts
//! or opens anything.

pub mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::app::AppSettings;
use crate::app::limits::Limits;
use crate::build::Source;
use crate::control::socket::default_control_path;
use crate::hosting::connection::ConnectionLimits;
use crate::hosting::routes::Route;
use crate::hosting::tls::TlsFiles;
use crate::kv::{KvSettings, StoreChoice, check_bucket_name, default_data_dir};
use crate::oci::Reference;
use crate::runtime::engine::EngineSettings;
use crate::runtime::outgoing::OutgoingPolicy;
use crate::runtime::p3::P3Settings;
use crate::runtime::version::VersionSettings;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Everything `wasm-host serve` needs, checked.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The apps this host serves, in the order given.
    pub apps: Vec<AppConfig>,
    /// Path of the control socket.
    pub control: PathBuf,
    /// Address of the admin listener (health, readiness, metrics), if any.
    pub admin: Option<SocketAddr>,
    /// Settings of the engine.
    pub engine: EngineSettings,
    /// The config file this came from, which `reload --config` reads again.
    pub file: Option<PathBuf>,
    /// Whether to apply `file` again whenever its contents change.
    pub watch_config: bool,
    /// Bounds on every listener's connections.
    pub connections: ConnectionLimits,
}

/// One app of a host and where it is reached.
#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    /// The app itself.
    pub settings: AppSettings,
    /// The addresses it is served on.
    pub listen: Vec<SocketAddr>,
    /// Which requests on those addresses are its own.
    pub route: Route,
    /// Whether to reload when the component file changes (or, serving a
    /// crate, rebuild and reload when its sources change).
    pub watch: bool,
    /// The crate the component is built from, when serving a directory;
    /// `settings.path` is then filled in by its first build.
    pub source: Option<Source>,
    /// The registry reference the component is pulled from, when it is one;
    /// `settings.path` is then the pulled file.
    pub oci: Option<Reference>,
    /// How often to ask the registry whether the tag moved (and reload if
    /// it did), for an app pulled by tag.
    pub watch_tag: Option<Duration>,
    /// The certificate and key its listeners serve TLS with, if any; every
    /// app on an address must then have one (SNI picks among them).
    pub tls: Option<TlsFiles>,
    /// Whether each request to the app is logged as an access line
    /// (`--access-log`, `access_log` in a config file). Switched in place
    /// when a config reload changes it.
    pub access_log: bool,
}

/// Components larger than this go live on quickly compiled code by default.
pub const DEFAULT_TIER_UP_ABOVE: usize = 1 << 20;

/// The raw values of `serve`'s flags, before validation.
#[derive(Clone, Debug)]
pub struct ServeInput {
    /// Path of the component, of a crate directory to build it from, or an
    /// `oci://` reference.
    pub component: PathBuf,
    /// Poll the `oci://` tag this often and reload when it moves.
    pub watch_tag: Option<Duration>,
    /// Listen address.
    pub listen: SocketAddr,
    /// Control socket, or the default.
    pub control: Option<PathBuf>,
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
    /// Watch the file.
    pub watch: bool,
    /// Drain timeout.
    pub drain_timeout: Duration,
    /// Ready timeout.
    pub ready_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Allowed outgoing `HOST:PORT`s.
    pub allow_http: Vec<String>,
    /// Environment variables for guests.
    pub env: Vec<(String, String)>,
    /// Memory limit per instance, bytes.
    pub max_memory: usize,
    /// On-disk compilation cache, or the default; ignored with `no_cache`.
    pub cache_dir: Option<PathBuf>,
    /// Disable the on-disk compilation cache.
    pub no_cache: bool,
    /// Requests one instance may serve in sequence (1: fresh per request).
    pub reuse_instances: u32,
    /// How 0.3 instances are shared between requests.
    pub p3: P3Settings,
    /// Components larger than this start on quickly compiled code; `None`
    /// picks the default (1 MiB, or 0 when serving a crate).
    pub tier_up_above: Option<usize>,
    /// Always wait for optimized code.
    pub no_tier_up: bool,
    /// Admission limits.
    pub limits: Limits,
    /// Bounds on held WebSocket connections.
    pub realtime: crate::realtime::Limits,
    /// The key of a trusted GRIP proxy's `Grip-Sig`.
    pub grip_key: Option<String>,
    /// A GRIP proxy's publish endpoint.
    pub grip_publish: Option<crate::realtime::forward::Endpoint>,
    /// Where the app's key-value buckets live.
    pub keyvalue: StoreChoice,
    /// The host's data directory, or the default.
    pub data_dir: Option<PathBuf>,
    /// Buckets shared by name with other apps on the same store.
    pub shared_buckets: Vec<String>,
    /// The app's `wasi:config` values.
    pub config_vars: Vec<(String, String)>,
    /// `--tls-cert`: the PEM certificate chain to serve TLS with.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: the PEM private key of that certificate.
    pub tls_key: Option<PathBuf>,
    /// `--access-log`: log one line per request.
    pub access_log: bool,
}

impl ServeConfig {
    /// Checks `input` and resolves defaults.
    pub fn new(input: ServeInput) -> Result<Self> {
        let oci = match input.component.to_str() {
            Some(text) if Reference::is_oci(text) => {
                Some(text.parse::<Reference>().map_err(anyhow::Error::msg)?)
            }
            _ => None,
        };
        check_watch_tag(oci.as_ref(), input.watch_tag).map_err(anyhow::Error::msg)?;
        let path = match &oci {
            // Filled in by the first pull.
            Some(_) => PathBuf::new(),
            None => std::path::absolute(&input.component).with_context(|| {
                format!("cannot resolve the path {}", input.component.display())
            })?,
        };
        let source = if oci.is_some() {
            None
        } else if Source::is_source(&path) {
            Some(Source::open(&path, &js_toolchains())?.for_reuse(input.reuse_instances > 1))
        } else {
            check_component_file(&path)?;
            None
        };
        for bucket in &input.shared_buckets {
            check_bucket_name(bucket).map_err(|e| anyhow::anyhow!("--shared-bucket: {e}"))?;
        }
        for (name, value) in [
            ("--drain-timeout", input.drain_timeout),
            ("--ready-timeout", input.ready_timeout),
            ("--request-timeout", input.request_timeout),
            ("--queue-timeout", input.limits.queue_timeout),
        ] {
            if value.is_zero() {
                bail!("{name} must be greater than zero");
            }
        }
        let tls = TlsFiles::from_pair(input.tls_cert, input.tls_key, "--tls-cert", "--tls-key")?
            .map(absolute_tls)
            .transpose()?;
        if let Some(tls) = &tls {
            tls.load()?;
        }
        let name = match (&source, &oci) {
            (Some(source), _) => source.name(),
            (None, Some(oci)) => oci.app_name(),
            (None, None) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "app".to_string()),
        };
        // A crate being edited is rebuilt on every save: start each build on
        // quickly compiled code whatever its size.
        let tier_up_above = input.tier_up_above.unwrap_or(if source.is_some() {
            0
        } else {
            DEFAULT_TIER_UP_ABOVE
        });
        let app = AppConfig {
            settings: AppSettings {
                version: VersionSettings {
                    app: Arc::from(name.as_str()),
                    ready_timeout: input.ready_timeout,
                    request_timeout: input.request_timeout,
                    outgoing: OutgoingPolicy::new(&input.allow_http),
                    reuse: input.reuse_instances.max(1),
                    p3: input.p3,
                    env: input.env.into(),
                    dirs: Arc::default(),
                    max_memory: None,
                    config: input.config_vars.into(),
                },
                name,
                path,
                drain_timeout: input.drain_timeout,
                limits: input.limits,
                keyvalue: KvSettings {
                    choice: input.keyvalue,
                    data_dir: input.data_dir.unwrap_or_else(default_data_dir),
                    shared: input.shared_buckets,
                },
                realtime: input.realtime,
                grip_key: input.grip_key.map(Arc::from),
                grip_publish: input.grip_publish,
            },
            listen: vec![input.listen],
            route: Route::any(),
            // A pulled file never changes; a tag is watched with --watch-tag.
            watch: input.watch && oci.is_none(),
            source,
            oci,
            watch_tag: input.watch_tag,
            tls,
            access_log: input.access_log,
        };
        Ok(Self {
            apps: vec![app],
            control: input.control.unwrap_or_else(default_control_path),
            admin: input.admin,
            file: None,
            watch_config: false,
            connections: ConnectionLimits::default(),
            engine: EngineSettings {
                max_memory: input.max_memory,
                cache_dir: (!input.no_cache)
                    .then(|| input.cache_dir.unwrap_or_else(default_cache_dir)),
                baseline_above: (!input.no_tier_up).then_some(tier_up_above),
                ..EngineSettings::default()
            },
        })
    }
}

/// The pair with absolute paths, so the watch and later reads do not
/// depend on the working directory.
pub(crate) fn absolute_tls(files: TlsFiles) -> Result<TlsFiles> {
    let abs = |p: &Path| {
        std::path::absolute(p).with_context(|| format!("cannot resolve the path {}", p.display()))
    };
    Ok(TlsFiles {
        cert: abs(&files.cert)?,
        key: abs(&files.key)?,
    })
}

/// Refuses `--watch-tag` where there is no tag to watch.
pub(crate) fn check_watch_tag(
    oci: Option<&Reference>,
    every: Option<Duration>,
) -> Result<(), String> {
    let Some(every) = every else { return Ok(()) };
    match oci {
        None => Err(
            "watch_tag needs an oci:// component; a file is watched for changes by itself".into(),
        ),
        Some(r) if r.tag.is_none() || r.digest.is_some() => Err(format!(
            "watch_tag needs a tag to watch, and {r} is pinned by digest"
        )),
        Some(_) if every < Duration::from_secs(1) => {
            Err("watch_tag must be at least 1s; registries rate-limit tight polls".into())
        }
        Some(_) => Ok(()),
    }
}

/// Refuses a missing or non-file component path before anything starts.
pub(crate) fn check_component_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => bail!(
            "{} is not a file; pass the path of a .wasm component",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist; pass the .wasm your build produced (`cargo build --target wasm32-wasip2 --release`), or the crate's directory to have wasm-host build it",
            path.display()
        ),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}

/// The on-disk compilation cache used when `--cache-dir` is not given:
/// `$XDG_CACHE_HOME/wasm-host`, else `$HOME/.cache/wasm-host`, else
/// `/tmp/wasm-host-cache-$UID`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("wasm-host");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".cache/wasm-host");
    }
    let uid = crate::control::socket::own_uid();
    PathBuf::from(format!("/tmp/wasm-host-cache-{uid}"))
}

/// Where the JavaScript toolchain is installed: beside the code cache's
/// default place, not in `--cache-dir`, so every host of the user shares one
/// install whatever cache it was given.
pub fn js_toolchains() -> PathBuf {
    default_cache_dir().join("js-toolchain")
}

/// Where per-app log files go when `--log-dir` is not given:
/// `$XDG_STATE_HOME/wasm-host/logs`, else `$HOME/.local/state/wasm-host/logs`,
/// else `/tmp/wasm-host-logs-$UID`.
pub fn default_log_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("wasm-host/logs");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".local/state/wasm-host/logs");
    }
    let uid = crate::control::socket::own_uid();
    PathBuf::from(format!("/tmp/wasm-host-logs-{uid}"))
}

/// Parses a duration such as `30s`, `500ms` or `2m`, at most
/// [`MAX_DURATION`](crate::app::limits::MAX_DURATION). Every duration flag and config-file value goes through
/// here, so they share one bound and one wording.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 30s, 500ms or 2m"))?;
    crate::app::limits::check_duration_bound(value).map_err(|e| format!("`{text}` {e}"))?;
    Ok(value)
}

/// Parses a byte size such as `512MiB`, `64m`, `1G` or `1048576`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit; write e.g. 512MiB, 64m or 1G"
            ));
        }
    };
    let value: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 512MiB, 64m or 1G"))?;
    value
        .checked_mul(1usize << shift)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

/// Checks a `HOST:PORT` value for `--allow-http`.
pub fn parse_host_port(text: &str) -> Result<String, String> {
    let bad =
        || format!("`{text}` is not HOST:PORT; write e.g. api.example.com:443 or 127.0.0.1:9000");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(text.to_string())
}

/// Reads a `NAME[=VALUE]` value for `--env`; a bare NAME takes the value
/// it has in the host's environment.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = match text.split_once('=') {
        Some((name, value)) => (name, Some(value.to_string())),
        None => (text, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("`{text}` is not NAME=VALUE or NAME"));
    }
    let value = match value {
        Some(value) => value,
        None => std::env::var(name).map_err(|_| {
            format!("`{name}` is not set in this environment; write --env {name}=VALUE")
        })?,
    };
    Ok((name.to_string(), value))
}

/// Parses a `wasi:config` value given as `KEY=VALUE`.
pub fn parse_config_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
        assert_eq!(parse_duration("24h"), Ok(crate::app::limits::MAX_DURATION));
        let absurd = parse_duration("18446744073709551615s").unwrap_err();
        assert!(absurd.contains("longer than 24h"), "{absurd}");
        assert!(parse_duration("25h").is_err());
    }

    #[test]
    fn host_ports() {
        assert!(parse_host_port("127.0.0.1:9000").is_ok());
        assert!(parse_host_port("example.com:443").is_ok());
        assert!(parse_host_port("example.com").is_err());
        assert!(parse_host_port(":80").is_err());
        assert!(parse_host_port("http://x:80").is_err());
        assert!(parse_host_port("x:99999").is_err());
    }

    #[test]
    fn env_values() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("EMPTY="), Ok(("EMPTY".into(), String::new())));
        assert!(parse_env("=x").is_err());
        let unset = parse_env("WASM_HOST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(
            unset.contains("--env WASM_HOST_SURELY_UNSET_VARIABLE=VALUE"),
            "{unset}"
        );
    }
}
