//! One request in, one answer out: the routes, the echo's JSON, the retry simulator and the
//! delays. Generic over the request body so unit tests drive it with paused time and no
//! sockets; the server wires it to connections.

use std::{
    collections::BTreeMap,
    pin::pin,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    parse::{self, DurationError, QueryError},
    retry::{RetryCount, RetryCounters, Verdict, MAX_UUID_LEN},
    EchoIdentity, Settings,
};

/// The header whose `Name: value` pairs become response headers.
pub const SET_HEADER: &str = "x-echo-set-header";

/// What an echo app holds across requests and connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) identity: EchoIdentity,
    pub(crate) settings: Settings,
    pub(crate) retries: Mutex<RetryCounters>,
}

impl Shared {
    pub(crate) fn retry_count(&self, uuid: &str) -> Option<RetryCount> {
        self.retries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uuid)
    }
}

/// The answer to one request.
#[derive(Debug)]
pub(crate) enum Answer {
    Respond(Response<Full<Bytes>>),
    /// No response: the retry simulator's failure without `responseCode`, or the end of the
    /// drain at shutdown. HTTP/1 resets the TCP connection, HTTP/2 the stream.
    Reset,
}

/// A request the echo app refuses, naming the query parameter or header at fault.
#[derive(Debug)]
struct BadRequest {
    parameter: &'static str,
    message: String,
}

impl BadRequest {
    fn new(parameter: &'static str, problem: impl std::fmt::Display) -> Self {
        Self {
            parameter,
            message: format!("{parameter}: {problem}"),
        }
    }
}

/// The waits were cut short by the end of the drain.
struct Aborted;

/// What the echo route reads from a request before it answers: checked up front, so a bad
/// request costs the retry simulator no attempt.
struct EchoParams {
    delay: Duration,
    set_headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The echo's JSON, field for field what Gateway API's echo-basic answers.
#[derive(Serialize)]
struct Assertions<'a> {
    path: &'a str,
    host: &'a str,
    method: &'a str,
    proto: &'a str,
    headers: BTreeMap<String, Vec<String>>,
    #[serde(rename = "httpPort")]
    http_port: String,
    namespace: &'a str,
    ingress: &'a str,
    service: &'a str,
    pod: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    parameter: &'a str,
}

#[derive(Serialize)]
struct RetryCountBody<'a> {
    uuid: &'a str,
    attempts: u64,
    failures: u64,
}

/// Answers `req`, which arrived on the listener of `port`. `abort` ends every wait (body,
/// delay) early: the drain at shutdown has run out.
pub(crate) async fn answer<B>(
    shared: &Shared,
    port: u16,
    abort: &CancellationToken,
    req: Request<B>,
) -> Answer
where
    B: Body,
{
    let (parts, body) = req.into_parts();
    if drain(body, &shared.settings, abort).await.is_err() {
        return Answer::Reset;
    }
    let req = Request::from_parts(parts, ());
    let result = match route(req.uri().path()).as_str() {
        "/health" => Ok(Answer::Respond(text(StatusCode::OK, "OK"))),
        "/retry-count" => retry_count(shared, &req),
        path if path.starts_with("/status/") => Ok(Answer::Respond(status(&req))),
        path if path.starts_with("/retry/") => retry(shared, port, abort, &req).await,
        _ => match EchoParams::read(&req, &shared.settings) {
            Ok(params) => Ok(echo(shared, port, abort, &req, params).await),
            Err(bad) => Err(bad),
        },
    };
    result.unwrap_or_else(|bad| Answer::Respond(bad_request(&bad)))
}

