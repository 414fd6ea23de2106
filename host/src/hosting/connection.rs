//! What the host checks of one accepted TCP connection before and around
//! HTTP: that its first bytes come soon and look like HTTP/1.1 or the
//! HTTP/2 preface, that it does not sit idle, and that a request body keeps
//! arriving at a pace.
//!
//! hyper parses HTTP; this module only bounds time and refuses openings
//! hyper would answer badly (an HTTP/1 `400` to a client that speaks
//! neither HTTP/1 nor a valid HTTP/2 preface). It knows no apps or versions.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// Connections open at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, counted from
    /// when it opens or from its previous answer.
    pub header_timeout: Duration,
    /// How long a connection with no request in flight may stay open
    /// without sending a byte (HTTP/2 idles this way between requests).
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive; each [`PACE_BYTES`]
    /// received adds a second, so a large upload at a steady pace is never
    /// cut off, while a body trickled in byte by byte is.
    pub body_timeout: Duration,
}

/// Bytes of request body that earn one more second of `body_timeout`.
pub const PACE_BYTES: u64 = 64 << 10;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// How a connection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// An HTTP/1.x request line or the HTTP/2 preface: hand it to hyper.
    Http,
    /// The peer closed before sending a full first line.
    Closed,
    /// Nothing (or not a full first line) within the header timeout.
    Silent,
    /// A request line ended by a bare LF: refused with `400`, since
    /// servers and proxies that split lines differently disagree on where
    /// a request ends (a request-smuggling vector).
    BareLf,
    /// Neither HTTP/1.x nor the HTTP/2 preface: refused with an HTTP/2
    /// GOAWAY, which is what a client sending a damaged preface expects.
    NotHttp,
    /// A first line longer than any sane request line.
    TooLong,
}

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest first line read while sniffing; hyper applies its own header
/// limits after that.
const MAX_FIRST_LINE: usize = 8 << 10;

/// Waits (at most `timeout`) for the first line of `stream` and tells how
/// it opened, without consuming any bytes: hyper reads them afterwards.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> Opening {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_FIRST_LINE];
    let mut pause = Duration::from_millis(2);
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Err(_) => return Opening::Silent,
            Ok(Err(_)) | Ok(Ok(0)) => return Opening::Closed,
            Ok(Ok(n)) => n,
        };
        if let Some(opening) = judge(&buf[..n]) {
            return opening;
        }
        if n == buf.len() {
            return Opening::TooLong;
        }
        // peek returns at once while the bytes it saw are unread, so a line
        // that comes in pieces is looked at again after a pause that grows:
        // a client that trickles its first line costs little.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(pause))
            .await
            .is_err()
        {
            return Opening::Silent;
        }
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Judges the first bytes of a connection; `None` while they could still
/// become either a valid or an invalid opening.
fn judge(bytes: &[u8]) -> Option<Opening> {
    // RFC 9112 2.2: empty lines before a request line are ignored.
    let mut bytes = bytes;
    while let Some(rest) = bytes.strip_prefix(b"\r\n") {
        bytes = rest;
    }
    if bytes.is_empty() || bytes == b"\r" {
        return None;
    }
    let preface_len = bytes.len().min(H2_PREFACE.len());
    if bytes[..preface_len] == H2_PREFACE[..preface_len] {
        return (bytes.len() >= H2_PREFACE.len()).then_some(Opening::Http);
    }
    // METHOD SP TARGET SP HTTP/1.x CRLF: check each part as it arrives, so
    // garbage is refused before its line ends (or without one at all).
    let mut parts = bytes.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let method_done = bytes.len() > method.len();
    let method_ok = !method.is_empty() && method.iter().all(|&b| is_token(b));
    if !method.iter().all(|&b| is_token(b)) || (method_done && !method_ok) {
        return Some(Opening::NotHttp);
    }
    let target = parts.next().unwrap_or_default();
    if target.iter().any(|&b| b.is_ascii_control()) {
        return Some(not_http_or_bare_lf(target));
    }
    let rest = parts.next()?;
    const VERSION: &[u8] = b"HTTP/1.";
    let head = &rest[..rest.len().min(VERSION.len())];
    if head != &VERSION[..head.len()] {
        return Some(Opening::NotHttp);
    }
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        return (rest.len() > VERSION.len() + 2).then_some(Opening::NotHttp);
    };
    match &rest[VERSION.len().min(lf)..lf] {
        [b'0' | b'1', b'\r'] => Some(Opening::Http),
        [b'0' | b'1'] => Some(Opening::BareLf),
        _ => Some(Opening::NotHttp),
    }
}

