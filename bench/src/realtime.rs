//! WebSockets on the chat example: wasm-host against a Node `ws` server run
//! by PM2 in cluster mode (`bench/node-chat/`), with the same clients on
//! the same machine.
//!
//! - Messages per second: `--ws-clients` WebSockets, each sending `echo:`
//!   messages back to back (the next once the last is answered), for
//!   `--duration`, `--rounds` times alternating the order. Latency is per
//!   message, send to answer.
//! - What a reload costs connected clients: the same clients at a steady
//!   `--ws-rate` messages/s each for `--ws-reload-run`, with three reloads
//!   spaced through it (`wasm-host` reloads a newly stamped `chat.wasm`,
//!   PM2 reloads its workers with `BUILD` bumped). A client reconnects when
//!   its connection closes, as a real one would; messages due meanwhile are
//!   sent once it is back (an outbox). It counts reconnects, messages lost
//!   (sent and never answered, or the send failed), and the longest gap
//!   between two answers; the answers name the build (`gen<N>:`), which
//!   shows how soon after each reload the new build answers.
//!
//! All clients run on one thread, as the benchmark's other load does, so
//! both servers face the same client cost.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::pm2::{self, Pm2Cluster};
use crate::report::ratio_lines;
use crate::servers::{self, Kind, Server, Tools};

/// Reloads during the reload run.
const RELOADS: u64 = 3;
/// How long answers are awaited once the clients stop sending.
const GRACE: Duration = Duration::from_secs(2);
/// Steady sending after the last reload has finished, so its aftermath is
/// inside the run however long the reload took.
const SETTLE: Duration = Duration::from_secs(2);
/// A message not answered within this counts as failed (throughput run).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between failed connection attempts. Short, so the gaps measured
/// for a reconnecting client are a floor: real clients back off longer.
const RETRY: Duration = Duration::from_millis(50);
/// Warm-up before each measured throughput run (JIT, caches, pools).
const WARM_UP: Duration = Duration::from_secs(1);

/// The server names in the report.
const HOST: &str = "wasm-host";
const NODE: &str = "Node `ws`, PM2 cluster (2 workers)";

/// What to run, from the command line.
pub struct Options {
    /// Concurrent WebSocket clients.
    pub clients: usize,
    /// Length of each throughput run.
    pub duration: Duration,
    /// Throughput rounds over both servers.
    pub rounds: usize,
    /// Messages per second per client in the reload run.
    pub rate: u32,
    /// Length of the reload run.
    pub run: Duration,
}

/// One throughput run against one server.
pub struct Echo {
    /// Messages answered per second.
    pub per_s: f64,
    /// Per-message latency (send → answer) median, ms.
    pub p50: f64,
    /// See `p50`.
    pub p99: f64,
    /// Messages not answered correctly (plus failed reconnects).
    pub errors: u64,
}

/// One reload during the reload run.
pub struct Swap {
    /// From the reload command to its end (`pm2 reload` returning, or
    /// wasm-host's answer that the new version is live).
    pub took: Duration,
    /// From the command to the first answer from the new build.
    pub first_new: Option<Duration>,
    /// From the command to the last answer from an older build.
    pub last_old: Option<Duration>,
}

/// What the reload run showed for one server.
pub struct ReloadCost {
    /// The server.
    pub name: &'static str,
    /// The reload command.
    pub command: &'static str,
    /// How long the clients sent.
    pub run: Duration,
    /// Messages sent (or attempted).
    pub sent: u64,
    /// Messages answered.
    pub answered: u64,
    /// Sent on a connection that closed before the answer came, or never
    /// answered within the grace period.
    pub unanswered: u64,
    /// Sends that failed outright.
    pub send_failed: u64,
    /// Successful reconnections, over all clients.
    pub reconnects: u64,
    /// Clients that had to reconnect at least once.
    pub clients_reconnected: usize,
    /// Connection attempts that failed while reconnecting.
    pub failed_connects: u64,
    /// Longest gap between two answers of one client: the worst client and
    /// the median client, ms.
    pub gap_max: f64,
    /// See `gap_max`.
    pub gap_p50: f64,
    /// The worst client's longest gap before the first reload, ms.
    pub gap_rest: f64,
    /// Per-message latency over the run, ms.
    pub p50: f64,
    /// See `p50`.
    pub p99: f64,
    /// One entry per reload.
    pub swaps: Vec<Swap>,
    /// Anything else worth a line (the host's own count of open sockets).
    pub notes: Vec<String>,
}