/// The path routes are chosen on: runs of `/` collapsed, as echo-basic collapses `//` before
/// its mux. The echo's `path` field is still the raw request target.
fn route(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Reads and discards the request body, at most `max_body_bytes` of it and for at most
/// `body_timeout`: enough for a client that sends one to see its request taken; nothing is
/// kept. Past either bound the rest is left unread (HTTP/1 then closes the connection after
/// the response, HTTP/2 resets the stream), as Go's server does after its own drain limit.
async fn drain<B: Body>(
    body: B,
    settings: &Settings,
    abort: &CancellationToken,
) -> Result<(), Aborted> {
    let read = async {
        let mut body = pin!(body);
        let mut seen: u64 = 0;
        while seen <= settings.max_body_bytes {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        seen = seen.saturating_add(data.remaining() as u64);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
    };
    tokio::select! {
        () = abort.cancelled() => Err(Aborted),
        _ = tokio::time::timeout(settings.body_timeout, read) => Ok(()),
    }
}

async fn wait(duration: Duration, abort: &CancellationToken) -> Result<(), Aborted> {
    if duration.is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = abort.cancelled() => Err(Aborted),
        () = tokio::time::sleep(duration) => Ok(()),
    }
}

impl EchoParams {
    fn read(req: &Request<()>, settings: &Settings) -> Result<Self, BadRequest> {
        let delay = duration_param(req, "delay", settings.max_delay)?;
        let set_headers = parse::set_headers(
            req.headers()
                .get_all(SET_HEADER)
                .iter()
                .map(HeaderValue::as_bytes),
        )
        .map_err(|e| BadRequest::new("X-Echo-Set-Header", e))?;
        Ok(Self { delay, set_headers })
    }
}

/// The echo: waits `?delay=`, then answers 200 with the request described in JSON.
async fn echo(
    shared: &Shared,
    port: u16,
    abort: &CancellationToken,
    req: &Request<()>,
    params: EchoParams,
) -> Answer {
    if wait(params.delay, abort).await.is_err() {
        return Answer::Reset;
    }
    let EchoIdentity {
        namespace,
        pod,
        service,
    } = &shared.identity;
    let assertions = Assertions {
        path: &request_target(req),
        host: &host(req),
        method: req.method().as_str(),
        proto: proto(req.version()),
        headers: headers(req.headers()),
        http_port: port.to_string(),
        namespace,
        ingress: "",
        service: service.as_deref().unwrap_or(""),
        pod,
    };
    let mut response = json(StatusCode::OK, &assertions);
    let headers = response.headers_mut();
    // Set first, then the content type over them: echo-basic's order, so the JSON is
    // always labelled JSON.
    for (name, value) in params.set_headers {
        headers.insert(name, value);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Answer::Respond(response)
}

/// `/retry/...`: the retry simulator. The first `succeedAfter` requests with one `uuid` fail
/// (after `delayRetry`): with `responseCode` if given, else by resetting the connection; the
/// ones after are answered as the echo answers them.
async fn retry(
    shared: &Shared,
    port: u16,
    abort: &CancellationToken,
    req: &Request<()>,
) -> Result<Answer, BadRequest> {
    let uuid = uuid_param(req)?;
    let succeed_after: u64 = match query(req, "succeedAfter")? {
        None => return Err(BadRequest::new("succeedAfter", "is required: how many requests with this uuid fail before one succeeds (e.g. succeedAfter=2)")),
        Some(v) => v.parse().map_err(|_| {
            BadRequest::new("succeedAfter", format!("{v:?} is not a whole number of requests (0 or more)"))
        })?,
    };
    let response_code = match query(req, "responseCode")? {
        None => None,
        Some(v) => Some(
            v.parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    BadRequest::new(
                        "responseCode",
                        format!("{v:?} is not an HTTP status from 200 to 599 (leave it out to reset the connection instead)"),
                    )
                })?,
        ),
    };
    let delay_retry = duration_param(req, "delayRetry", shared.settings.max_delay)?;
    let params = EchoParams::read(req, &shared.settings)?;
    let verdict = shared
        .retries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(&uuid, succeed_after);
    if verdict == Verdict::Succeed {
        return Ok(echo(shared, port, abort, req, params).await);
    }
    if wait(delay_retry, abort).await.is_err() {
        return Ok(Answer::Reset);
    }
    Ok(match response_code {
        Some(code) => Answer::Respond(empty(code)),
        None => Answer::Reset,
    })
}