/// A control byte inside the target: a line ended early by a bare LF, or
/// not HTTP at all.
fn not_http_or_bare_lf(target: &[u8]) -> Opening {
    match target.iter().position(|b| b.is_ascii_control()) {
        Some(at) if target[at] == b'\n' => Opening::BareLf,
        _ => Opening::NotHttp,
    }
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a refused opening is told before the connection closes.
pub fn refusal(opening: Opening) -> Option<&'static [u8]> {
    match opening {
        Opening::BareLf => Some(
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 48\r\n\r\nrequest lines must end with CRLF, not a bare LF\n"
                .as_slice(),
        ),
        Opening::TooLong => Some(
            b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".as_slice(),
        ),
        // An empty SETTINGS frame (the server preface), then GOAWAY with
        // last stream 0 and PROTOCOL_ERROR.
        Opening::NotHttp => Some(
            &[
                0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, empty
                0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes
                0, 0, 0, 0, 0, 0, 0, 1, // last stream 0, PROTOCOL_ERROR
            ],
        ),
        Opening::Http | Opening::Closed | Opening::Silent => None,
    }
}

/// The last moment a connection read a byte, and how many requests it has
/// in flight: what the idle watchdog looks at.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_read_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    /// A connection that just opened.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_read_ms.store(now, Ordering::Relaxed);
    }

    /// How long the connection has been idle: zero while a request is in
    /// flight (a guest may take its time before it answers).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_read_ms.load(Ordering::Relaxed)))
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection; held by its response body, so a
/// long answer streaming out does not count as idle.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until the
/// last byte is out.
pub struct Held<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Held<B> {
    /// `inner`, holding `in_flight` until it is sent or dropped.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket that notes every read in its [`Activity`].
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// `inner`, reporting to `activity`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails with a read timeout once it falls behind its
/// pace (see [`ConnectionLimits::body_timeout`]), and notes that it did in
/// `hit`, so the host can answer `408` for the guest.
pub struct Paced<B> {
    inner: B,
    budget: Duration,
    received: u64,
    /// When the guest first asked for the body: the clock starts there, not
    /// at the request's arrival, so a guest that reads late (after a queue
    /// wait, or from a client that sends only after `100 Continue`) is not
    /// cut off for its own delay.
    started: Option<tokio::time::Instant>,
    /// Made on the first wait for data, so a body read in one go (or never)
    /// costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    hit: Arc<AtomicBool>,
}

impl<B> Paced<B> {
    /// `inner`, which must arrive within `budget` (plus a second per
    /// [`PACE_BYTES`]) of its first read; `hit` is set when it does not.
    pub fn new(inner: B, budget: Duration, hit: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            budget,
            received: 0,
            started: None,
            timer: None,
            hit,
        }
    }

    fn deadline(&self, started: tokio::time::Instant) -> tokio::time::Instant {
        let earned = Duration::from_secs(self.received / PACE_BYTES);
        started + self.budget.saturating_add(earned)
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let started = *this.started.get_or_insert_with(tokio::time::Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let deadline = this.deadline(started);
                    if let Some(timer) = this.timer.as_mut() {
                        timer.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline(started);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.hit.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(
                        wasmtime_wasi_http::Error::ConnectionReadTimeout,
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_are_judged_as_their_bytes_arrive() {
        let cases: &[(&[u8], Option<Opening>)] = &[
            (b"GET / HTTP/1.1\r\n", Some(Opening::Http)),
            (b"GET / HTTP/1.0\r\nHost: x\r\n", Some(Opening::Http)),
            (b"GET / HTTP/1.1\n", Some(Opening::BareLf)),
            (b"GET /\n", Some(Opening::BareLf)),
            (b"GET / HTTP/1.", None),
            (b"GE", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Opening::Http)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ", Some(Opening::NotHttp)),
            (b"INVALID CONNECTION PREFACE", Some(Opening::NotHttp)),
            (
                b"INVALID CONNECTION PREFACE\r\n\r\n",
                Some(Opening::NotHttp),
            ),
            (b"\x16\x03\x01\x02\x00", Some(Opening::NotHttp)),
            (b"GET / HTTP/2.0\r\n", Some(Opening::NotHttp)),
            (b"\r\nGET / HTTP/1.1\r\n", Some(Opening::Http)),
            (b"\r\n", None),
            (b"GET / HTTP/1.1 extra\r\n", Some(Opening::NotHttp)),
        ];
        for (bytes, want) in cases {
            assert_eq!(judge(bytes), *want, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn the_bare_lf_answer_declares_its_length() {
        let text = refusal(Opening::BareLf).unwrap();
        let text = std::str::from_utf8(text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}\r", body.len()))
                || head.ends_with(&format!("content-length: {}", body.len()))
        );
    }

    #[test]
    fn an_idle_connection_is_not_idle_while_a_request_is_in_flight() {
        let activity = Activity::new();
        let request = activity.request();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(request);
        assert!(activity.idle_for() < Duration::from_millis(20));
    }
}