/// Everything this section measured.
pub struct Realtime {
    options: (usize, Duration, usize, u32),
    versions: Option<pm2::Versions>,
    echo: Vec<(&'static str, Vec<Echo>)>,
    reloads: Vec<ReloadCost>,
    notes: Vec<String>,
}

/// A server under test, started and ready for clients.
enum Peer<'a> {
    Host {
        server: Server,
        tools: &'a Tools,
        chat: &'a [u8],
    },
    Node(Pm2Cluster),
}

impl<'a> Peer<'a> {
    /// wasm-host serving `chat` stamped `rt1`, once its code is optimized.
    fn host(tools: &'a Tools, chat: &'a [u8]) -> Result<Self> {
        let path = tools.scratch.join("chat-rt1.wasm");
        std::fs::write(&path, restamp(chat, 1)?)?;
        let server = Server::start(&Kind::WasmHost(Vec::new()), tools, &path)?;
        server.wait_optimized(Duration::from_secs(60))?;
        Ok(Peer::Host {
            server,
            tools,
            chat,
        })
    }

    /// The PM2 cluster at build 1, its state in the scratch folder.
    fn node(tools: &Tools, dir: &Path) -> Result<Self> {
        let home = tools.scratch.join("pm2");
        let cluster = Pm2Cluster::start(dir, &home, servers::free_addr()?, 1, "chat gen")?;
        Ok(Peer::Node(cluster))
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Peer::Host { server, .. } => server.addr,
            Peer::Node(cluster) => cluster.addr,
        }
    }

    /// Deploys build `build`: a never-seen stamped component for wasm-host
    /// (so it compiles it, as for real new code), `BUILD=build` for PM2.
    fn deploy(&self, build: u64) -> Result<()> {
        match self {
            Peer::Host {
                server,
                tools,
                chat,
            } => {
                let path = tools.scratch.join(format!("chat-rt{build}.wasm"));
                std::fs::write(&path, restamp(chat, build)?)?;
                server.reload(&path)?;
                Ok(())
            }
            Peer::Node(cluster) => cluster.reload(build),
        }
    }
}

fn restamp(chat: &[u8], build: u64) -> Result<Vec<u8>> {
    stamp::restamp(chat, &format!("rt{build}")).context("chat.wasm carries no version stamp")
}

