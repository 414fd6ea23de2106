//! The benchmark report: a Markdown file with the measured tables and ratio
//! lines, and an SVG chart of throughput and p99 over the reload storm.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::load::{BUCKET, LoadResult};

mod targets;
mod throughput;

/// One throughput measurement.
pub struct Summary {
    /// Successful requests per second.
    pub rps: f64,
    /// Latency percentiles, ms.
    pub p50: f64,
    /// See `p50`.
    pub p99: f64,
    /// See `p50`.
    pub p999: f64,
    /// Failed requests.
    pub errors: u64,
}

impl From<&LoadResult> for Summary {
    fn from(r: &LoadResult) -> Self {
        Self {
            rps: r.rps(),
            p50: r.ms(0.5),
            p99: r.ms(0.99),
            p999: r.ms(0.999),
            errors: r.errors,
        }
    }
}

/// What the reload storm showed.
struct Storm {
    rest_p99: f64,
    storm_p99: f64,
    rest_rps: f64,
    storm_rps: f64,
    errors: u64,
    reloads: usize,
    latency_ms: Vec<f64>,
    command_ms: Vec<f64>,
    cold_ms: Vec<f64>,
    disk_ms: Vec<f64>,
    chart: String,
}

/// Cold reloads of a large component under load.
pub struct Cold {
    /// Which component, as the report names it.
    pub label: String,
    /// What the app served before each reload, for the report.
    pub traffic: String,
    /// Component size in bytes.
    pub size: u64,
    /// One entry per never-seen version reloaded.
    pub trials: Vec<ColdTrial>,
    /// Median `wasmtime compile` wall time with Cranelift and with Winch,
    /// on a quiet machine.
    pub reference: Option<(Option<Duration>, Option<Duration>)>,
}

impl Cold {
    /// Median over the trials of the time from the reload command to the
    /// new version's first answer.
    pub fn median_serving(&self) -> Option<Duration> {
        median(
            self.trials
                .iter()
                .filter_map(|t| t.serving)
                .map(|d| d.as_secs_f64()),
        )
        .map(Duration::from_secs_f64)
    }

    /// Median over the trials of time-to-serve over Winch's compile time.
    pub fn serving_over_winch(&self) -> Option<f64> {
        let (_, Some(winch)) = self.reference? else {
            return None;
        };
        median(
            self.trials
                .iter()
                .filter_map(|t| t.serving)
                .map(|d| d.as_secs_f64() / winch.as_secs_f64()),
        )
    }

    /// Median over the trials of p99 while compiling over p99 at rest.
    pub fn p99_ratio(&self) -> Option<f64> {
        median(
            self.trials
                .iter()
                .map(|t| t.compiling_p99_ms / t.rest_p99_ms.max(0.001)),
        )
    }
}

/// One cold reload of a large component under load.
pub struct ColdTrial {
    /// Host-side time to compile and link the code it went live on.
    pub compile_ms: u64,
    /// From the reload command to the first answer of the new version.
    pub serving: Option<Duration>,
    /// p99 of the other traffic before the reload.
    pub rest_p99_ms: f64,
    /// p99 of the other traffic until the reload answered.
    pub compiling_p99_ms: f64,
    /// From the reload command to optimized code serving.
    pub optimized_after: Option<Duration>,
    /// p99 of the traffic while optimized code compiled in the background.
    pub optimizing_p99_ms: Option<f64>,
    /// Failed requests during the trial.
    pub errors: u64,
}

/// Which WASI the servers of a throughput run were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wasi {
    /// The 0.2 hello (`wasi:http/proxy`).
    P2,
    /// The 0.3 hello (`wasi:http/service`).
    P3,
}

impl Wasi {
    /// A short name for the console.
    pub fn label(self) -> &'static str {
        match self {
            Wasi::P2 => "0.2",
            Wasi::P3 => "0.3",
        }
    }
}

/// Everything measured, in the order it was measured.
pub struct Report {
    setup: String,
    notes: Vec<String>,
    command: String,
    p2: throughput::Table,
    p3: throughput::Table,
    storm: Option<Storm>,
    memory: Option<(u64, u64, usize, Duration)>,
    cold: Vec<Cold>,
    keyvalue: Vec<KvRun>,
    upgrade: Vec<crate::upgrade::Change>,
    realtime: Option<crate::realtime::Realtime>,
    javascript: Option<crate::javascript::Javascript>,
}

