//! Publishes handed on to a GRIP proxy in front of the app (Pushpin's
//! publish endpoint, `--grip-publish`): behind a proxy, the connections
//! and held streams live in the proxy, so what a guest publishes must go
//! there to reach them.
//!
//! Items go in publish order, batched when several wait. A proxy that does
//! not take a batch is logged and the batch dropped: the proxy's own
//! delivery has no replay either, and holding items would only grow
//! memory while it is down.

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::realtime::hub::Hub;
use crate::realtime::publish::{self, Item};

/// Longest a publish to the proxy may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Most items sent in one publish.
const MAX_BATCH: usize = 100;

/// A proxy's publish endpoint: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    authority: String,
    path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| format!("`{text}` is not a URL; write http://HOST:PORT/publish/"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "`{text}`: the GRIP publish endpoint must be plain http:// (a proxy beside the host)"
            ));
        }
        let authority = uri
            .authority()
            .filter(|a| a.port_u16().is_some())
            .ok_or_else(|| format!("`{text}` names no HOST:PORT"))?
            .to_string();
        let path = match uri.path() {
            "" | "/" => "/publish/".to_string(),
            p => p.to_string(),
        };
        Ok(Self { authority, path })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Hands every later publish of `hub` on to `endpoint` as well, from a task
/// on the current runtime that ends when the hub is dropped.
pub fn start(hub: &std::sync::Arc<Hub>, endpoint: Endpoint) {
    let (tx, rx) = mpsc::unbounded_channel();
    hub.forward(tx);
    tokio::spawn(send(endpoint, rx, std::sync::Arc::downgrade(hub)));
}

async fn send(endpoint: Endpoint, mut items: mpsc::UnboundedReceiver<Item>, hub: Weak<Hub>) {
    let mut batch = Vec::new();
    while items.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if hub.strong_count() == 0 {
            return;
        }
        let body = publish::to_json(&batch);
        match tokio::time::timeout(TIMEOUT, post(&endpoint, body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %endpoint, items = batch.len(), error = %e, "the GRIP proxy did not take a publish")
            }
            Err(_) => {
                tracing::warn!(endpoint = %endpoint, items = batch.len(), "the GRIP proxy did not answer a publish in time")
            }
        }
        batch.clear();
    }
}

async fn post(endpoint: &Endpoint, body: String) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(&endpoint.path)
        .header(http::header::HOST, &endpoint.authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "it answered {status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(200)])
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_and_checked() {
        let e: Endpoint = "http://127.0.0.1:5561".parse().unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:5561/publish/");
        assert!(
            "https://x:1/"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("plain http")
        );
        assert!(
            "http://x/"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!("nope nope".parse::<Endpoint>().is_err());
    }
}
