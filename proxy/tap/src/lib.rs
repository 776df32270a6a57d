//! Tap: a live stream of the requests a proxy serves, for `weftctl tap` and `weftctl top`.
//!
//! A [`Tap`] has at most [`MAX_TAPS`] subscribers, each with a [`Spec`] (a filter, an event
//! limit, which headers) and a queue of [`BUFFER`] events that the admin server drains into its
//! HTTP response as it is read. The data path never waits for a reader:
//!
//! - while nobody taps, a request costs one relaxed atomic load ([`Point::start`]);
//! - while somebody taps, a request some subscriber's filter matches is captured when it
//!   arrives (method, authority, path and, when asked for, its headers) and published once its
//!   answer's head is ready ([`Started::finish`]): encoded once per header choice, then
//!   `try_send` into each matching queue. A full queue (a reader that stopped reading) drops
//!   the event, counts it, and tells that reader how many it missed (`{"dropped":N}`) before
//!   the next event it gets.
//!
//! A subscription ends after its limit, or when its reader goes away ([`Stream`] dropped).
//!
//! Events are JSON lines (`application/x-ndjson`): see [`Event`].

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, RwLock,
    },
    task::{Context, Poll},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

mod spec;

pub use spec::{Filter, Headers, Spec, SpecError, DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY};

/// Subscribers one proxy serves at once; one more is refused ([`Busy`]).
pub const MAX_TAPS: usize = 8;
/// Events queued per subscriber; past them, events for that subscriber are dropped.
pub const BUFFER: usize = 256;
/// Headers an event carries at most (the rest are left out, and counted).
pub const MAX_HEADERS: usize = 64;
/// Bytes of a header value an event carries at most (longer values are cut, marked `...`).
pub const MAX_HEADER_VALUE: usize = 1024;
/// The most bytes one body frame joins (it may pass it by one line).
pub const MAX_FRAME: usize = 64 * 1024;
/// What a sensitive header's value becomes under [`Headers::Redacted`].
pub const REDACTED: &str = "[redacted]";

/// Which side of the proxy a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Toward this pod's app.
    Inbound,
    /// From this pod's app.
    Outbound,
}

/// Whether a header's value is redacted under [`Headers::Redacted`]: credentials and session
/// state by name (`authorization`, `proxy-authorization`, `cookie`, `set-cookie`), and any
/// name containing `token`, `secret`, `password`, `api-key`, `apikey` or `session`.
pub fn is_sensitive(name: &str) -> bool {
    const EXACT: [&str; 4] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ];
    const PARTS: [&str; 6] = [
        "token", "secret", "password", "api-key", "apikey", "session",
    ];
    let name = name.to_ascii_lowercase();
    EXACT.contains(&name.as_str()) || PARTS.iter().any(|p| name.contains(p))
}

/// A proxy's tap: its subscribers and its counts.
#[derive(Debug, Default)]
pub struct Tap {
    /// Subscribers now: the data path's only read while nobody taps.
    active: AtomicUsize,
    subs: RwLock<Vec<Arc<Sub>>>,
    next_id: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Sub {
    id: u64,
    spec: Spec,
    tx: mpsc::Sender<Bytes>,
    /// Events it may still be sent.
    remaining: AtomicU64,
    /// Events dropped since the last one it was sent.
    missed: AtomicU64,
}

/// The counts `weft_tap_events_total` and `weft_tap_streams` report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events queued for a reader.
    pub sent: u64,
    /// Events dropped because a reader's queue was full.
    pub dropped: u64,
    /// Subscribers now.
    pub streams: u64,
}

/// A subscription refused: [`MAX_TAPS`] are open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{MAX_TAPS} taps are open on this proxy, the most it serves at once; try again when one ends"
)]
pub struct Busy;

impl Tap {
    pub fn new() -> Arc<Tap> {
        Arc::new(Tap::default())
    }

    /// Opens a subscription; its events come out of the returned [`Stream`].
    pub fn subscribe(self: &Arc<Self>, spec: Spec) -> Result<Stream, Busy> {
        let mut subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
        if subs.len() >= MAX_TAPS {
            return Err(Busy);
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        subs.push(Arc::new(Sub {
            id,
            remaining: AtomicU64::new(spec.limit),
            spec,
            tx,
            missed: AtomicU64::new(0),
        }));
        self.active.store(subs.len(), Ordering::Release);
        Ok(Stream {
            rx,
            tap: self.clone(),
            id,
        })
    }

    fn unsubscribe(&self, ids: &[u64]) {
        let mut subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| !ids.contains(&s.id));
        self.active.store(subs.len(), Ordering::Release);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            streams: self.active.load(Ordering::Relaxed) as u64,
        }
    }

    /// Whether anybody taps: the one check a request pays while nobody does.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) != 0
    }
}

