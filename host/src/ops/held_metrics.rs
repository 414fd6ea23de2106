//! The metrics of held connections (WebSockets, held streams) and of the
//! channels they subscribe to, in the Prometheus text format.
//!
//! Renders numbers the caller read; never reaches an app.

use std::fmt::Write;

/// What the renderer needs to know of one app's held connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeldView {
    /// WebSockets open now.
    pub open: usize,
    /// WebSockets accepted since the app started.
    pub opened: u64,
    /// Client messages handed to the app.
    pub messages_in: u64,
    /// Messages written to clients.
    pub messages_out: u64,
    /// Closed for reading too slowly.
    pub closed_slow: u64,
    /// Closed for a message over the limit.
    pub closed_too_big: u64,
    /// Items published to the app's channels.
    pub published: u64,
    /// Copies of items handed to subscribers.
    pub delivered: u64,
}

/// Appends the held-connection families for `apps` to `out`: each app's
/// name, already escaped for a label value, and its view.
pub fn render(out: &mut String, apps: &[(String, HeldView)]) {
    let mut family = |name: &str,
                      kind: &str,
                      help: &str,
                      sample: &dyn Fn(&HeldView) -> Vec<(&'static str, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (app, view) in apps {
            for (labels, value) in sample(view) {
                let _ = writeln!(out, "{name}{{app=\"{app}\"{labels}}} {value}");
            }
        }
    };
    family(
        "wasm_host_websockets_open",
        "gauge",
        "WebSocket connections the host holds open, by app.",
        &|v| vec![("", v.open as u64)],
    );
    family(
        "wasm_host_websockets_opened_total",
        "counter",
        "WebSocket connections accepted.",
        &|v| vec![("", v.opened)],
    );
    family(
        "wasm_host_websocket_messages_total",
        "counter",
        "WebSocket messages: `in` from clients to the app, `out` to clients.",
        &|v| {
            vec![
                (",direction=\"in\"", v.messages_in),
                (",direction=\"out\"", v.messages_out),
            ]
        },
    );
    family(
        "wasm_host_websockets_closed_total",
        "counter",
        "WebSocket connections the host closed: `slow_reader` (send queue full, 1008), `message_too_big` (1009).",
        &|v| {
            vec![
                (",reason=\"slow_reader\"", v.closed_slow),
                (",reason=\"message_too_big\"", v.closed_too_big),
            ]
        },
    );
    family(
        "wasm_host_published_total",
        "counter",
        "Items published to the app's channels (by guests or POST /publish/).",
        &|v| vec![("", v.published)],
    );
    family(
        "wasm_host_publish_deliveries_total",
        "counter",
        "Copies of published items handed to subscribed connections.",
        &|v| vec![("", v.delivered)],
    );
}
