//! A small JSON-free HTTP API on the SDK's router: path parameters,
//! bodies streamed in and out, and an outgoing call.
//!
//! - `GET /` names the version;
//! - `GET /scheme` answers the scheme the host says the request came in
//!   on (`https` over TLS);
//! - `GET /users/:id` and `GET /files/*path` echo their parameters;
//! - `POST /echo` streams the request body straight back;
//! - `POST /count` reads the body piece by piece and answers its size;
//! - `GET /stream?chunks=N` streams N lines;
//! - `GET /upstream?url=http://…` answers with what that URL answered
//!   (the host must allow it with `--allow-http`); with `&traceparent=…`
//!   the call carries that `traceparent` of its own;
//! - `GET /header/:name` answers the values of the request header `name`,
//!   one per line (e.g. the host's `wasm-host-client-addr`).
use wasm_host_sdk::futures_lite::stream;
use wasm_host_sdk::{
    Body, BodyExt, Client, Error, Request, RequestExt, Response, Router, StatusCode, http,
};

fn routes() -> Router {
    Router::new()
        .get("/", |_: Request| format!("api {}\n", stamp::version()))
        .get("/scheme", |req: Request| {
            format!("{}\n", req.uri().scheme_str().unwrap_or("none"))
        })
        .get("/users/:id", |req: Request| {
            format!("user {}\n", req.param("id").unwrap_or_default())
        })
        .get("/files/*path", |req: Request| {
            format!("file {}\n", req.param("path").unwrap_or_default())
        })
        .post("/echo", |req: Request| Response::new(req.into_body()))
        .post("/count", count)
        .get("/stream", stream_lines)
        .get("/upstream", upstream)
        .get("/header/:name", |req: Request| {
            let name = req.param("name").unwrap_or_default().to_owned();
            req.headers()
                .get_all(name.as_str())
                .iter()
                .map(|v| format!("{}\n", String::from_utf8_lossy(v.as_bytes())))
                .collect::<String>()
        })
}

async fn count(req: Request) -> Result<String, Error> {
    let mut body = req.into_body().into_boxed_body();
    let (mut bytes, mut pieces) = (0usize, 0usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len();
            pieces += 1;
        }
    }
    Ok(format!("{bytes} bytes in {pieces} pieces\n"))
}

fn stream_lines(req: Request) -> Response {
    let chunks: usize = req
        .query("chunks")
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let lines = (0..chunks).map(|i| format!("line {i}\n"));
    Response::new(Body::from_stream(stream::iter(lines)))
}

async fn upstream(req: Request) -> Result<(StatusCode, String), Error> {
    let Some(url) = req.query("url") else {
        return Ok((StatusCode::BAD_REQUEST, "the query needs url=...\n".into()));
    };
    let mut call = http::Request::get(url);
    if let Some(trace) = req.query("traceparent") {
        call = call.header("traceparent", trace);
    }
    let call = call.body(Body::empty())?;
    let mut answer = Client::new().send(call).await?;
    let status = answer.status();
    let text = answer.body_mut().str_contents().await?.to_owned();
    Ok((status, format!("upstream said: {text}")))
}

wasm_host_sdk::app! {
    handler: routes(),
}