/// `/retry-count?uuid=...`: what the retry simulator saw of one uuid, zeros if it saw
/// nothing (or forgot it, past its capacity).
fn retry_count(shared: &Shared, req: &Request<()>) -> Result<Answer, BadRequest> {
    let uuid = uuid_param(req)?;
    let count = shared.retry_count(&uuid).unwrap_or_default();
    Ok(Answer::Respond(json(
        StatusCode::OK,
        &RetryCountBody {
            uuid: &uuid,
            attempts: count.attempts,
            failures: count.failures,
        },
    )))
}

/// `/status/NNN`: answers status NNN, as echo-basic does when the whole request target is
/// `/status/` and three digits; anything else there is a 400. 1xx are refused (they are not
/// final responses).
fn status(req: &Request<()>) -> Response<Full<Bytes>> {
    let target = request_target(req);
    let code = target
        .strip_prefix("/status/")
        .filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u16>().ok())
        .filter(|&c| c >= 200)
        .and_then(|c| StatusCode::from_u16(c).ok());
    match code {
        Some(code) => empty(code),
        None => bad_request(&BadRequest {
            parameter: "path",
            message: format!("path: {target:?} is not /status/ and a status from 200 to 999"),
        }),
    }
}

fn uuid_param(req: &Request<()>) -> Result<String, BadRequest> {
    match query(req, "uuid")? {
        Some(uuid) if uuid.is_empty() => Err(BadRequest::new("uuid", "is required (and empty)")),
        None => Err(BadRequest::new(
            "uuid",
            "is required: it names the requests the retry simulator counts together",
        )),
        Some(uuid) if uuid.len() > MAX_UUID_LEN => Err(BadRequest::new(
            "uuid",
            format!(
                "is {} bytes, more than the {MAX_UUID_LEN} accepted",
                uuid.len()
            ),
        )),
        Some(uuid) => Ok(uuid),
    }
}

fn query(req: &Request<()>, name: &'static str) -> Result<Option<String>, BadRequest> {
    parse::query_param(req.uri().query().unwrap_or(""), name)
        .map_err(|e: QueryError| BadRequest::new(name, e))
}

/// A duration parameter, zero when absent or empty (echo-basic waits only for a non-empty
/// value).
fn duration_param(
    req: &Request<()>,
    name: &'static str,
    max: Duration,
) -> Result<Duration, BadRequest> {
    match query(req, name)? {
        None => Ok(Duration::ZERO),
        Some(v) if v.is_empty() => Ok(Duration::ZERO),
        Some(v) => {
            parse::parse_duration(&v, max).map_err(|e: DurationError| BadRequest::new(name, e))
        }
    }
}

/// The raw request target, as Go's `Request.RequestURI`: the origin form (`/a?b`) as sent,
/// the absolute form (`http://h/a`) whole, and HTTP/2's `:path`.
fn request_target(req: &Request<()>) -> String {
    let uri = req.uri();
    match (req.version(), uri.path_and_query()) {
        (Version::HTTP_2, Some(pq)) => pq.as_str().to_owned(),
        _ => uri.to_string(),
    }
}

/// The host, as Go's `Request.Host`: the authority of an absolute-form target or of HTTP/2's
/// `:authority`, else the `Host` header.
fn host(req: &Request<()>) -> String {
    match req.uri().authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => req
            .headers()
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default(),
    }
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Every request header, as Go's `Request.Header`: names spelled the Go way, values in
/// order, and without `Host` and `Transfer-Encoding`, which Go moves out of the map.
fn headers(map: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in map {
        if name == header::HOST || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.entry(parse::canonical_header_name(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// A JSON response, indented one space as Go's `json.MarshalIndent(v, "", " ")` is.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let mut body = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut body, formatter);
    // Serializing these plain structs into a Vec cannot fail; if it ever did, the client
    // gets an empty body with the status rather than a panic.
    if value.serialize(&mut serializer).is_err() {
        body.clear();
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn bad_request(bad: &BadRequest) -> Response<Full<Bytes>> {
    json(
        StatusCode::BAD_REQUEST,
        &ErrorBody {
            message: &bad.message,
            parameter: bad.parameter,
        },
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests;
