//! The host's own upgrade under load: `wasm-host upgrade` (the new binary
//! takes the sockets over, then the old process drains) against what
//! `systemctl restart` does (stop the old process, then start the new one
//! on the same address), with fresh-connection and keep-alive clients.
//! Reports failed requests and the longest wait of a request around the
//! change, beside the longest at rest before it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::load::{self, LoadResult, LoadSpec};
use crate::servers::{Kind, Server, Tools};

/// How long after the change counts as "around" it.
const AROUND: Duration = Duration::from_secs(2);

/// One way of replacing the host, measured.
pub struct Change {
    /// `upgrade` or `restart`.
    pub how: &'static str,
    /// How long the change itself took (command to answer, or stop to
    /// accepting again).
    pub took: Duration,
    /// Failed requests of the fresh-connection and the keep-alive clients.
    pub errors: (u64, u64),
    /// Longest wait of a successful request in the [`AROUND`] window after
    /// the change began, fresh-connection and keep-alive, ms.
    pub longest_ms: (f64, f64),
    /// Longest wait at rest before the change, fresh-connection, ms.
    pub rest_ms: f64,
    /// Requests answered in all.
    pub answered: u64,
}

/// Measures both ways on `component`, each under `connections` clients of
/// each kind for `duration` (the change comes a third of the way in).
pub fn measure(
    tools: &Tools,
    component: &Path,
    duration: Duration,
    connections: usize,
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for how in ["upgrade", "restart"] {
        let kind = Kind::WasmHost(Vec::new());
        let server = Server::start(&kind, tools, component)?;
        let addr = server.addr;
        let spec = |keep_alive| LoadSpec {
            addr,
            connections,
            duration,
            keep_alive,
            stop: None,
        };
        // Past the first compile and tier-up, so the rest measured is rest.
        load::run(&LoadSpec {
            duration: Duration::from_secs(2),
            ..spec(true)
        })?;
        let (fresh, keep) = (spec(false), spec(true));
        let fresh = std::thread::spawn(move || load::run(&fresh));
        let keep = std::thread::spawn(move || load::run(&keep));
        std::thread::sleep(duration / 3);
        let began = Instant::now();
        // Kept alive until the load ends: the restarted server, or the
        // pid of the upgraded one, to stop afterwards.
        let mut after: Option<Server> = None;
        let mut upgraded = None;
        match how {
            "upgrade" => upgraded = Some(server.upgrade()?),
            _ => {
                let mut old = server;
                old.stop(Duration::from_secs(30))?;
                after = Some(Server::start_at(&kind, tools, component, addr)?);
                drop(old);
            }
        }
        let took = began.elapsed();
        let fresh = join(fresh)?;
        let keep = join(keep)?;
        drop(after);
        if let Some(pid) = upgraded {
            // SAFETY: kill(2) on the pid the host reported for its successor.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let from = began.saturating_duration_since(fresh.started);
        let longest = |r: &LoadResult| r.window(from, from + AROUND).max() as f64 / 1000.0;
        let change = Change {
            how,
            took,
            errors: (fresh.errors, keep.errors),
            longest_ms: (longest(&fresh), longest(&keep)),
            rest_ms: fresh.window(Duration::ZERO, from).max() as f64 / 1000.0,
            answered: fresh.ok + keep.ok,
        };
        println!(
            "{how:<8} took {:>7.1} ms  failed {} fresh / {} keep-alive  longest wait {:.1} ms fresh / {:.1} ms keep-alive (at rest {:.1} ms)  answered {}",
            took.as_secs_f64() * 1000.0,
            change.errors.0,
            change.errors.1,
            change.longest_ms.0,
            change.longest_ms.1,
            change.rest_ms,
            change.answered
        );
        changes.push(change);
    }
    Ok(changes)
}

fn join(run: std::thread::JoinHandle<Result<LoadResult>>) -> Result<LoadResult> {
    run.join()
        .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
}
