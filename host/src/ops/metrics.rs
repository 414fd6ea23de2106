//! Counters for operators, and their Prometheus text form.
//!
//! Recording is a handful of relaxed atomic adds on the request path: no
//! lock, no allocation, no label lookup per request. Rendering reads the
//! counters of whatever versions the caller passes in; this module never
//! reaches into the app or the engine itself.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why the host closed a connection (or cut off a request) on its own.
#[derive(Debug, Clone, Copy)]
pub enum Cutoff {
    /// The listener had `--max-connections` open already.
    MaxConnections = 0,
    /// No request head within `--header-timeout`.
    HeaderTimeout = 1,
    /// No byte and no request within `--idle-timeout`.
    IdleTimeout = 2,
    /// A request body fell behind `--body-timeout`.
    BodyTimeout = 3,
    /// A request line ended by a bare LF.
    BareLf = 4,
    /// Neither HTTP/1.x nor a valid HTTP/2 preface.
    NotHttp = 5,
    /// A first line longer than any request line.
    LineTooLong = 6,
    /// A request with more than one `Host` header.
    DuplicateHost = 7,
    /// A guest stopped because its client went away before the answer
    /// (after `--hangup-grace`).
    Hangup = 8,
}

impl Cutoff {
    const ALL: [(Cutoff, &'static str); 9] = [
        (Cutoff::MaxConnections, "max_connections"),
        (Cutoff::HeaderTimeout, "header_timeout"),
        (Cutoff::IdleTimeout, "idle_timeout"),
        (Cutoff::BodyTimeout, "body_timeout"),
        (Cutoff::BareLf, "bare_lf"),
        (Cutoff::NotHttp, "not_http"),
        (Cutoff::LineTooLong, "line_too_long"),
        (Cutoff::DuplicateHost, "duplicate_host"),
        (Cutoff::Hangup, "hangup"),
    ];
}

/// The connections of every listener: how many are open, and what the
/// host cut off. Process-wide, since listeners outlive the apps on them.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    open: AtomicU64,
    cut: [AtomicU64; Cutoff::ALL.len()],
}

/// The one set of connection counters.
pub static CONNECTIONS: ConnectionCounters = ConnectionCounters {
    open: AtomicU64::new(0),
    cut: [const { AtomicU64::new(0) }; Cutoff::ALL.len()],
};

