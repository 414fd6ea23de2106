//! Answers at once, then keeps working after the response has gone out.
//!
//! `GET /?ms=N&notify=http://HOST:PORT/PATH` sends `background vX accepted`,
//! then works for N milliseconds (default 500) and finally makes an outgoing
//! `GET http://HOST:PORT/PATH?version=vX`, so whoever listens there sees that
//! the work after the response finished.
//!
//! Written on the plain `wasip2` bindings (no SDK), which also shows that
//! components made without this project's SDK run unchanged.
use wasip2::clocks::monotonic_clock;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

struct Background;

impl Guest for Background {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let query = request
            .path_with_query()
            .and_then(|p| p.split_once('?').map(|(_, q)| q.to_string()))
            .unwrap_or_default();
        let ms = param(&query, "ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(500);
        let version = stamp::version();

        respond(response_out, &format!("background {version} accepted\n"));

        // Everything below runs after the client has its response.
        monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        if let Some(url) = param(&query, "notify") {
            if let Err(e) = notify(url, version) {
                eprintln!("background: notify {url} failed: {e}");
            }
        }
    }
}

/// Sends a 200 response with `text` as its body.
fn respond(out: ResponseOutparam, text: &str) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("response body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("body stream is taken once");
    if let Err(e) = stream.blocking_write_and_flush(text.as_bytes()) {
        eprintln!("background: writing the response failed: {e:?}");
    }
    drop(stream);
    if let Err(e) = OutgoingBody::finish(body, None) {
        eprintln!("background: finishing the response failed: {e:?}");
    }
}

/// Makes `GET {url}?version={version}` and waits for its answer.
fn notify(url: &str, version: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("notify url must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request
        .set_path_with_query(Some(&format!("{path}?version={version}")))
        .map_err(|()| "path")?;
    let body = request.body().map_err(|()| "request body")?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(_response))) => Ok(()),
        Some(Ok(Err(e))) => Err(format!("{e:?}")),
        Some(Err(())) | None => Err("no response".to_string()),
    }
}

/// Reads `key=value` from a query string.
fn param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then_some(v)
    })
}

wasip2::http::proxy::export!(Background);
