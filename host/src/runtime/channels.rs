//! The host side of `wasm-host:app/realtime` (`wit/app.wit`): a version
//! publishes to its app's channels, from a request or from work after the
//! response.
//!
//! Only hands items to the app's hub, which every version shares; who is
//! subscribed, and how items reach sockets, is not the runtime's business.

use bytes::Bytes;
use wasmtime::component::{ComponentType, Lift, Linker};

use crate::realtime::publish::{Item, Message, StreamPart};
use crate::runtime::state::HostState;

/// The imported interface.
const REALTIME: &str = "wasm-host:app/realtime@0.1.0";

/// Longest channel name a guest may publish to.
const MAX_CHANNEL: usize = 256;

/// `message` of the interface.
#[derive(ComponentType, Lift)]
#[component(variant)]
enum WitMessage {
    #[component(name = "text")]
    Text(String),
    #[component(name = "binary")]
    Binary(Vec<u8>),
}

/// Adds `publish` to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut realtime = linker.instance(REALTIME)?;
    realtime.func_wrap(
        "publish",
        |store,
         (channel, ws, stream): (String, Option<WitMessage>, Option<Vec<u8>>)|
         -> wasmtime::Result<(u32,)> {
            if channel.is_empty() || channel.len() > MAX_CHANNEL {
                // A bad name is the guest's mistake, not a reason to trap:
                // nobody can be subscribed to it.
                tracing::warn!(app = %store.data().app_name(), len = channel.len(), "publish to a channel name that is empty or over {MAX_CHANNEL} bytes; dropped");
                return Ok((0,));
            }
            let item = Item {
                channel,
                id: None,
                ws: ws.map(|m| match m {
                    WitMessage::Text(t) => Message::Text(t),
                    WitMessage::Binary(b) => Message::Binary(Bytes::from(b)),
                }),
                stream: stream.map(|b| StreamPart::Content(Bytes::from(b))),
            };
            let taken = store.data().hub().publish(item);
            Ok((u32::try_from(taken).unwrap_or(u32::MAX),))
        },
    )?;
    Ok(())
}