impl ConnectionCounters {
    /// Counts one connection or request the host cut off.
    pub fn cut(&self, why: Cutoff) {
        self.cut[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts a connection open until the returned guard drops.
    pub fn opened(&'static self) -> OpenConnection {
        self.open.fetch_add(1, Relaxed);
        OpenConnection(self)
    }

    /// What was cut off for `why` so far.
    pub fn cut_count(&self, why: Cutoff) -> u64 {
        self.cut[why as usize].load(Relaxed)
    }
}

/// One open connection, counted while it lives.
#[derive(Debug)]
pub struct OpenConnection(&'static ConnectionCounters);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why a 0.3 instance was ended before its work was done, as metrics name
/// it; anything else counts as a trap.
const INSTANCE_ENDS: [&str; 3] = ["trap", "timeout", "drain_deadline"];

/// Counters of one version: its responses by status class, and for a 0.3
/// version its instances.
#[derive(Debug, Default)]
pub struct VersionCounters {
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    classes: [AtomicU64; 5],
    /// 0.3 instances made.
    instances: AtomicU64,
    /// 0.3 instances ended early, by [`INSTANCE_ENDS`].
    ended: [AtomicU64; INSTANCE_ENDS.len()],
    /// Requests that failed because their 0.3 instance was ended under
    /// them (by their own trap or timeout, or another request's).
    poisoned: AtomicU64,
    /// WebSocket messages it handled: from clients, and sent in its
    /// answers.
    messages: [AtomicU64; 2],
}

impl VersionCounters {
    /// Counts one 0.3 instance made.
    pub fn instance_started(&self) {
        self.instances.fetch_add(1, Relaxed);
    }

    /// Counts one 0.3 instance ended early, for `reason` (`trap`,
    /// `timeout` or `drain_deadline`).
    pub fn instance_ended(&self, reason: &str) {
        let at = INSTANCE_ENDS.iter().position(|r| *r == reason).unwrap_or(0);
        self.ended[at].fetch_add(1, Relaxed);
    }

    /// Counts one request failed by the end of its 0.3 instance.
    pub fn poisoned_request(&self) {
        self.poisoned.fetch_add(1, Relaxed);
    }

    /// 0.3 instances made so far.
    pub fn instances(&self) -> u64 {
        self.instances.load(Relaxed)
    }

    /// 0.3 instances ended early for `reason` so far.
    pub fn instances_ended(&self, reason: &str) -> u64 {
        INSTANCE_ENDS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |at| self.ended[at].load(Relaxed))
    }

    /// Counts one response with `status`.
    pub fn record(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.classes[class].fetch_add(1, Relaxed);
    }

    /// Responses with a status in class `n`xx (1 to 5).
    pub fn class(&self, n: usize) -> u64 {
        self.classes[n - 1].load(Relaxed)
    }

    /// Counts WebSocket messages this version handled: `received` from
    /// clients, `sent` in its answers.
    pub fn websocket_messages(&self, received: usize, sent: usize) {
        self.messages[0].fetch_add(received as u64, Relaxed);
        self.messages[1].fetch_add(sent as u64, Relaxed);
    }

    /// WebSocket messages handled so far: (received, sent).
    pub fn messages(&self) -> (u64, u64) {
        (
            self.messages[0].load(Relaxed),
            self.messages[1].load(Relaxed),
        )
    }

    /// Responses of every class.
    pub fn total(&self) -> u64 {
        self.classes.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Counters of one app, across its versions.
#[derive(Debug, Default)]
pub struct AppMetrics {
    latency: Histogram,
    reloads_ok: AtomicU64,
    reloads_unchanged: AtomicU64,
    reloads_refused: AtomicU64,
    drains: AtomicU64,
    drain_ms: AtomicU64,
    forced_ends: AtomicU64,
    /// Requests turned away by a limit, by [`Rejection`].
    rejected: [AtomicU64; 3],
}

/// Why a request was turned away before a guest ran it.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// Every turn taken and the queue full.
    Busy = 0,
    /// No turn within the queue timeout.
    QueueTimeout = 1,
    /// The body was over the limit.
    BodyTooLarge = 2,
}

impl Rejection {
    const ALL: [(Rejection, &'static str); 3] = [
        (Rejection::Busy, "busy"),
        (Rejection::QueueTimeout, "queue_timeout"),
        (Rejection::BodyTooLarge, "body_too_large"),
    ];
}

impl AppMetrics {
    /// Counts a request turned away by a limit.
    pub fn rejected(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Relaxed);
    }

    /// Records how long a request took to get its response head.
    pub fn observe_latency(&self, elapsed: Duration) {
        self.latency.observe(elapsed);
    }

    /// Records a reload's outcome.
    pub fn reloaded(&self, ok: bool, unchanged: bool) {
        let counter = match (ok, unchanged) {
            (false, _) => &self.reloads_refused,
            (true, true) => &self.reloads_unchanged,
            (true, false) => &self.reloads_ok,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Reloads so far: (went live, found unchanged, refused).
    pub fn reloads(&self) -> (u64, u64, u64) {
        (
            self.reloads_ok.load(Relaxed),
            self.reloads_unchanged.load(Relaxed),
            self.reloads_refused.load(Relaxed),
        )
    }

    /// Records a finished drain: its length, and the work it had to end.
    pub fn drained(&self, elapsed: Duration, forced: u64) {
        self.drains.fetch_add(1, Relaxed);
        self.drain_ms.fetch_add(elapsed.as_millis() as u64, Relaxed);
        self.forced_ends.fetch_add(forced, Relaxed);
    }
}

#[derive(Debug, Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when
    /// rendered).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }
}

/// What the renderer needs to know of one version.
pub struct VersionView<'a> {
    /// Its generation.
    pub generation: u64,
    /// `live`, `canary`, `draining` or `retired`.
    pub state: &'a str,
    /// Short content digest.
    pub digest: String,
    /// The WASI world it serves: `0.2` or `0.3`.
    pub world: &'static str,
    /// Its 0.3 instances alive now.
    pub instances: usize,
    /// Requests and background work running now.
    pub in_flight: usize,
    /// Its counters.
    pub counters: &'a VersionCounters,
}

/// Slots of one engine's pooling allocator in use.
pub struct PoolView {
    /// `optimized` or `baseline`.
    pub tier: &'static str,
    /// Core instances allocated.
    pub core_instances: u64,
    /// Linear memories allocated.
    pub memories: usize,
    /// Tables allocated.
    pub tables: usize,
}

/// What the renderer needs to know of one app.
pub struct AppView<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its counters.
    pub metrics: &'a AppMetrics,
    /// Its versions alive now.
    pub versions: Vec<VersionView<'a>>,
    /// Its held connections and channels.
    pub held: crate::ops::held_metrics::HeldView,
}

/// Renders everything in the Prometheus text exposition format (0.0.4).
pub fn render(apps: &[AppView<'_>], pools: &[PoolView], ready: bool) -> String {
    let mut out = String::with_capacity(4096);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };

    family(
        &mut out,
        "wasm_host_ready",
        "gauge",
        "1 while the host takes traffic, 0 once it shuts down.",
    );
    let _ = writeln!(out, "wasm_host_ready {}", u8::from(ready));

    family(
        &mut out,
        "wasm_host_connections_open",
        "gauge",
        "Client connections open now, on every listener.",
    );
    let _ = writeln!(
        out,
        "wasm_host_connections_open {}",
        CONNECTIONS.open.load(Relaxed)
    );
    family(
        &mut out,
        "wasm_host_cutoffs_total",
        "counter",
        "Connections closed or requests cut off by the host's connection limits, by reason.",
    );
    for (why, reason) in Cutoff::ALL {
        let _ = writeln!(
            out,
            "wasm_host_cutoffs_total{{reason=\"{reason}\"}} {}",
            CONNECTIONS.cut_count(why)
        );
    }

    family(
        &mut out,
        "wasm_host_version_info",
        "gauge",
        "The versions alive now, by state.",
    );
    for (app, v) in each_version(apps) {
        let _ = writeln!(
            out,
            "wasm_host_version_info{{app=\"{app}\",generation=\"{}\",state=\"{}\",digest=\"{}\",world=\"{}\"}} 1",
            v.generation, v.state, v.digest, v.world
        );
    }

    family(
        &mut out,
        "wasm_host_instances_total",
        "counter",
        "WASI 0.3 instances made, by version (0.2 versions make one per request, or per --reuse-instances requests).",
    );
    for (app, v) in each_version(apps).filter(|(_, v)| v.world == "0.3") {
        let _ = writeln!(
            out,
            "wasm_host_instances_total{{app=\"{app}\",generation=\"{}\"}} {}",
            v.generation,
            v.counters.instances()
        );
    }
    family(
        &mut out,
        "wasm_host_instances_alive",
        "gauge",
        "WASI 0.3 instances alive now, by version (idle ones included, and ones finishing work after their responses).",
    );
    for (app, v) in each_version(apps).filter(|(_, v)| v.world == "0.3") {
        let _ = writeln!(
            out,
            "wasm_host_instances_alive{{app=\"{app}\",generation=\"{}\"}} {}",
            v.generation, v.instances
        );
    }
    family(
        &mut out,
        "wasm_host_instances_ended_total",
        "counter",
        "WASI 0.3 instances ended before their work was done, by version and reason (trap, timeout, drain_deadline).",
    );
    for (app, v) in each_version(apps).filter(|(_, v)| v.world == "0.3") {
        for reason in INSTANCE_ENDS {
            let _ = writeln!(
                out,
                "wasm_host_instances_ended_total{{app=\"{app}\",generation=\"{}\",reason=\"{reason}\"}} {}",
                v.generation,
                v.counters.instances_ended(reason)
            );
        }
    }
    family(
        &mut out,
        "wasm_host_instance_failed_requests_total",
        "counter",
        "Requests that failed because their WASI 0.3 instance was ended under them, by version.",
    );
    for (app, v) in each_version(apps).filter(|(_, v)| v.world == "0.3") {
        let _ = writeln!(
            out,
            "wasm_host_instance_failed_requests_total{{app=\"{app}\",generation=\"{}\"}} {}",
            v.generation,
            v.counters.poisoned.load(Relaxed)
        );
    }

    family(
        &mut out,
        "wasm_host_requests_total",
        "counter",
        "Responses by version and status class.",
    );
    for (app, v) in each_version(apps) {
        for n in 1..=5 {
            let _ = writeln!(
                out,
                "wasm_host_requests_total{{app=\"{app}\",generation=\"{}\",class=\"{n}xx\"}} {}",
                v.generation,
                v.counters.class(n)
            );
        }
    }

    family(
        &mut out,
        "wasm_host_version_websocket_messages_total",
        "counter",
        "WebSocket messages a version handled: `in` from clients, `out` in its answers.",
    );
    for (app, v) in each_version(apps) {
        let (received, sent) = v.counters.messages();
        for (direction, n) in [("in", received), ("out", sent)] {
            let _ = writeln!(
                out,
                "wasm_host_version_websocket_messages_total{{app=\"{app}\",generation=\"{}\",direction=\"{direction}\"}} {n}",
                v.generation
            );
        }
    }

    family(
        &mut out,
        "wasm_host_in_flight",
        "gauge",
        "Requests and background work running, by version.",
    );
    for (app, v) in each_version(apps) {
        let _ = writeln!(
            out,
            "wasm_host_in_flight{{app=\"{app}\",generation=\"{}\"}} {}",
            v.generation, v.in_flight
        );
    }

    family(
        &mut out,
        "wasm_host_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its response head.",
    );
    for a in apps {
        let app = escape(a.name);
        let h = &a.metrics.latency;
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "wasm_host_request_duration_seconds_bucket{{app=\"{app}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(
            out,
            "wasm_host_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {count}\n\
             wasm_host_request_duration_seconds_sum{{app=\"{app}\"}} {}\n\
             wasm_host_request_duration_seconds_count{{app=\"{app}\"}} {count}",
            h.sum_us.load(Relaxed) as f64 / 1e6
        );
    }

    family(
        &mut out,
        "wasm_host_reloads_total",
        "counter",
        "Reloads by outcome.",
    );
    for a in apps {
        let app = escape(a.name);
        let m = a.metrics;
        for (outcome, counter) in [
            ("ok", &m.reloads_ok),
            ("unchanged", &m.reloads_unchanged),
            ("refused", &m.reloads_refused),
        ] {
            let _ = writeln!(
                out,
                "wasm_host_reloads_total{{app=\"{app}\",outcome=\"{outcome}\"}} {}",
                counter.load(Relaxed)
            );
        }
    }

    family(
        &mut out,
        "wasm_host_rejected_total",
        "counter",
        "Requests turned away by a limit before a guest ran, by reason.",
    );
    for a in apps {
        let app = escape(a.name);
        for (why, reason) in Rejection::ALL {
            let _ = writeln!(
                out,
                "wasm_host_rejected_total{{app=\"{app}\",reason=\"{reason}\"}} {}",
                a.metrics.rejected[why as usize].load(Relaxed)
            );
        }
    }

    for (name, help, value) in [
        (
            "wasm_host_drains_total",
            "Versions drained and retired.",
            (|m: &AppMetrics| m.drains.load(Relaxed) as f64) as fn(&AppMetrics) -> f64,
        ),
        (
            "wasm_host_drain_seconds_total",
            "Time spent draining, summed over drains.",
            |m: &AppMetrics| m.drain_ms.load(Relaxed) as f64 / 1e3,
        ),
        (
            "wasm_host_forced_ends_total",
            "Pieces of work ended by a drain deadline.",
            |m: &AppMetrics| m.forced_ends.load(Relaxed) as f64,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for a in apps {
            let _ = writeln!(
                out,
                "{name}{{app=\"{}\"}} {}",
                escape(a.name),
                value(a.metrics)
            );
        }
    }

    for (name, help, value) in [
        (
            "wasm_host_pool_core_instances",
            "Pooling-allocator core instance slots in use.",
            (|p: &PoolView| p.core_instances as usize) as fn(&PoolView) -> usize,
        ),
        (
            "wasm_host_pool_memories",
            "Pooling-allocator memory slots in use.",
            |p: &PoolView| p.memories,
        ),
        (
            "wasm_host_pool_tables",
            "Pooling-allocator table slots in use.",
            |p: &PoolView| p.tables,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for pool in pools {
            let _ = writeln!(out, "{name}{{tier=\"{}\"}} {}", pool.tier, value(pool));
        }
    }
    render_refused(&mut out);
    let held: Vec<_> = apps.iter().map(|a| (escape(a.name), a.held)).collect();
    crate::ops::held_metrics::render(&mut out, &held);
    out
}

/// What the control plane turned away, host-wide: odd component files and
/// misbehaving control clients. Not per app: most are refused before any
/// app is named.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    /// A component path that is a FIFO, device, socket or directory.
    ComponentNotRegular = 0,
    /// A component file over `--max-component-size`.
    ComponentTooLarge = 1,
    /// A component read that did not finish in time.
    ComponentReadTimeout = 2,
    /// A control request line over the cap.
    ControlLineTooLong = 3,
    /// A control client that did not send its request in time.
    ControlClientSlow = 4,
    /// A control client run by another user.
    ControlPeerUser = 5,
}

impl Refused {
    const ALL: [(Refused, &'static str); 6] = [
        (Refused::ComponentNotRegular, "component_not_regular_file"),
        (Refused::ComponentTooLarge, "component_too_large"),
        (Refused::ComponentReadTimeout, "component_read_timeout"),
        (Refused::ControlLineTooLong, "control_line_too_long"),
        (Refused::ControlClientSlow, "control_client_slow"),
        (Refused::ControlPeerUser, "control_peer_other_user"),
    ];
}

static REFUSED: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

/// Counts one thing the control plane turned away.
pub fn refused(why: Refused) {
    REFUSED[why as usize].fetch_add(1, Relaxed);
}

/// Renders the host-wide refusal counters.
fn render_refused(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP wasm_host_control_refused_total Component reads and control requests turned away by a limit, by reason.\n# TYPE wasm_host_control_refused_total counter"
    );
    for (why, reason) in Refused::ALL {
        let _ = writeln!(
            out,
            "wasm_host_control_refused_total{{reason=\"{reason}\"}} {}",
            REFUSED[why as usize].load(Relaxed)
        );
    }
}

/// Every version of every app, with its app's escaped name.
fn each_version<'a>(
    apps: &'a [AppView<'a>],
) -> impl Iterator<Item = (String, &'a VersionView<'a>)> {
    apps.iter()
        .flat_map(|a| a.versions.iter().map(move |v| (escape(a.name), v)))
}