/// Measures both sections; the Node side is skipped (with a note) when
/// Node or its packages cannot be had.
pub fn measure(opts: &Options, tools: &Tools, repo: &Path, chat: &[u8]) -> Result<Realtime> {
    let node_dir = repo.join("bench/node-chat");
    let mut notes = Vec::new();
    let versions = match pm2::prepare(&node_dir, &["ws"]) {
        Ok(v) => {
            println!(
                "node peer: node {}, ws {}, pm2 {}",
                v.node,
                v.package("ws"),
                v.pm2
            );
            Some(v)
        }
        Err(e) => {
            let note = format!("the Node peer was skipped: {e:#}");
            println!("{note}");
            notes.push(note);
            None
        }
    };
    let mut names = vec![HOST];
    if versions.is_some() {
        names.push(NODE);
    }
    let start = |name: &str| -> Result<Peer> {
        if name == HOST {
            Peer::host(tools, chat)
        } else {
            Peer::node(tools, &node_dir)
        }
    };

    let mut echo: Vec<(&'static str, Vec<Echo>)> = names.iter().map(|n| (*n, vec![])).collect();
    for round in 0..opts.rounds {
        for i in 0..names.len() {
            // Alternate the order so neither always runs on a warmer machine.
            let at = (i + round) % names.len();
            let peer = start(names[at])?;
            echo_run(peer.addr(), opts.clients, WARM_UP)?;
            let result = echo_run(peer.addr(), opts.clients, opts.duration)?;
            println!(
                "round {} {:<36} {:>8.0} msgs/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                round + 1,
                names[at],
                result.per_s,
                result.p50,
                result.p99,
                result.errors
            );
            echo[at].1.push(result);
        }
    }

    let mut reloads = Vec::new();
    for name in &names {
        let peer = start(name)?;
        echo_run(peer.addr(), opts.clients, WARM_UP)?;
        let command = if *name == HOST {
            "`wasm-host reload` of a newly stamped chat.wasm"
        } else {
            "`pm2 reload ecosystem.config.js`, BUILD bumped"
        };
        let mut cost = reload_run(&peer, opts, name, command)?;
        if let Peer::Host { server, .. } = &peer {
            let status = server.status()?;
            cost.notes.push(format!(
                "wasm-host's status after the run: {} WebSockets open, {} reloads done, live generation {}",
                status.websockets_open,
                status.reloads_ok,
                status.versions.first().map_or(0, |v| v.generation)
            ));
        }
        print_cost(&cost);
        reloads.push(cost);
    }
    Ok(Realtime {
        options: (opts.clients, opts.duration, opts.rounds, opts.rate),
        versions,
        echo,
        reloads,
        notes,
    })
}

fn print_cost(c: &ReloadCost) {
    println!(
        "reload run {:<36} sent {}  answered {}  lost {} ({} unanswered, {} failed sends)  reconnects {} ({} clients, {} failed attempts)  longest gap max {:.0} ms / p50 {:.0} ms (at rest {:.0} ms)  p99 {:.2} ms",
        c.name,
        c.sent,
        c.answered,
        c.unanswered + c.send_failed,
        c.unanswered,
        c.send_failed,
        c.reconnects,
        c.clients_reconnected,
        c.failed_connects,
        c.gap_max,
        c.gap_p50,
        c.gap_rest,
        c.p99
    );
    for (n, s) in c.swaps.iter().enumerate() {
        println!(
            "  reload {}: command took {:.0} ms, first new-build answer after {}, last old-build answer after {}",
            n + 1,
            s.took.as_secs_f64() * 1000.0,
            ms(s.first_new),
            ms(s.last_old)
        );
    }
    for note in &c.notes {
        println!("  {note}");
    }
}

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to the chat on `addr` (Nagle off, as servers and
/// browsers do for interactive traffic).
async fn connect(addr: SocketAddr) -> Result<Ws> {
    let opening = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream).await?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, opening)
        .await
        .context("WebSocket handshake timed out")?
}

/// Closes `ws` politely, without waiting long for the server.
async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

/// The build and the tag of an answer `gen<N>:<tag>`.
fn parse_answer(text: &str) -> Option<(u64, &str)> {
    let (build, tag) = text.strip_prefix("gen")?.split_once(':')?;
    Some((build.parse().ok()?, tag))
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits, as the HTTP load uses.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Starts `work` on a new single-threaded runtime on its own thread (the
/// client thread).
fn client_thread<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work)
    })
}

/// Waits for a [`client_thread`]'s result.
fn join<T>(thread: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the WebSocket client thread panicked"))?
}

/// `clients` WebSockets sending `echo:` back to back for `duration`.
fn echo_run(addr: SocketAddr, clients: usize, duration: Duration) -> Result<Echo> {
    join(client_thread(async move {
        let mut sockets = Vec::with_capacity(clients);
        for _ in 0..clients {
            sockets.push(connect(addr).await?);
        }
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(id, ws)| tokio::spawn(echo_loop(addr, id, ws, deadline)))
            .collect();
        let mut latency = histogram();
        let mut errors = 0;
        // Up to the last client's last answer: closing the sockets
        // afterwards is not part of the run.
        let mut ended = started;
        for task in tasks {
            let (h, e, done) = task.await?;
            latency.add(&h)?;
            errors += e;
            ended = ended.max(done);
        }
        let elapsed = ended - started;
        Ok(Echo {
            per_s: latency.len() as f64 / elapsed.as_secs_f64(),
            p50: latency.value_at_quantile(0.5) as f64 / 1000.0,
            p99: latency.value_at_quantile(0.99) as f64 / 1000.0,
            errors,
        })
    }))
}