/// Where requests are tapped: a listener's side of the proxy.
#[derive(Clone, Debug)]
pub struct Point {
    pub tap: Arc<Tap>,
    pub direction: Direction,
}

impl Point {
    pub fn new(tap: Arc<Tap>, direction: Direction) -> Self {
        Self { tap, direction }
    }

    /// Captures `req` if some subscriber's filter matches it; `None` (one atomic load) while
    /// nobody taps.
    #[inline]
    pub fn start<B>(&self, req: &Request<B>) -> Option<Box<Started>> {
        if !self.tap.is_active() {
            return None;
        }
        self.capture(req)
    }

    #[cold]
    fn capture<B>(&self, req: &Request<B>) -> Option<Box<Started>> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok());
        let path = req.uri().path();
        let headers = {
            let subs = self.tap.subs.read().unwrap_or_else(|p| p.into_inner());
            let mut matching = subs.iter().filter(|s| {
                s.spec
                    .filter
                    .matches(self.direction, req.method(), authority, path)
            });
            let first = matching.next()?;
            matching.fold(first.spec.headers, |h, s| h.max_with(s.spec.headers))
        };
        Some(Box::new(Started {
            tap: self.tap.clone(),
            direction: self.direction,
            at: SystemTime::now(),
            start: Instant::now(),
            method: req.method().clone(),
            authority: authority.map(Box::from),
            path: path.into(),
            headers: (headers != Headers::None).then(|| req.headers().clone()),
        }))
    }
}

impl Headers {
    /// The choice that carries what both `self` and `other` need.
    fn max_with(self, other: Headers) -> Headers {
        match (self, other) {
            (Headers::All, _) | (_, Headers::All) => Headers::All,
            (Headers::Redacted, _) | (_, Headers::Redacted) => Headers::Redacted,
            _ => Headers::None,
        }
    }
}

/// A captured request, waiting for its answer.
#[derive(Debug)]
pub struct Started {
    tap: Arc<Tap>,
    direction: Direction,
    at: SystemTime,
    start: Instant,
    method: Method,
    authority: Option<Box<str>>,
    path: Box<str>,
    headers: Option<HeaderMap>,
}

/// How a tapped request was answered, and by whom.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome<'a> {
    pub status: StatusCode,
    /// The proxy's reason when it answered itself (`connect`, `timeout`, ...).
    pub error: Option<&'a str>,
    /// Over mTLS: the identities at both ends; empty otherwise.
    pub tls: bool,
    pub src_identity: &'a str,
    pub dst_identity: &'a str,
    /// The route rule that chose the backend, the backend Service, and the endpoint
    /// (`ip:port`); empty when none.
    pub route: &'a str,
    pub backend: &'a str,
    pub endpoint: &'a str,
    /// Retries after the first try, and the fault injected (`abort <namespace>/<name>` or
    /// `delay <namespace>/<name>`).
    pub retries: u32,
    pub fault: Option<&'a str>,
}