/// Escapes a label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_a_cumulative_histogram() {
        let metrics = AppMetrics::default();
        metrics.observe_latency(Duration::from_micros(300));
        metrics.observe_latency(Duration::from_millis(3));
        metrics.observe_latency(Duration::from_secs(60));
        metrics.reloaded(true, false);
        metrics.reloaded(false, false);
        metrics.drained(Duration::from_millis(1500), 2);
        let counters = VersionCounters::default();
        counters.record(http::StatusCode::OK);
        counters.record(http::StatusCode::OK);
        counters.record(http::StatusCode::GATEWAY_TIMEOUT);
        let versions = [VersionView {
            generation: 2,
            state: "live",
            digest: "abc".into(),
            world: "0.3",
            instances: 1,
            in_flight: 1,
            counters: &counters,
        }];
        let apps = [AppView {
            name: "sh\"op",
            metrics: &metrics,
            versions: versions.into(),
            held: crate::ops::held_metrics::HeldView {
                open: 3,
                ..Default::default()
            },
        }];
        let text = render(&apps, &[], true);
        for line in [
            "wasm_host_ready 1",
            r#"wasm_host_websockets_open{app="sh\"op"} 3"#,
            r#"wasm_host_requests_total{app="sh\"op",generation="2",class="2xx"} 2"#,
            r#"wasm_host_requests_total{app="sh\"op",generation="2",class="5xx"} 1"#,
            r#"wasm_host_request_duration_seconds_bucket{app="sh\"op",le="0.0005"} 1"#,
            r#"wasm_host_request_duration_seconds_bucket{app="sh\"op",le="0.005"} 2"#,
            r#"wasm_host_request_duration_seconds_bucket{app="sh\"op",le="10"} 2"#,
            r#"wasm_host_request_duration_seconds_bucket{app="sh\"op",le="+Inf"} 3"#,
            r#"wasm_host_request_duration_seconds_count{app="sh\"op"} 3"#,
            r#"wasm_host_reloads_total{app="sh\"op",outcome="refused"} 1"#,
            r#"wasm_host_drain_seconds_total{app="sh\"op"} 1.5"#,
            r#"wasm_host_forced_ends_total{app="sh\"op"} 2"#,
            r#"wasm_host_in_flight{app="sh\"op",generation="2"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