/// Increments through the `counter` example on one key-value backend.
pub struct KvRun {
    /// The backend.
    pub backend: String,
    /// Successful increments per second.
    pub rps: f64,
    /// Latency median and p99, ms.
    pub p50: f64,
    /// See `p50`.
    pub p99: f64,
    /// Failed requests.
    pub errors: u64,
    /// Increments answered with 200.
    pub answered: u64,
    /// The count the store held afterwards.
    pub stored: u64,
}

impl Report {
    /// A report for runs of `duration` with `connections` connections.
    pub fn new(duration: &Duration, connections: usize, rounds: usize, wrk: bool) -> Self {
        let client = if wrk {
            "throughput measured with `wrk -t1`, the reload sections with the benchmark's own client (one thread)"
        } else {
            "every section measured with the benchmark's own client (one thread); install `wrk` for leaner throughput runs"
        };
        Self {
            setup: format!(
                "{connections} connections, {duration:?} per run, {rounds} rounds alternating the order, {client}, all on 127.0.0.1, on a {}-core machine",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0)
            ),
            notes: Vec::new(),
            command: "cargo run --release -p wasm-host-bench".into(),
            p2: Default::default(),
            p3: Default::default(),
            storm: None,
            memory: None,
            keyvalue: Vec::new(),
            upgrade: Vec::new(),
            realtime: None,
            javascript: None,
            cold: Vec::new(),
        }
    }

    /// Adds a note shown under the tables.
    pub fn note(&mut self, text: &str) {
        self.notes.push(text.to_string());
    }

    /// Sets the command line the report says it came from.
    pub fn command(&mut self, line: &str) {
        self.command = line.to_string();
    }

    /// Records one throughput run of a server in the `wasi` group.
    pub fn throughput(&mut self, wasi: Wasi, name: &str, keep_alive: bool, run: Summary) {
        match wasi {
            Wasi::P2 => &mut self.p2,
            Wasi::P3 => &mut self.p3,
        }
        .record(name, keep_alive, run);
    }

    /// Records the reload storm.
    #[allow(clippy::too_many_arguments)]
    pub fn storm(
        &mut self,
        r: &LoadResult,
        rest: Duration,
        latencies: &[Duration],
        commands: &[Duration],
        cold: &[Duration],
        disk: &[Duration],
        reloads: usize,
        marks: &[Duration],
    ) {
        let at_rest = r.window(Duration::ZERO, rest);
        let stormy = r.window(rest, rest * 2);
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        self.storm = Some(Storm {
            rest_p99: at_rest.value_at_quantile(0.99) as f64 / 1000.0,
            storm_p99: stormy.value_at_quantile(0.99) as f64 / 1000.0,
            rest_rps: at_rest.len() as f64 / rest.as_secs_f64(),
            storm_rps: stormy.len() as f64 / rest.as_secs_f64(),
            errors: r.errors,
            reloads,
            latency_ms: latencies.iter().map(ms).collect(),
            command_ms: commands.iter().map(ms).collect(),
            cold_ms: cold.iter().map(ms).collect(),
            disk_ms: disk.iter().map(ms).collect(),
            chart: chart(r, marks),
        });
    }

    /// Records the cold reloads of one large component.
    pub fn cold(&mut self, cold: Cold) {
        self.cold.push(cold);
    }

    /// Records one key-value backend's run.
    pub fn upgrade(&mut self, changes: Vec<crate::upgrade::Change>) {
        self.upgrade = changes;
    }

    pub fn keyvalue(&mut self, run: KvRun) {
        self.keyvalue.push(run);
    }

    /// Records the WebSocket section.
    pub fn realtime(&mut self, realtime: crate::realtime::Realtime) {
        self.realtime = Some(realtime);
    }

    /// Records the JavaScript section.
    pub fn javascript(&mut self, javascript: crate::javascript::Javascript) {
        self.javascript = Some(javascript);
    }

    /// Records the memory readings.
    pub fn memory(&mut self, after_one: u64, after_many: u64, reloads: usize, took: Duration) {
        self.memory = Some((after_one, after_many, reloads, took));
    }

    /// Writes `REPORT.md` and `storm.svg` into `dir`, and prints the summary.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let mut md = String::new();
        writeln!(md, "# wasm-host benchmark\n\nSetup: {}.\n", self.setup)?;
        writeln!(md, "Command: `{}`\n", self.command)?;
        self.targets(&mut md)?;
        for keep_alive in [true, false] {
            if self.p2.is_empty() && self.p3.is_empty() {
                break;
            }
            let mode = if keep_alive {
                "keep-alive connections"
            } else {
                "a new connection per request"
            };
            writeln!(md, "## Throughput, {mode}\n")?;
            if !self.p2.is_empty() {
                writeln!(md, "### WASI 0.2 (`hello`, `wasi:http/proxy`)\n")?;
                self.p2.write(&mut md, keep_alive)?;
                // Fresh instance per request against the others; reuse
                // against reuse.
                let fresh = |n: &&String| !n.contains("reuse");
                self.p2.ratios(&mut md, "wasm-host", keep_alive, fresh)?;
                let reuse = |n: &&String| n.contains("reuse");
                self.p2
                    .ratios(&mut md, "wasm-host, instance reuse", keep_alive, reuse)?;
                writeln!(md)?;
            }
            if !self.p3.is_empty() {
                writeln!(
                    md,
                    "### WASI 0.3 (`hello-p3-plain`, `wasi:http/service`), each server with its defaults\n"
                )?;
                writeln!(
                    md,
                    "The same component in both hosts. Both run many requests at once on one instance: wasm-host up to 16 and replaces the instance after 1000 requests, `wasmtime serve` up to 16 and after 128.\n"
                )?;
                self.p3.write(&mut md, keep_alive)?;
                self.p3.ratios(&mut md, "wasm-host", keep_alive, |_| true)?;
                writeln!(md)?;
            }
        }
        if let Some(s) = &self.storm {
            writeln!(md, "## Reloads under load\n")?;
            writeln!(md, "| | value |\n|---|---:|")?;
            writeln!(md, "| reloads during the storm | {} |", s.reloads)?;
            writeln!(md, "| errors | {} |", s.errors)?;
            writeln!(
                md,
                "| req/s at rest / during storm | {:.0} / {:.0} |",
                s.rest_rps, s.storm_rps
            )?;
            writeln!(
                md,
                "| p99 at rest / during storm (ms) | {:.2} / {:.2} ({:.2}×) |",
                s.rest_p99,
                s.storm_p99,
                s.storm_p99 / s.rest_p99.max(0.001)
            )?;
            writeln!(
                md,
                "| reload latency p50 / p99 / max (ms): command sent → first response from the new version | {} |",
                quantiles(&s.latency_ms)
            )?;
            writeln!(
                md,
                "| time the host spent on each reload, from taking it up to the swap, p50 / p99 / max (ms), recent version kept linked in memory | {} |",
                quantiles(&s.command_ms)
            )?;
            writeln!(
                md,
                "| cold reload (compile) p50 / p99 / max (ms), host side, {} never-seen versions, no load | {} |",
                s.cold_ms.len(),
                quantiles(&s.cold_ms)
            )?;
            writeln!(
                md,
                "| reload from the on-disk code cache p50 / p99 / max (ms), host side, {} versions, no load | {} |",
                s.disk_ms.len(),
                quantiles(&s.disk_ms)
            )?;
            writeln!(
                md,
                "\n![throughput and p99 during the reload storm](storm.svg)\n"
            )?;
            std::fs::write(dir.join("storm.svg"), &s.chart)?;
        }
        if !self.cold.is_empty() {
            cold_section(&mut md, &self.cold)?;
        }
        if let Some((one, many, n, took)) = self.memory {
            writeln!(md, "## Memory\n")?;
            writeln!(md, "| | RSS |\n|---|---:|")?;
            writeln!(md, "| after 1 reload | {} KiB |", one)?;
            writeln!(
                md,
                "| after {n} more reloads | {} KiB ({:.2}×) |",
                many,
                many as f64 / one as f64
            )?;
            writeln!(
                md,
                "\n{n} reloads took {took:.1?} ({:.2} ms each).\n",
                took.as_secs_f64() * 1000.0 / n as f64
            )?;
        }
        if !self.keyvalue.is_empty() {
            writeln!(
                md,
                "## Key-value increments (`counter` example, `GET /`, keep-alive)\n"
            )?;
            writeln!(
                md,
                "| backend | increments/s | p50 ms | p99 ms | errors | answered | count stored after |\n|---|---:|---:|---:|---:|---:|---:|"
            )?;
            for k in &self.keyvalue {
                writeln!(
                    md,
                    "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
                    k.backend, k.rps, k.p50, k.p99, k.errors, k.answered, k.stored
                )?;
            }
            writeln!(
                md,
                "\nEvery increment is one atomic host call; the embedded backend acknowledges only after a durable (fsync'ed) commit, grouping the increments that arrive together into one commit.\n"
            )?;
        }
        if !self.upgrade.is_empty() {
            writeln!(
                md,
                "## Replacing the host binary under load (`hello`, fresh-connection and keep-alive clients)\n"
            )?;
            writeln!(
                md,
                "| how | change took ms | failed (fresh / keep-alive) | longest wait within 2 s, ms (fresh / keep-alive) | longest wait at rest, ms | answered |\n|---|---:|---:|---:|---:|---:|"
            )?;
            for c in &self.upgrade {
                writeln!(
                    md,
                    "| {} | {:.0} | {} / {} | {:.1} / {:.1} | {:.1} | {} |",
                    c.how,
                    c.took.as_secs_f64() * 1000.0,
                    c.errors.0,
                    c.errors.1,
                    c.longest_ms.0,
                    c.longest_ms.1,
                    c.rest_ms,
                    c.answered
                )?;
            }
            writeln!(
                md,
                "\n`upgrade` is `wasm-host upgrade`; `restart` stops the host with SIGTERM and starts it again on the same address, as `systemctl restart` does. The keep-alive client opens a new connection when the server closed its connection between requests (as pooled clients do); any request sent and not answered 200 counts as failed.\n"
            )?;
        }
        if let Some(realtime) = &self.realtime {
            realtime.write(&mut md)?;
        }
        if let Some(javascript) = &self.javascript {
            javascript.write(&mut md)?;
        }
        for note in &self.notes {
            writeln!(md, "> {note}\n")?;
        }
        std::fs::write(dir.join("REPORT.md"), &md)?;
        println!("\n{md}");
        Ok(())
    }
}

