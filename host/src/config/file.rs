//! The config file (`wasm-host serve --config wasm-host.toml`): several apps
//! in one host, each with its listeners or routes, settings and limits.
//!
//! The whole file is parsed and checked before anything starts, and every
//! problem found is reported with file, line and what is wrong. This module
//! turns text into a [`ServeConfig`]; it opens nothing but the files and
//! directories it checks exist.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toml::Spanned;

use crate::app::AppSettings;
use crate::app::limits::Limits;
use crate::build::Source;
use crate::config::{
    AppConfig, DEFAULT_LISTEN, DEFAULT_TIER_UP_ABOVE, ServeConfig, absolute_tls,
    check_component_file, check_watch_tag, default_cache_dir, parse_duration, parse_host_port,
    parse_size,
};
use crate::control::socket::default_control_path;
use crate::hosting::routes::Route;
use crate::hosting::tls::TlsFiles;
use crate::kv::{KvSettings, StoreChoice, check_bucket_name, default_data_dir};
use crate::oci::Reference;
use crate::realtime::Limits as RealtimeLimits;
use crate::runtime::engine::EngineSettings;
use crate::runtime::outgoing::OutgoingPolicy;
use crate::runtime::p3::P3Settings;
use crate::runtime::version::VersionSettings;

/// Per-instance memory when an app names none.
const DEFAULT_MAX_MEMORY: usize = 512 << 20;

/// Requests all apps together may run at once: the instance pool has 1000
/// slots, and readiness checks, drain hooks and idle reused instances need
/// some beyond the requests'.
const POOL_BUDGET: usize = 900;