/// One client of [`echo_run`]: its latencies (µs), errors, and when it
/// stopped sending.
async fn echo_loop(
    addr: SocketAddr,
    id: usize,
    ws: Ws,
    deadline: Instant,
) -> (Histogram<u64>, u64, Instant) {
    let mut latency = histogram();
    let mut errors = 0;
    let mut ws = Some(ws);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let Some(socket) = ws.as_mut() else {
            // A broken connection is replaced, as a client would; it
            // should not happen at all.
            match connect(addr).await {
                Ok(s) => ws = Some(s),
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(RETRY).await;
                }
            }
            continue;
        };
        seq += 1;
        let tag = format!("{id}-{seq}");
        let sent = Instant::now();
        match round_trip(socket, &tag).await {
            Ok(()) => {
                let _ = latency.record((sent.elapsed().as_micros() as u64).max(1));
            }
            Err(_) => {
                errors += 1;
                ws = None;
            }
        }
    }
    let done = Instant::now();
    if let Some(ws) = ws {
        close(ws).await;
    }
    (latency, errors, done)
}

/// Sends `echo:<tag>` and waits for its answer.
async fn round_trip(ws: &mut Ws, tag: &str) -> Result<()> {
    ws.send(Message::text(format!("echo:{tag}"))).await?;
    loop {
        match tokio::time::timeout(ANSWER_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return match parse_answer(&text) {
                    Some((_, echoed)) if echoed == tag => Ok(()),
                    _ => bail!("answer {text:?} to echo:{tag}"),
                };
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(other))) => bail!("unexpected {other:?}"),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => bail!("connection closed"),
            Err(_) => bail!("no answer within {ANSWER_TIMEOUT:?}"),
        }
    }
}

/// What one client of the reload run saw.
#[derive(Default)]
struct Steady {
    sent: u64,
    unanswered: u64,
    send_failed: u64,
    reconnects: u64,
    failed_connects: u64,
    /// Texts that answered no outstanding message of this client (there
    /// should be none).
    stray: u64,
    /// Every answer: when, which build, and its latency.
    answers: Vec<(Instant, u64, Duration)>,
}

/// The reload run against `peer`: steady clients, [`RELOADS`] reloads.
fn reload_run(
    peer: &Peer,
    opts: &Options,
    name: &'static str,
    command: &'static str,
) -> Result<ReloadCost> {
    let addr = peer.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (began_tx, began_rx) = std::sync::mpsc::channel();
    let period = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    let clients = opts.clients;
    let load = {
        let stop = stop.clone();
        client_thread(async move {
            let mut sockets = Vec::with_capacity(clients);
            for _ in 0..clients {
                sockets.push(connect(addr).await?);
            }
            let started = Instant::now();
            let _ = began_tx.send(started);
            let tasks: Vec<_> = sockets
                .into_iter()
                .enumerate()
                .map(|(id, ws)| {
                    // Spread the clients' sends over the period, as
                    // independent users would be.
                    let first = started + period.mul_f64(id as f64 / clients as f64);
                    tokio::spawn(steady_client(addr, id, ws, first, period, stop.clone()))
                })
                .collect();
            let mut seen = Vec::with_capacity(tasks.len());
            for task in tasks {
                seen.push(task.await?);
            }
            Ok((started, seen))
        })
    };

    // The reloads, spaced through the run; each starts when the one before
    // has finished, if that is later than its turn.
    let mut marks = Vec::new();
    let reloading = (|| -> Result<Instant> {
        let started = began_rx
            .recv_timeout(Duration::from_secs(60))
            .context("the clients did not connect within a minute")?;
        for k in 1..=RELOADS {
            let turn = started + opts.run.mul_f64(k as f64 / (RELOADS + 1) as f64);
            std::thread::sleep(turn.saturating_duration_since(Instant::now()));
            let at = Instant::now();
            peer.deploy(1 + k)?;
            marks.push((at, at.elapsed()));
        }
        let last = marks.last().map_or(started, |(at, took)| *at + *took);
        let end = (started + opts.run).max(last + SETTLE);
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        Ok(started)
    })();
    // Stop the clients whatever happened, so the thread ends.
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let joined = join(load);
    reloading?;
    let (started, seen) = joined?;
    Ok(summarize(name, command, started, stopped, &marks, &seen))
}