/// One tapped request, as a JSON line: `ts` (Unix seconds, when it arrived), `direction`,
/// `method`, `authority`, `path`, `status`, `latency_ms` (to the answer's head), `error`,
/// `tls`, `src_identity`, `dst_identity`, `route`, `backend`, `endpoint`, `retries`, `fault`
/// (empty ones left out), and `headers` (`[name, value]` pairs) when the tap asked for them.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub ts: f64,
    pub direction: Direction,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<&'a str>,
    pub path: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub tls: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub src_identity: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub dst_identity: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub route: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub backend: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub endpoint: &'a str,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<(&'a str, String)>>,
    /// Headers left out past [`MAX_HEADERS`].
    #[serde(skip_serializing_if = "is_zero")]
    pub headers_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl Started {
    /// Publishes the request with its `outcome` to every subscriber whose filter matches and
    /// whose queue has room; never waits.
    pub fn finish(self, outcome: Outcome<'_>) {
        let latency = self.start.elapsed();
        let mut encoded: [Option<Option<Bytes>>; 3] = [None, None, None];
        let mut done = Vec::new();
        let tap = &self.tap;
        {
            let subs = tap.subs.read().unwrap_or_else(|p| p.into_inner());
            for sub in subs.iter() {
                if !sub.spec.filter.matches(
                    self.direction,
                    &self.method,
                    self.authority.as_deref(),
                    &self.path,
                ) {
                    continue;
                }
                if sub.tx.is_closed() {
                    done.push(sub.id);
                    continue;
                }
                // Reserve one of its remaining events; none left: it is ending.
                if sub
                    .remaining
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_err()
                {
                    done.push(sub.id);
                    continue;
                }
                let missed = sub.missed.load(Ordering::Relaxed);
                if missed > 0 {
                    let marker = Bytes::from(format!("{{\"dropped\":{missed}}}\n"));
                    if sub.tx.try_send(marker).is_ok() {
                        sub.missed.fetch_sub(missed, Ordering::Relaxed);
                    }
                }
                let slot = sub.spec.headers as usize;
                let Some(line) = encoded[slot]
                    .get_or_insert_with(|| self.encode(&outcome, latency, sub.spec.headers))
                    .clone()
                else {
                    sub.remaining.fetch_add(1, Ordering::AcqRel);
                    continue;
                };
                match sub.tx.try_send(line) {
                    Ok(()) => {
                        tap.sent.fetch_add(1, Ordering::Relaxed);
                        if sub.remaining.load(Ordering::Acquire) == 0 {
                            done.push(sub.id);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        sub.remaining.fetch_add(1, Ordering::AcqRel);
                        sub.missed.fetch_add(1, Ordering::Relaxed);
                        tap.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => done.push(sub.id),
                }
            }
        }
        if !done.is_empty() {
            tap.unsubscribe(&done);
        }
    }

    fn encode(
        &self,
        o: &Outcome<'_>,
        latency: std::time::Duration,
        headers: Headers,
    ) -> Option<Bytes> {
        let mut omitted = 0;
        let headers = self
            .headers
            .as_ref()
            .filter(|_| headers != Headers::None)
            .map(|map| {
                omitted = map.len().saturating_sub(MAX_HEADERS);
                map.iter()
                    .take(MAX_HEADERS)
                    .map(|(name, value)| {
                        let name = name.as_str();
                        let value = if headers == Headers::Redacted && is_sensitive(name) {
                            REDACTED.to_owned()
                        } else {
                            cut(&String::from_utf8_lossy(value.as_bytes()))
                        };
                        (name, value)
                    })
                    .collect()
            });
        let event = Event {
            ts: self
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            direction: self.direction,
            method: self.method.as_str(),
            authority: self.authority.as_deref(),
            path: &self.path,
            status: o.status.as_u16(),
            latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
            error: o.error,
            tls: o.tls,
            src_identity: o.src_identity,
            dst_identity: o.dst_identity,
            route: o.route,
            backend: o.backend,
            endpoint: o.endpoint,
            retries: o.retries,
            fault: o.fault,
            headers,
            headers_omitted: omitted,
        };
        // An event is 300-600 bytes without headers: one allocation, not a doubling series.
        let mut line = Vec::with_capacity(if event.headers.is_some() { 2048 } else { 512 });
        // Cannot fail (strings and numbers into a Vec); were it to, the event is not sent.
        serde_json::to_writer(&mut line, &event).ok()?;
        line.push(b'\n');
        Some(Bytes::from(line))
    }
}

/// At most [`MAX_HEADER_VALUE`] bytes of `value`, cut on a character boundary.
fn cut(value: &str) -> String {
    if value.len() <= MAX_HEADER_VALUE {
        return value.to_owned();
    }
    let mut end = MAX_HEADER_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

/// A subscription's events as an HTTP response body: JSON lines, the lines queued when the body
/// is polled joined in one frame (up to [`MAX_FRAME`] bytes: one write for a burst, not one
/// each); it ends after the subscription's limit. Dropping it ends the subscription.
#[derive(Debug)]
pub struct Stream {
    rx: mpsc::Receiver<Bytes>,
    tap: Arc<Tap>,
    id: u64,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let Some(first) = std::task::ready!(self.rx.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        let Ok(second) = self.rx.try_recv() else {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        };
        let mut frame = bytes::BytesMut::with_capacity(MAX_FRAME.min(first.len() * 8));
        frame.extend_from_slice(&first);
        frame.extend_from_slice(&second);
        while frame.len() < MAX_FRAME {
            match self.rx.try_recv() {
                Ok(line) => frame.extend_from_slice(&line),
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(frame.freeze()))))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.tap.unsubscribe(&[self.id]);
    }
}

#[cfg(test)]
mod tests;