/// Host settings given on the command line, which win over the file's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--control`.
    pub control: Option<PathBuf>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--access-log`: every app logs its requests, whatever the file says.
    pub access_log: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    listen: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    control: Option<String>,
    cache_dir: Option<String>,
    data_dir: Option<String>,
    tier_up_above: Option<Spanned<String>>,
    watch_config: Option<bool>,
    /// Whether apps that do not say log one line per request.
    access_log: Option<bool>,
    #[serde(default, rename = "app")]
    apps: BTreeMap<String, Spanned<AppSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSpec {
    component: Spanned<String>,
    listen: Option<Spanned<Listen>>,
    #[serde(default)]
    hosts: Vec<String>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    dirs: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    allow_http: Vec<Spanned<String>>,
    max_memory: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    ready_timeout: Option<Spanned<String>>,
    queue_timeout: Option<Spanned<String>>,
    hangup_grace: Option<Spanned<String>>,
    max_concurrency: Option<Spanned<u64>>,
    max_queue: Option<usize>,
    max_body: Option<Spanned<String>>,
    ws_max_connections: Option<Spanned<u64>>,
    ws_max_message: Option<Spanned<String>>,
    ws_ping_interval: Option<Spanned<String>>,
    ws_idle_timeout: Option<Spanned<String>>,
    ws_send_queue: Option<Spanned<u64>>,
    grip_key: Option<String>,
    grip_publish: Option<Spanned<String>>,
    watch: Option<bool>,
    watch_tag: Option<Spanned<String>>,
    reuse_instances: Option<Spanned<u32>>,
    instance_concurrency: Option<Spanned<u32>>,
    instance_uses: Option<Spanned<u32>>,
    instance_idle: Option<Spanned<String>>,
    keyvalue: Option<Spanned<String>>,
    #[serde(default)]
    shared_buckets: Vec<Spanned<String>>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    access_log: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Listen {
    One(String),
    Many(Vec<String>),
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<ServeConfig> {
    let file = std::path::absolute(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read the config file {}; pass the path of a wasm-host.toml",
            file.display()
        )
    })?;
    parse(&text, &file, overrides)
}

/// Checks `text`, the contents of the config file at `file`.
pub fn parse(text: &str, file: &Path, overrides: &Overrides) -> Result<ServeConfig> {
    let spec: FileSpec = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| format!(":{}", line_of(text, span.start)))
            .unwrap_or_default();
        anyhow::anyhow!("{}{at}: {}", file.display(), e.message())
    })?;
    let mut problems = Problems {
        text,
        file,
        found: Vec::new(),
    };
    let base = file.parent().unwrap_or(Path::new("/"));
    let default_listen = match &spec.listen {
        Some(text) => problems.check(text, |s| s.parse::<SocketAddr>().map_err(|e| e.to_string())),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    let admin = match (&overrides.admin, &spec.admin) {
        (Some(addr), _) => Some(*addr),
        (None, Some(text)) => {
            problems.check(text, |s| s.parse::<SocketAddr>().map_err(|e| e.to_string()))
        }
        (None, None) => None,
    };
    let tier_up_above = match &spec.tier_up_above {
        Some(text) if text.get_ref().trim() == "0" => Some(0),
        Some(text) => problems.check(text, |s| parse_size(s)),
        None => Some(DEFAULT_TIER_UP_ABOVE),
    };

    let mut entries: Vec<_> = spec.apps.iter().collect();
    entries.sort_by_key(|(_, app)| app.span().start);
    if entries.is_empty() {
        problems.at(
            0,
            "no apps: add an `[app.NAME]` table with a `component`".into(),
        );
    }
    // Apps that name no limit share the pool's budget evenly.
    let fair_share =
        (POOL_BUDGET / entries.len().max(1)).clamp(1, Limits::default().max_concurrency);
    let data_dir = match (&overrides.data_dir, &spec.data_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => base.join(dir),
        (None, None) => default_data_dir(),
    };
    let mut apps = Vec::new();
    for (name, app) in entries {
        let defaults = (default_listen, fair_share, data_dir.as_path());
        if let Some(mut config) = app_config(name, app, base, defaults, &mut problems) {
            // The flag turns it on for every app; else the app's own key,
            // else the file's.
            config.access_log = overrides.access_log
                || app
                    .get_ref()
                    .access_log
                    .or(spec.access_log)
                    .unwrap_or(false);
            apps.push((app.span().start, config));
        }
    }
    check_routes(&apps, &mut problems);
    check_tls(&apps, &mut problems);
    check_pool(&apps, &mut problems);
    if !problems.found.is_empty() {
        bail!(
            "{} has {} problem(s); nothing was started:\n{}",
            file.display(),
            problems.found.len(),
            problems.found.join("\n")
        );
    }

    let mut apps: Vec<AppConfig> = apps.into_iter().map(|(_, app)| app).collect();
    // The engine's memory slots fit the largest app; smaller limits are
    // enforced per store.
    let ceiling = apps
        .iter()
        .map(|a| a.settings.version.max_memory.unwrap_or(DEFAULT_MAX_MEMORY))
        .max()
        .unwrap_or(DEFAULT_MAX_MEMORY);
    for app in &mut apps {
        let limit = &mut app.settings.version.max_memory;
        *limit = limit.filter(|&bytes| bytes < ceiling);
    }
    let cache_dir = match (&overrides.cache_dir, &spec.cache_dir) {
        _ if overrides.no_cache => None,
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(dir)) => Some(base.join(dir)),
        (None, None) => Some(default_cache_dir()),
    };
    Ok(ServeConfig {
        apps,
        control: overrides
            .control
            .clone()
            .or_else(|| spec.control.as_ref().map(|c| base.join(c)))
            .unwrap_or_else(default_control_path),
        admin,
        engine: EngineSettings {
            max_memory: ceiling,
            cache_dir,
            baseline_above: tier_up_above,
            ..EngineSettings::default()
        },
        file: Some(file.to_path_buf()),
        watch_config: spec.watch_config.unwrap_or(true),
        connections: crate::hosting::connection::ConnectionLimits::default(),
    })
}

/// Checks one `[app.NAME]` table; `None` when it has problems (recorded).
fn app_config(
    name: &str,
    spanned: &Spanned<AppSpec>,
    base: &Path,
    (default_listen, fair_share, data_dir): (Option<SocketAddr>, usize, &Path),
    problems: &mut Problems<'_>,
) -> Option<AppConfig> {
    let before = problems.found.len();
    let app = spanned.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        problems.at(
            spanned.span().start,
            format!("app name `{name}`: use letters, digits, `-`, `_` and `.` only"),
        );
    }
    let oci = Reference::is_oci(app.component.get_ref())
        .then(|| problems.check(&app.component, |text| text.parse::<Reference>()))
        .flatten();
    let watch_tag = app.watch_tag.as_ref().and_then(|every| {
        let every = problems.check(every, |text| parse_duration(text))?;
        problems.check(app.watch_tag.as_ref()?, |_| {
            check_watch_tag(oci.as_ref(), Some(every)).map(|()| every)
        })
    });
    // A pulled component's path is filled in by its first pull.
    let component = match oci {
        Some(_) => PathBuf::new(),
        None => base.join(app.component.get_ref()),
    };
    let source = if Reference::is_oci(app.component.get_ref()) {
        None
    } else if Source::is_source(&component) {
        problems.check(&app.component, |_| {
            let reuse = app
                .reuse_instances
                .as_ref()
                .is_some_and(|n| *n.get_ref() > 1);
            Source::open(&component, &super::js_toolchains())
                .map(|source| source.for_reuse(reuse))
                .map_err(|e| format!("{e:#}"))
        })
    } else {
        problems.check(&app.component, |_| {
            check_component_file(&component).map_err(|e| format!("{e:#}"))
        });
        None
    };
    let listen = match &app.listen {
        None => default_listen.into_iter().collect(),
        Some(listen) => {
            let texts = match listen.get_ref() {
                Listen::One(one) => vec![one.clone()],
                Listen::Many(many) => many.clone(),
            };
            let mut addrs = Vec::new();
            for text in texts {
                match text.parse::<SocketAddr>() {
                    Ok(addr) => addrs.push(addr),
                    Err(e) => problems.at(listen.span().start, format!("listen `{text}`: {e}")),
                }
            }
            if addrs.is_empty() {
                problems.at(
                    listen.span().start,
                    "listen: name at least one address".into(),
                );
            }
            addrs
        }
    };
    let path = match &app.path {
        Some(path) if !path.get_ref().starts_with('/') => {
            problems.at(
                path.span().start,
                format!("path `{}` must start with `/`", path.get_ref()),
            );
            "/".to_string()
        }
        Some(path) => path.get_ref().clone(),
        None => "/".to_string(),
    };
    let mut dirs = Vec::new();
    for (guest, host) in &app.dirs {
        let dir = base.join(host.get_ref());
        if dir.is_dir() {
            dirs.push((dir, guest.clone()));
        } else {
            problems.at(
                host.span().start,
                format!("dirs: `{}` is not a directory", dir.display()),
            );
        }
    }
    let allow_http: Vec<String> = app
        .allow_http
        .iter()
        .filter_map(|h| problems.check(h, |s| parse_host_port(s)))
        .collect();
    let duration =
        |problems: &mut Problems<'_>, value: &Option<Spanned<String>>, default| match value {
            None => Some(default),
            Some(text) => problems.check(text, |s| match parse_duration(s) {
                Ok(d) if d.is_zero() => Err("must be greater than zero".into()),
                other => other,
            }),
        };
    let request_timeout = duration(problems, &app.request_timeout, Duration::from_secs(60));
    let drain_timeout = duration(problems, &app.drain_timeout, Duration::from_secs(30));
    let ready_timeout = duration(problems, &app.ready_timeout, Duration::from_secs(10));
    let defaults = Limits::default();
    let queue_timeout = duration(problems, &app.queue_timeout, defaults.queue_timeout);
    let hangup_grace = duration(problems, &app.hangup_grace, defaults.hangup_grace);
    let realtime = realtime_limits(problems, app);
    let grip_publish = match &app.grip_publish {
        None => Some(None),
        Some(url) => problems.check(url, |s| s.parse().map(Some)),
    };
    let max_memory = match &app.max_memory {
        Some(text) => problems.check(text, |s| parse_size(s)).map(Some),
        None => Some(None),
    };
    let max_body = match &app.max_body {
        Some(text) => problems
            .check(text, |s| parse_size(s))
            .map(|n| Some(n as u64)),
        None => Some(None),
    };
    let max_concurrency = match &app.max_concurrency {
        Some(n) => problems.check(n, |&n| match n {
            1..=900 => Ok(n as usize),
            _ => Err("must be from 1 to 900 (the instance pool has 1000 slots)".into()),
        }),
        None => Some(fair_share),
    };
    let reuse = match &app.reuse_instances {
        Some(n) => problems.check(n, |&n| match n {
            0 => Err("must be at least 1".into()),
            n => Ok(n),
        }),
        None => Some(1),
    };
    let p3_defaults = P3Settings::default();
    let at_least_one =
        |problems: &mut Problems<'_>, value: &Option<Spanned<u32>>, default| match value {
            Some(n) => problems.check(n, |&n| match n {
                0 => Err("must be at least 1".into()),
                n => Ok(n),
            }),
            None => Some(default),
        };
    let instance_concurrency =
        at_least_one(problems, &app.instance_concurrency, p3_defaults.concurrency);
    let instance_uses = at_least_one(problems, &app.instance_uses, p3_defaults.uses);
    let instance_idle = duration(problems, &app.instance_idle, p3_defaults.idle);
    let store = match &app.keyvalue {
        Some(text) => problems.check(text, |s| s.parse::<StoreChoice>()),
        None => Some(StoreChoice::default()),
    };
    let shared: Vec<String> = app
        .shared_buckets
        .iter()
        .filter_map(|b| {
            problems.check(b, |s| {
                check_bucket_name(s).map(str::to_string).map_err(|e| e.0)
            })
        })
        .collect();
    // Problems with the pair are reported at whichever key is given.
    let tls_at = app
        .tls_cert
        .as_ref()
        .or(app.tls_key.as_ref())
        .map_or(spanned.span().start, |given| given.span().start);
    let tls = match TlsFiles::from_pair(
        app.tls_cert.as_ref().map(|c| base.join(c.get_ref())),
        app.tls_key.as_ref().map(|k| base.join(k.get_ref())),
        "tls_cert",
        "tls_key",
    )
    .and_then(|pair| pair.map(absolute_tls).transpose())
    {
        Ok(Some(files)) => match files.load() {
            Ok(_) => Some(files),
            Err(e) => {
                problems.at(tls_at, format!("{e:#}"));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            problems.at(tls_at, format!("{e:#}"));
            None
        }
    };
    if problems.found.len() > before {
        return None;
    }
    Some(AppConfig {
        settings: AppSettings {
            name: name.to_string(),
            path: component,
            drain_timeout: drain_timeout?,
            version: VersionSettings {
                app: Arc::from(name),
                ready_timeout: ready_timeout?,
                request_timeout: request_timeout?,
                outgoing: OutgoingPolicy::new(&allow_http),
                reuse: reuse?,
                p3: P3Settings {
                    concurrency: instance_concurrency?,
                    uses: instance_uses?,
                    idle: instance_idle?,
                },
                env: app.env.clone().into_iter().collect(),
                dirs: dirs.into(),
                max_memory: max_memory?,
                config: app.config.clone().into_iter().collect(),
            },
            keyvalue: KvSettings {
                choice: store?,
                data_dir: data_dir.to_path_buf(),
                shared,
            },
            limits: Limits {
                max_concurrency: max_concurrency?,
                max_queue: app.max_queue.unwrap_or(defaults.max_queue),
                queue_timeout: queue_timeout?,
                max_body: max_body?,
                hangup_grace: hangup_grace?,
            },
            realtime: realtime?,
            grip_key: app.grip_key.as_deref().map(Arc::from),
            grip_publish: grip_publish?,
        },
        listen,
        route: Route {
            hosts: app.hosts.clone(),
            path,
        },
        // A pulled file never changes; a tag is watched with watch_tag.
        watch: app.watch.unwrap_or(true) && oci.is_none(),
        source,
        oci,
        watch_tag,
        tls,
        access_log: false,
    })
}

/// Apps that share an address must agree on TLS: one listener speaks
/// either TLS or cleartext, not both.
/// The `ws_*` keys of an app: bounds on its WebSocket connections.
fn realtime_limits(problems: &mut Problems<'_>, app: &AppSpec) -> Option<RealtimeLimits> {
    let d = RealtimeLimits::default();
    let count = |problems: &mut Problems<'_>, value: &Option<Spanned<u64>>, default| match value {
        None => Some(default),
        Some(n) => problems.check(n, |&n| match n {
            1..=1_000_000 => Ok(n as usize),
            _ => Err("must be from 1 to 1000000".into()),
        }),
    };
    let duration =
        |problems: &mut Problems<'_>, value: &Option<Spanned<String>>, default| match value {
            None => Some(default),
            Some(text) => problems.check(text, |s| match parse_duration(s) {
                Ok(d) if d.is_zero() => Err("must be greater than zero".into()),
                other => other,
            }),
        };
    let max_connections = count(problems, &app.ws_max_connections, d.max_connections);
    let send_queue = count(problems, &app.ws_send_queue, d.send_queue);
    let max_message = match &app.ws_max_message {
        None => Some(d.max_message),
        Some(text) => problems.check(text, |s| parse_size(s)),
    };
    let ping_interval = duration(problems, &app.ws_ping_interval, d.ping_interval);
    let idle_timeout = duration(problems, &app.ws_idle_timeout, d.idle_timeout);
    Some(RealtimeLimits {
        max_connections: max_connections?,
        max_message: max_message?,
        ping_interval: ping_interval?,
        idle_timeout: idle_timeout?,
        send_queue: send_queue?,
    })
}

fn check_tls(apps: &[(usize, AppConfig)], problems: &mut Problems<'_>) {
    for (i, (at, app)) in apps.iter().enumerate() {
        for (_, earlier) in &apps[..i] {
            let shared = app.listen.iter().find(|a| earlier.listen.contains(a));
            if let Some(addr) = shared
                && app.tls.is_some() != earlier.tls.is_some()
            {
                problems.at(
                    *at,
                    format!(
                        "apps `{}` and `{}` share {addr}, but only one has tls_cert/tls_key; a listener is either TLS or cleartext, so give both a pair or neither",
                        app.settings.name, earlier.settings.name
                    ),
                );
            }
        }
    }
}

/// Two apps on one address must not take exactly the same requests.
fn check_routes(apps: &[(usize, AppConfig)], problems: &mut Problems<'_>) {
    for (i, (at, app)) in apps.iter().enumerate() {
        for (_, earlier) in &apps[..i] {
            let shared = app.listen.iter().find(|a| earlier.listen.contains(a));
            if let Some(addr) = shared
                && app.route.same_as(&earlier.route)
            {
                problems.at(
                    *at,
                    format!(
                        "app `{}` takes the same requests on {addr} as app `{}`; give one of them `hosts` or `path`, or another `listen`",
                        app.settings.name, earlier.settings.name
                    ),
                );
            }
        }
    }
}

/// All apps together must fit the instance pool, so a busy host answers
/// 503 from a queue rather than failing instantiations.
fn check_pool(apps: &[(usize, AppConfig)], problems: &mut Problems<'_>) {
    let mut total = 0;
    for (at, app) in apps {
        total += app.settings.limits.max_concurrency;
        if total > POOL_BUDGET {
            problems.at(
                *at,
                format!(
                    "the apps' max_concurrency adds up to {total} here, more than the {POOL_BUDGET} requests the instance pool runs at once; lower some"
                ),
            );
            return;
        }
    }
}

/// Problems found so far, each as `file:line: what`.
struct Problems<'a> {
    text: &'a str,
    file: &'a Path,
    found: Vec<String>,
}

impl Problems<'_> {
    fn at(&mut self, offset: usize, what: String) {
        self.found.push(format!(
            "{}:{}: {what}",
            self.file.display(),
            line_of(self.text, offset)
        ));
    }

    /// Runs `check` on a value; records its complaint at the value's line.
    fn check<T, U>(
        &mut self,
        value: &Spanned<T>,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match check(value.get_ref()) {
            Ok(ok) => Some(ok),
            Err(why) => {
                self.at(value.span().start, why);
                None
            }
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<ServeConfig> {
        parse(text, &dir.join("wasm-host.toml"), &Overrides::default())
    }

    #[test]
    fn two_apps_with_routes_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"x").unwrap();
        std::fs::write(dir.path().join("b.wasm"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("static")).unwrap();
        let config = parse_in(
            dir.path(),
            r#"
listen = "127.0.0.1:9000"

[app.shop]
component = "b.wasm"
hosts = ["shop.test"]
env = { GREETING = "hi" }
dirs = { "/static" = "static" }
max_memory = "64MiB"
max_concurrency = 10
max_body = "1KiB"

[app.blog]
component = "a.wasm"
path = "/blog"
watch = false
"#,
        )
        .unwrap();
        let names: Vec<_> = config
            .apps
            .iter()
            .map(|a| a.settings.name.as_str())
            .collect();
        assert_eq!(names, ["shop", "blog"]);
        let shop = &config.apps[0];
        assert_eq!(shop.listen, ["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(shop.route.hosts, ["shop.test"]);
        assert_eq!(shop.settings.limits.max_concurrency, 10);
        assert_eq!(shop.settings.limits.max_body, Some(1024));
        assert_eq!(shop.settings.version.max_memory, Some(64 << 20));
        assert_eq!(shop.settings.version.dirs[0].1, "/static");
        assert_eq!(config.engine.max_memory, DEFAULT_MAX_MEMORY);
        assert!(!config.apps[1].watch);
        assert_eq!(config.apps[1].route.path, "/blog");
        // An app naming no limit gets a share of the pool.
        assert_eq!(config.apps[1].settings.limits.max_concurrency, 450);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"x").unwrap();
        let err = parse_in(
            dir.path(),
            r#"[app.one]
component = "a.wasm"

[app.two]
component = "missing.wasm"
request_timeout = "soon"
listen = "nowhere"

[app.three]
component = "a.wasm"
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("wasm-host.toml:5: "), "{err}");
        assert!(err.contains("missing.wasm does not exist"), "{err}");
        assert!(
            err.contains("wasm-host.toml:6: `soon` is not a duration"),
            "{err}"
        );
        assert!(err.contains("wasm-host.toml:7: listen `nowhere`"), "{err}");
        assert!(
            err.contains("wasm-host.toml:9: app `three` takes the same requests"),
            "{err}"
        );

        let err = parse_in(
            dir.path(),
            "[app.a]\ncomponent = \"a.wasm\"\nmax_concurrency = 600\n[app.b]\ncomponent = \"a.wasm\"\npath = \"/b\"\nmax_concurrency = 400\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("wasm-host.toml:4: the apps' max_concurrency adds up to 1000"),
            "{err}"
        );
    }

    #[test]
    fn oci_components_and_watched_tags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"x").unwrap();
        let config = parse_in(
            dir.path(),
            "[app.shop]\ncomponent = \"oci://127.0.0.1:5000/team/shop:v1\"\nwatch_tag = \"30s\"\n",
        )
        .unwrap();
        let shop = &config.apps[0];
        assert_eq!(shop.oci.as_ref().unwrap().tag.as_deref(), Some("v1"));
        assert_eq!(shop.watch_tag, Some(Duration::from_secs(30)));
        assert!(!shop.watch, "a pulled file is not watched");
        assert!(config.watch_config);

        let err = parse_in(
            dir.path(),
            "[app.a]\ncomponent = \"a.wasm\"\nwatch_tag = \"30s\"\n[app.b]\ncomponent = \"oci://reg.example/B:1\"\npath = \"/b\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("wasm-host.toml:3: watch_tag needs an oci:// component"),
            "{err}"
        );
        assert!(
            err.contains("wasm-host.toml:5: ") && err.contains("lowercase"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse_in(
            dir.path(),
            "[app.x]\ncomponent = \"a.wasm\"\nmax_memroy = \"1G\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("wasm-host.toml:3: unknown field `max_memroy`"),
            "{err}"
        );
        let err = parse_in(dir.path(), "[app.x\n").unwrap_err().to_string();
        assert!(err.contains("wasm-host.toml:1: "), "{err}");
        let err = parse_in(dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("no apps"), "{err}");
    }
}