/// What the run's clients saw, as the report shows it.
fn summarize(
    name: &'static str,
    command: &'static str,
    started: Instant,
    stopped: Instant,
    marks: &[(Instant, Duration)],
    seen: &[Steady],
) -> ReloadCost {
    let first_reload = marks.first().map_or(stopped, |(at, _)| *at);
    let mut gaps: Vec<f64> = seen
        .iter()
        .map(|s| longest_gap(&s.answers, started, stopped).as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let gap_rest = seen
        .iter()
        .map(|s| longest_gap(&s.answers, started, first_reload).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    let mut latency = histogram();
    let mut all: Vec<(Instant, u64)> = Vec::new();
    for s in seen {
        for (at, build, took) in &s.answers {
            let _ = latency.record((took.as_micros() as u64).max(1));
            all.push((*at, *build));
        }
    }
    all.sort_unstable();
    // The build answering before the first reload; reload k brings build
    // `base + k` (both servers number from 1, but read it off the answers).
    let base = all
        .iter()
        .take_while(|(at, _)| *at < first_reload)
        .map(|(_, b)| *b)
        .min()
        .unwrap_or(1);
    let swaps = marks
        .iter()
        .zip(1u64..)
        .map(|((at, took), k)| {
            let new = base + k;
            let after = || all.iter().filter(|(when, _)| when >= at);
            Swap {
                took: *took,
                first_new: after()
                    .find(|(_, b)| *b >= new)
                    .map(|(when, _)| *when - *at),
                last_old: after()
                    .rev()
                    .find(|(_, b)| *b < new)
                    .map(|(when, _)| *when - *at),
            }
        })
        .collect();
    let sum = |f: fn(&Steady) -> u64| seen.iter().map(f).sum::<u64>();
    let mut notes = Vec::new();
    let stray = sum(|s| s.stray);
    if stray > 0 {
        notes.push(format!(
            "{name}: {stray} texts answered no message the client had outstanding"
        ));
    }
    ReloadCost {
        name,
        command,
        run: stopped - started,
        sent: sum(|s| s.sent),
        answered: all.len() as u64,
        unanswered: sum(|s| s.unanswered),
        send_failed: sum(|s| s.send_failed),
        reconnects: sum(|s| s.reconnects),
        clients_reconnected: seen.iter().filter(|s| s.reconnects > 0).count(),
        failed_connects: sum(|s| s.failed_connects),
        gap_max: gaps.last().copied().unwrap_or(0.0),
        gap_p50: gaps.get(gaps.len() / 2).copied().unwrap_or(0.0),
        gap_rest,
        p50: latency.value_at_quantile(0.5) as f64 / 1000.0,
        p99: latency.value_at_quantile(0.99) as f64 / 1000.0,
        swaps,
        notes,
    }
}

/// The longest stretch in `from..to` without an answer, counting from
/// `from` to the first and from the last to `to`.
fn longest_gap(answers: &[(Instant, u64, Duration)], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for (at, _, _) in answers.iter().filter(|(at, _, _)| (from..=to).contains(at)) {
        longest = longest.max(*at - last);
        last = *at;
    }
    longest.max(to.saturating_duration_since(last))
}

/// What happened after the client's select: the next step to take.
enum Step {
    Send,
    Frame(Option<Result<Message, WsError>>),
    Idle,
}

/// One client of the reload run: `echo:` every `period` from `first`,
/// reconnecting when closed, until `stop`, then waits [`GRACE`] for
/// outstanding answers.
async fn steady_client(
    addr: SocketAddr,
    id: usize,
    ws: Ws,
    first: Instant,
    period: Duration,
    stop: Arc<AtomicBool>,
) -> Steady {
    let mut seen = Steady::default();
    // Missed ticks (while reconnecting) fire at once afterwards: the
    // messages a user typed meanwhile go out when the connection is back.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(first), period);
    let mut ws = Some(ws);
    // Messages sent on the current connection and not answered yet.
    let mut outstanding: HashMap<u64, Instant> = HashMap::new();
    let mut seq = 0u64;
    let mut stopped_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(now);
        }
        if let Some(at) = stopped_at
            && (outstanding.is_empty() || ws.is_none() || now >= at + GRACE)
        {
            break;
        }
        let Some(socket) = ws.as_mut() else {
            match connect(addr).await {
                Ok(s) => {
                    ws = Some(s);
                    seen.reconnects += 1;
                }
                Err(_) => {
                    seen.failed_connects += 1;
                    tokio::time::sleep(RETRY).await;
                }
            }
            continue;
        };
        let sending = stopped_at.is_none();
        let step = tokio::select! {
            _ = tick.tick(), if sending => Step::Send,
            frame = socket.next() => Step::Frame(frame),
            // Wakes the loop to notice the stop and the end of the grace.
            _ = tokio::time::sleep(Duration::from_millis(100)) => Step::Idle,
        };
        let broken = match step {
            Step::Send => {
                seq += 1;
                seen.sent += 1;
                let text = format!("echo:{id}-{seq}");
                let sent = Instant::now();
                if socket.send(Message::text(text)).await.is_ok() {
                    outstanding.insert(seq, sent);
                    false
                } else {
                    seen.send_failed += 1;
                    true
                }
            }
            Step::Frame(Some(Ok(Message::Text(text)))) => {
                let now = Instant::now();
                let answered = parse_answer(&text).and_then(|(build, tag)| {
                    let (who, n) = tag.split_once('-')?;
                    (who.parse::<usize>().ok()? == id).then_some(())?;
                    Some((build, outstanding.remove(&n.parse().ok()?)?))
                });
                match answered {
                    Some((build, sent)) => seen.answers.push((now, build, now - sent)),
                    None => seen.stray += 1,
                }
                false
            }
            Step::Frame(Some(Ok(Message::Close(_)) | Err(_)) | None) => true,
            Step::Frame(Some(Ok(_))) | Step::Idle => false,
        };
        if broken {
            // What this connection still owed will never come: the server
            // that had it is gone.
            seen.unanswered += outstanding.len() as u64;
            outstanding.clear();
            ws = None;
        }
    }
    seen.unanswered += outstanding.len() as u64;
    if let Some(ws) = ws {
        close(ws).await;
    }
    seen
}