/// Milliseconds of `d`, or `n/a`.
fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "n/a".into())
}

/// The median of `values`, if any.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// One line per measure: the median over the rounds of `ours` over
/// `peer`, with the lowest and highest round.
pub(crate) fn ratio_lines(
    md: &mut String,
    ours: &str,
    peer: &str,
    measures: &[(&str, Vec<f64>)],
) -> Result<()> {
    for (what, rounds) in measures {
        if let Some(mid) = median(rounds.iter().copied()) {
            let low = rounds.iter().copied().fold(f64::INFINITY, f64::min);
            let high = rounds.iter().copied().fold(0.0, f64::max);
            writeln!(
                md,
                "- {what}, {ours} / {peer}: **{mid:.2}×** (median of {} rounds; lowest {low:.2}×, highest {high:.2}×)",
                rounds.len()
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}

/// Writes the cold-reload section: the components side by side, then for
/// each one row per trial and the medians against Winch's compile time.
fn cold_section(md: &mut String, all: &[Cold]) -> Result<()> {
    writeln!(md, "## Cold reload of a large component, under load\n")?;
    writeln!(
        md,
        "Each trial reloads a never-seen version of the component (nothing cached) while keep-alive clients load the app; the host serves it first on quickly compiled (Winch) code and switches to optimized code compiled in the background.\n"
    )?;
    if all.len() > 1 {
        writeln!(
            md,
            "| component | size MB | command → first answer, median (ms) | `wasmtime compile` with Winch (ms) | first answer / Winch | p99 at rest → while compiling, median (ms) | while compiling / at rest |\n|---|---:|---:|---:|---:|---:|---:|"
        )?;
        for c in all {
            let winch = c.reference.and_then(|(_, winch)| winch);
            let times = |x: Option<f64>| x.map_or("n/a".into(), |x| format!("{x:.2}×"));
            writeln!(
                md,
                "| {} | {:.1} | {} | {} | {} | {:.2} → {:.2} | {} |",
                c.label,
                c.size as f64 / 1e6,
                ms(c.median_serving()),
                ms(winch),
                times(c.serving_over_winch()),
                median(c.trials.iter().map(|t| t.rest_p99_ms)).unwrap_or(0.0),
                median(c.trials.iter().map(|t| t.compiling_p99_ms)).unwrap_or(0.0),
                times(c.p99_ratio()),
            )?;
        }
        writeln!(md)?;
    }
    for c in all {
        cold_component(md, c)?;
    }
    Ok(())
}

/// One component's trials and medians.
fn cold_component(md: &mut String, c: &Cold) -> Result<()> {
    writeln!(md, "### {}\n", c.label)?;
    writeln!(
        md,
        "Component size {:.1} MB; the other traffic is {}.\n",
        c.size as f64 / 1e6,
        c.traffic
    )?;
    writeln!(
        md,
        "| trial | compile in host (ms) | command → first answer (ms) | p99 at rest (ms) | p99 while compiling (ms) | command → optimized code (ms) | p99 while optimizing (ms) | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let ratio = |x: f64, rest: f64| format!("{x:.2} ({:.2}×)", x / rest.max(0.001));
    for (n, t) in c.trials.iter().enumerate() {
        writeln!(
            md,
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} |",
            n + 1,
            t.compile_ms,
            ms(t.serving),
            t.rest_p99_ms,
            ratio(t.compiling_p99_ms, t.rest_p99_ms),
            ms(t.optimized_after),
            t.optimizing_p99_ms
                .map(|p| ratio(p, t.rest_p99_ms))
                .unwrap_or_else(|| "n/a".into()),
            t.errors
        )?;
    }
    writeln!(md)?;
    let Some((cranelift, Some(winch))) = c.reference else {
        writeln!(
            md,
            "`wasmtime` was not found, so there is no Winch compile time to compare with.\n"
        )?;
        return Ok(());
    };
    writeln!(
        md,
        "`wasmtime compile` of the same file on a quiet machine, median of 3: Cranelift {} ms, Winch {} ms.\n",
        ms(cranelift),
        ms(Some(winch))
    )?;
    let (serving, p99) = (c.serving_over_winch(), c.p99_ratio());
    if let (Some(serving), Some(p99)) = (serving, p99) {
        writeln!(
            md,
            "- serving the new version, median: **{serving:.2}×** Winch's compile time (target ≤ 2×)"
        )?;
        writeln!(
            md,
            "- p99 of other traffic while compiling, median: **{p99:.2}×** at rest (target ≤ 2×)\n"
        )?;
    }
    Ok(())
}

fn quantiles(values: &[f64]) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("{:.2} / {:.2} / {:.2}", at(0.5), at(0.99), v[v.len() - 1])
}

/// Requests/s (blue) and p99 (orange) per 100 ms bucket, reloads as ticks.
fn chart(r: &LoadResult, marks: &[Duration]) -> String {
    let (w, h, pad) = (900.0, 320.0, 50.0);
    let per_sec = 1000.0 / BUCKET.as_millis() as f64;
    // Only whole buckets: the last, partial one would read as a collapse.
    let whole = (r.elapsed.as_millis() / BUCKET.as_millis()) as usize;
    let timeline = &r.timeline[..whole.min(r.timeline.len())];
    let n = timeline.len().saturating_sub(1).max(1);
    let rps: Vec<f64> = timeline
        .iter()
        .map(|b| b.latency.len() as f64 * per_sec)
        .collect();
    let p99: Vec<f64> = timeline
        .iter()
        .map(|b| b.latency.value_at_quantile(0.99) as f64 / 1000.0)
        .collect();
    let max_rps = rps.iter().cloned().fold(1.0, f64::max);
    let max_p99 = p99.iter().cloned().fold(0.1, f64::max);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / n as f64;
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * v / max;
    let line = |vals: &[f64], max: f64| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v, max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let total = timeline.len() as f64 * BUCKET.as_secs_f64();
    for m in marks {
        let mx = pad + (w - 2.0 * pad) * (m.as_secs_f64() / total).min(1.0);
        let _ = writeln!(
            svg,
            "<line x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#ccc\"/>",
            pad,
            h - pad
        );
    }
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
        line(&rps, max_rps)
    );
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"1.5\" points=\"{}\"/>",
        line(&p99, max_p99)
    );
    for (i, b) in timeline.iter().enumerate().filter(|(_, b)| b.errors > 0) {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{}\" r=\"3\" fill=\"red\"><title>{} errors</title></circle>",
            x(i),
            h - pad,
            b.errors
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{pad}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        w - pad,
        h - pad,
        h - pad
    );
    let _ = writeln!(
        svg,
        "<text x=\"{pad}\" y=\"20\" fill=\"#1f77b4\">req/s (max {max_rps:.0})</text>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"20\" fill=\"#ff7f0e\">p99 ms (max {max_p99:.2})</text>",
        pad + 220.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"20\" fill=\"#888\">grey: reloads, red: errors</text>",
        pad + 440.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"{pad}\" y=\"{}\">0 s</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{total:.1} s</text>",
        h - pad + 18.0,
        w - pad,
        h - pad + 18.0
    );
    svg.push_str("</svg>\n");
    svg
}
