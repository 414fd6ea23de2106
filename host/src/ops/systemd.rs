//! Telling systemd what the host is doing (`sd_notify`): ready, reloading,
//! stopping, and the watchdog ping, so a `Type=notify-reload` unit knows
//! when the host serves, when `systemctl reload` has finished (and whether
//! it worked, in `STATUS=`), and restarts a host whose control plane hangs.
//!
//! Every call is a no-op unless systemd (or a test) set `NOTIFY_SOCKET`. A
//! notification that cannot be sent is logged and otherwise ignored: the
//! host serves whether or not anyone listens.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(what: &str, states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd ({what})");
    }
}

/// `status` on one line: a newline would end the STATUS= field and start
/// a field of its own (a multi-line config error could forge READY=1).
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], "; ")
}

/// The host serves: every listener accepts (READY=1).
pub fn ready(status: &str) {
    let status = one_line(status);
    send("ready", &[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A reload begins (RELOADING=1). `Type=notify-reload` wants the monotonic
/// time with it, so it can tell this reload from an earlier one; READY=1
/// ([`ready`]) ends it.
pub fn reloading(status: &str) {
    let status = one_line(status);
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(
            "reloading",
            &[NotifyState::Reloading, now, NotifyState::Status(&status)],
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock for systemd"),
    }
}

/// A binary upgrade succeeded: process `pid` is the service now
/// (MAINPID=), while this one drains without telling systemd it stops.
pub fn handed_over(pid: u32) {
    let status = format!("upgraded: process {pid} serves; the old one drains");
    send(
        "main pid",
        &[NotifyState::MainPid(pid), NotifyState::Status(&status)],
    );
}

/// Shutdown begins (STOPPING=1).
pub fn stopping() {
    send(
        "stopping",
        &[
            NotifyState::Stopping,
            NotifyState::Status("draining in-flight work"),
        ],
    );
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, as systemd
/// advises, so one late ping is not yet a missed one. `None` when systemd
/// set no watchdog (or set it for another process).
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Pings the watchdog (WATCHDOG=1) every `every`, forever. Run it on the
/// control-plane runtime: a control plane that hangs then stops pinging,
/// and systemd restarts the host.
pub async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        send("watchdog", &[NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_stays_one_field() {
        assert_eq!(one_line("bad:\nREADY=1\r\nx"), "bad:; READY=1; ; x");
    }
}