/// Milliseconds of `d`, or `none`.
pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "none".into())
}

impl Realtime {
    /// Writes this section of the report.
    pub fn write(&self, md: &mut String) -> Result<()> {
        let (clients, duration, rounds, rate) = self.options;
        writeln!(
            md,
            "## WebSockets: the chat example against Node `ws` under PM2 cluster mode\n"
        )?;
        writeln!(
            md,
            "Command: `cargo run --release -p wasm-host-bench -- --only realtime`\n"
        )?;
        let peer = match &self.versions {
            Some(v) => format!(
                "Node {} with `ws` {} in `pm2` {} cluster mode, 2 workers (bench/node-chat)",
                v.node,
                v.package("ws"),
                v.pm2
            ),
            None => "no Node peer (see the note)".into(),
        };
        writeln!(
            md,
            "wasm-host serves examples/chat (stamped); the peer is {peer}, speaking the same `echo:<x>` → `gen<N>:<x>` protocol. The clients are tokio-tungstenite WebSockets on one thread, all on 127.0.0.1.\n"
        )?;
        writeln!(
            md,
            "### Messages per second ({clients} clients, each sending `echo:` back to back, {duration:?} per run, {rounds} rounds alternating the order)\n"
        )?;
        writeln!(
            md,
            "| server | messages/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|"
        )?;
        for (name, runs) in &self.echo {
            if runs.is_empty() {
                continue;
            }
            let n = runs.len() as f64;
            let avg = |f: fn(&Echo) -> f64| runs.iter().map(f).sum::<f64>() / n;
            writeln!(
                md,
                "| {name} | {:.0} | {:.2} | {:.2} | {} |",
                avg(|r| r.per_s),
                avg(|r| r.p50),
                avg(|r| r.p99),
                runs.iter().map(|r| r.errors).sum::<u64>()
            )?;
        }
        writeln!(md)?;
        if let [(ours, host), (peer, node)] = &self.echo[..] {
            let ratios = |f: fn(&Echo) -> f64| -> Vec<f64> {
                host.iter()
                    .zip(node)
                    .map(|(h, n)| f(h) / f(n).max(1e-9))
                    .collect()
            };
            let measures = [
                ("messages/s", ratios(|r| r.per_s)),
                ("p99", ratios(|r| r.p99)),
            ];
            ratio_lines(md, ours, peer, &measures)?;
        }
        if !self.reloads.is_empty() {
            writeln!(
                md,
                "### What a reload costs connected clients ({clients} clients at {rate} messages/s each, {RELOADS} reloads spaced through the run)\n"
            )?;
            writeln!(
                md,
                "| server | reload | run s | sent | lost (unanswered + failed sends) | reconnects (clients; failed attempts) | longest gap per client, max / p50 ms | longest gap before the first reload, max ms | p50 / p99 ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
            )?;
            for c in &self.reloads {
                writeln!(
                    md,
                    "| {} | {} | {:.1} | {} | {} ({} + {}) | {} ({}; {}) | {:.0} / {:.0} | {:.0} | {:.2} / {:.2} |",
                    c.name,
                    c.command,
                    c.run.as_secs_f64(),
                    c.sent,
                    c.unanswered + c.send_failed,
                    c.unanswered,
                    c.send_failed,
                    c.reconnects,
                    c.clients_reconnected,
                    c.failed_connects,
                    c.gap_max,
                    c.gap_p50,
                    c.gap_rest,
                    c.p50,
                    c.p99
                )?;
            }
            writeln!(
                md,
                "\n| server | reload | command took ms | first answer from the new build after | last answer from an older build after |\n|---|---:|---:|---:|---:|"
            )?;
            for c in &self.reloads {
                for (n, s) in c.swaps.iter().enumerate() {
                    writeln!(
                        md,
                        "| {} | {} | {:.0} | {} | {} |",
                        c.name,
                        n + 1,
                        s.took.as_secs_f64() * 1000.0,
                        ms(s.first_new),
                        ms(s.last_old)
                    )?;
                }
            }
            writeln!(
                md,
                "\nTimes in the second table are from the reload command. A client reconnects as soon as its connection closes (then every {} ms until it opens), a floor for what real clients with backoff see; messages due while it reconnects go out once it is back. A message counts as lost when its connection closed before the answer, its send failed, or no answer came within {GRACE:?} of the end. The gap is the longest time a client went without an answer (its sends are {:.0} ms apart).\n",
                RETRY.as_millis(),
                1000.0 / f64::from(rate.max(1))
            )?;
            for c in &self.reloads {
                for note in &c.notes {
                    writeln!(md, "- {note}")?;
                }
            }
            writeln!(md)?;
        }
        for note in &self.notes {
            writeln!(md, "> {note}\n")?;
        }
        Ok(())
    }
}
