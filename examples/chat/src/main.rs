//! A chat room over WebSockets and server-sent events, on the SDK's
//! `realtime` module; the end-to-end tests drive it, so each answer below
//! is exact.
//!
//! - a WebSocket on any path: on open, subscribes to channel `room` and
//!   keeps `{"name": <query param name, or "anon">}` as its state. Then,
//!   per text message:
//!   - `echo:X` answers `gen<N>:X` (N: this version's generation);
//!   - `say:X` publishes `<name>: X` to `room` (WebSockets get the text,
//!     streams the event `data: <name>: X`), no answer;
//!   - `later:X` answers nothing now, and 300 ms after the response
//!     publishes `later:X` the same way;
//!   - `close` closes with 4000 `bye`;
//!   - anything else answers `unknown:<text>`.
//!
//!   A binary message is echoed back.
//! - `GET /events`: a server-sent event stream held on `room`, starting
//!   with the comment `: gen<N>`;
//! - `POST /publish`: publishes the text body to `room`, answers `204`;
//! - `GET /`: `chat gen<N> <version stamp>` (the tests restamp the bytes
//!   to make distinct versions).
//!
//! It keeps nothing in the instance: every batch of events may reach a
//! fresh one, or a newer version.
use serde::{Deserialize, Serialize};
use wasm_host_sdk::realtime::{self, Conn, Message, Refuse, SocketHandler};
use wasm_host_sdk::wstd::task::sleep;
use wasm_host_sdk::wstd::time::Duration;
use wasm_host_sdk::{
    Error, Handler, IntoResponse, Request, Response, Router, StatusCode, after_response, generation,
};

/// The channel every connection and stream subscribes to.
const ROOM: &str = "room";

/// What a connection remembers between batches of its events.
#[derive(Serialize, Deserialize)]
struct Member {
    name: String,
}

/// The WebSocket side of the room.
struct Chat;

impl SocketHandler for Chat {
    async fn on_open(&mut self, conn: &mut Conn) -> Result<(), Refuse> {
        let name = conn.query("name").unwrap_or_else(|| "anon".to_string());
        conn.subscribe(ROOM);
        // The name may be any text; state is encoded to fit a header.
        conn.set_state(&Member { name })
            .map_err(|e| Refuse::new(format!("cannot keep the member's state: {e}")))
    }

    async fn on_message(&mut self, conn: &mut Conn, message: Message) {
        let text = match message {
            Message::Binary(data) => return conn.send_binary(&data),
            Message::Text(text) => text,
        };
        if let Some(rest) = text.strip_prefix("echo:") {
            conn.send_text(&format!("gen{}:{rest}", generation()));
        } else if let Some(rest) = text.strip_prefix("say:") {
            let name = conn
                .state::<Member>()
                .map_or_else(|| "anon".to_string(), |m| m.name);
            to_room(&format!("{name}: {rest}"));
        } else if let Some(rest) = text.strip_prefix("later:") {
            let line = format!("later:{rest}");
            // After the response, so the client's batch is answered at
            // once and the publish is counted as this version's work.
            after_response(async move {
                sleep(Duration::from_millis(300)).await;
                to_room(&line);
            });
        } else if text == "close" {
            conn.close(4000, "bye");
        } else {
            conn.send_text(&format!("unknown:{text}"));
        }
    }
}

/// Publishes `line` to the room: the text to WebSockets, a `data:` event
/// to held streams.
fn to_room(line: &str) {
    realtime::publish_forms(
        ROOM,
        Some(Message::Text(line.to_string())),
        Some(realtime::sse_event("", line).as_bytes()),
    );
}

fn routes() -> Router {
    Router::new()
        .get("/", |_: Request| {
            format!("chat gen{} {}\n", generation(), stamp::version())
        })
        .get("/events", |_: Request| {
            realtime::hold_stream(&[ROOM], format!(": gen{}\n\n", generation()))
        })
        .post("/publish", publish)
}

async fn publish(mut req: Request) -> Result<Response, Error> {
    let Ok(text) = std::str::from_utf8(req.body_mut().contents().await?) else {
        return Ok((StatusCode::BAD_REQUEST, "the body must be UTF-8 text\n").into_response());
    };
    to_room(text);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// WebSocket events on any path go to [`Chat`] (the host upgrades on every
/// path); everything else to the routes.
async fn app(req: Request) -> Response {
    if realtime::is_websocket(&req) {
        return realtime::serve(req, Chat).await;
    }
    routes().call(req).await
}

wasm_host_sdk::app!(app);
