//! What Linux's `/proc` tells about the servers under test: CPU time,
//! resident memory, and the processes a server started (PM2's workers).

use std::path::Path;

use anyhow::{Context, Result};

/// The fields of `/proc/PID/stat` after the command name, which may hold
/// spaces and parentheses itself (so the split is at the last `)`).
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let (_, rest) = text
        .rsplit_once(')')
        .with_context(|| format!("{path} has no command name"))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// Field `n` (numbered as in proc(5), from 1) of `/proc/PID/stat`.
fn stat_field(fields: &[String], n: usize) -> Result<u64> {
    // The first field after the name is field 3 (the state).
    fields
        .get(n - 3)
        .context("/proc stat line too short")?
        .parse()
        .context("/proc stat field is not a number")
}

/// User plus system CPU time of `pids`, in seconds (processes that are
/// gone count nothing).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .filter_map(|&pid| {
            let fields = stat_fields(pid).ok()?;
            Some(stat_field(&fields, 14).ok()? + stat_field(&fields, 15).ok()?)
        })
        .sum::<u64>() as f64
        / ticks
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}

/// Every process below `root` (children, their children, ...).
pub fn descendants(root: u32) -> Result<Vec<u32>> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir(Path::new("/proc"))? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may end between the listing and the read.
        if let Ok(fields) = stat_fields(pid)
            && let Ok(ppid) = stat_field(&fields, 4)
        {
            parents.push((pid, ppid as u32));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    Ok(found)
}
