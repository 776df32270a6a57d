//! A real Jaeger for the tests and the demo: the v2 `jaeger` binary (an OpenTelemetry
//! collector with Jaeger's storage and query extensions), built by `scripts/jaeger-build.sh`
//! from its Go module pinned in `tools/jaeger`, run with a config of ours: in-memory storage of
//! at most [`MAX_TRACES`] traces, an OTLP/gRPC receiver and the query HTTP API on the addresses
//! the caller chooses, and otherwise only the query gRPC API (which cannot be turned off) on an
//! ephemeral port of the query address; none of its own telemetry (no metrics endpoint, no
//! self-tracing, which the query extension would otherwise export to OTLP's default address,
//! `localhost:4317`). Traces are read back through the query API (`/api/traces`, the JSON the
//! UI reads), into [`Trace`]s.
//!
//! ```no_run
//! # fn main() -> weft_lab::Result<()> {
//! use weft_lab::jaeger::Jaeger;
//! let dir = tempfile::tempdir().expect("temp dir");
//! let j = Jaeger::start(dir.path(), "127.0.0.1:24317".parse().expect("addr"),
//!     "127.0.0.1:26686".parse().expect("addr"), None)?;
//! // ... export spans to j.otlp_addr() ...
//! let traces = j.traces("web")?;
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde::Deserialize;

use crate::{
    error::{Error, Result},
    http::{self, HttpReply},
    netns::Netns,
    prereq,
    process::{self, Daemon},
    wait,
};

/// Set to `1` (CI does) to turn the skip of a test that needs Jaeger into a failure.
pub const REQUIRE_ENV: &str = "WEFT_REQUIRE_JAEGER_TESTS";
/// What builds the binary, relative to the repository.
pub const BUILD_SCRIPT: &str = "scripts/jaeger-build.sh";
/// Traces the in-memory store keeps at most; the oldest go first.
pub const MAX_TRACES: usize = 10_000;
/// Traces one [`Jaeger::traces`] call asks for at most.
pub const TRACE_LIMIT: usize = 1000;
/// How long Jaeger may take to answer on both addresses.
const READY_PATIENCE: Duration = Duration::from_secs(30);

/// A running Jaeger; killed (by PID) on drop.
#[derive(Debug)]
pub struct Jaeger {
    daemon: Daemon,
    otlp: SocketAddr,
    query: SocketAddr,
    /// Where it runs, to read the query API from there (never deleted by this handle).
    netns: Option<Netns>,
}

/// One trace as the query API returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// 32 lowercase hex digits (Jaeger drops the leading zeros of a 64-bit id; put back here).
    pub trace_id: String,
    pub spans: Vec<Span>,
}

/// One span of a [`Trace`].
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The span its `CHILD_OF` reference names (OTLP's parent span id), if any.
    pub parent: Option<String>,
    pub operation: String,
    /// The `span.kind` tag (`client`, `server`, ...), which Jaeger makes of OTLP's kind.
    pub kind: Option<String>,
    /// Its process's service name (OTLP's resource `service.name`).
    pub service: String,
    /// The span's tags: OTLP attributes, plus what Jaeger adds (`span.kind`, `otel.*`).
    pub tags: Vec<Tag>,
}

/// A tag, with its JSON value as Jaeger typed it (a string, a number or a bool).
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: serde_json::Value,
}

impl Jaeger {
    /// Writes its config to `work_dir/jaeger.yaml`, starts it (in `netns` if given, else in
    /// this process's namespace) with its log in `work_dir/jaeger.log`, and returns once the
    /// query API answers on `query_addr` and the OTLP receiver accepts connections on
    /// `otlp_addr`. Both should be loopback addresses: nothing else listens.
    pub fn start(
        work_dir: &Path,
        otlp_addr: SocketAddr,
        query_addr: SocketAddr,
        netns: Option<&Netns>,
    ) -> Result<Jaeger> {
        let bin = locate()?;
        let config_path = work_dir.join("jaeger.yaml");
        std::fs::write(&config_path, config(otlp_addr, query_addr))
            .map_err(Error::io(format!("write {}", config_path.display())))?;
        let mut cmd = match netns {
            Some(ns) => ns.command("setpriv"),
            None => Command::new("setpriv"),
        };
        // Killed with the process that started it, even when that one is killed outright; an
        // empty environment, so no OTEL_* variable of the caller's changes what it does.
        cmd.arg("--pdeathsig=KILL")
            .arg(&bin)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--config")
            .arg(&config_path);
        let daemon = Daemon::spawn("jaeger", &mut cmd, &work_dir.join("jaeger.log"))?;
        let mut jaeger = Jaeger {
            daemon,
            otlp: otlp_addr,
            query: query_addr,
            netns: netns.map(|ns| Netns::attach(ns.name())).transpose()?,
        };
        // The collector starts its extensions (the query API) before its receivers: wait for
        // both, or the first export could find no receiver.
        let what = format!("jaeger's query API on {query_addr} and OTLP receiver on {otlp_addr}");
        let ready = wait::until(what, READY_PATIENCE, || {
            if let Err(e) = jaeger.daemon.check_running() {
                return Some(Err(e));
            }
            let up = jaeger.connect(otlp_addr).is_ok()
                && jaeger.get("/api/services").is_ok_and(|r| r.status == 200);
            up.then_some(Ok(()))
        });
        wait::ready_or_log(ready, || jaeger.log())?;
        Ok(jaeger)
    }

    /// Where it takes OTLP/gRPC (`WEFT_TRACE_COLLECTOR`).
    pub fn otlp_addr(&self) -> SocketAddr {
        self.otlp
    }

    /// Where its query API answers (`http://<addr>/api/...`; the module ships no UI, so `/`
    /// is a placeholder page).
    pub fn query_addr(&self) -> SocketAddr {
        self.query
    }

    /// The traces of `service` (up to [`TRACE_LIMIT`], newest first, from the last two days).
    pub fn traces(&self, service: &str) -> Result<Vec<Trace>> {
        let path = format!(
            "/api/traces?service={}&limit={TRACE_LIMIT}",
            http::query_escape(service)
        );
        let reply = self.get(&path)?;
        let what = || format!("GET http://{}{path} (jaeger's query API)", self.query);
        if reply.status != 200 {
            return Err(Error::Protocol {
                what: format!("{}: status {}", what(), reply.status),
                answer: reply.body,
            });
        }
        parse_traces(&reply.body).map_err(|e| Error::Protocol {
            what: format!("{}: {e}", what()),
            answer: reply.body,
        })
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Its PID.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    fn connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        match &self.netns {
            Some(ns) => ns.connect(addr, http::IO_TIMEOUT),
            None => {
                let what = || format!("connect to {addr}");
                let s = TcpStream::connect_timeout(&addr, http::IO_TIMEOUT)
                    .map_err(Error::io(what()))?;
                s.set_read_timeout(Some(http::IO_TIMEOUT))
                    .and_then(|()| s.set_write_timeout(Some(http::IO_TIMEOUT)))
                    .map_err(Error::io(what()))?;
                Ok(s)
            }
        }
    }

    fn get(&self, path: &str) -> Result<HttpReply> {
        let mut conn = self.connect(self.query)?;
        http::request(&mut conn, self.query, &self.query.to_string(), path)
    }
}

/// The binary `scripts/jaeger-build.sh --locate` names for the current sources; an error
/// naming the script when it has not been built.
pub fn locate() -> Result<PathBuf> {
    let script = repo_root().join(BUILD_SCRIPT);
    let out = process::run_with_input(
        Command::new(&script).arg("--locate"),
        b"",
        process::COMMAND_TIMEOUT,
    )?;
    let path = PathBuf::from(out.stdout.trim());
    if !out.status.success() || !path.is_file() {
        return Err(Error::ToolNotBuilt {
            tool: "jaeger",
            script: BUILD_SCRIPT,
            reason: out.stderr.trim().to_string(),
        });
    }
    Ok(path)
}

/// For tests: `true` if Jaeger is built; otherwise the loud skip (`SKIPPED: <test>: ...`), or
/// with `WEFT_REQUIRE_JAEGER_TESTS=1` a failure.
pub fn should_run(test: &str) -> bool {
    prereq::run_or_skip_unless(REQUIRE_ENV, test, locate().err().map(|e| e.to_string()))
}

/// The config: only what the tests use, on the caller's addresses.
///
/// Public for Jaeger in a pod (the k8s tier), where the addresses are the pod's own.
pub fn config(otlp: SocketAddr, query: SocketAddr) -> String {
    // The query extension's gRPC API cannot be turned off: an ephemeral port beside the HTTP
    // one. Addresses are quoted (`[::1]:4317` is a YAML list otherwise).
    let query_grpc = SocketAddr::new(query.ip(), 0);
    format!(
        r#"# Written by weft-lab (lab/src/jaeger.rs).
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    # The collector's own metrics would listen on :8888 and its traces need an exporter.
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {MAX_TRACES}
  jaeger_query:
    storage:
      traces: memstore
    # On by default in v2: it would export its own spans to the OTLP default address.
    enable_tracing: false
    # Show spans as they were sent.
    max_clock_skew_adjust: 0s
    http:
      endpoint: "{query}"
    grpc:
      endpoint: "{query_grpc}"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{otlp}"
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
    )
}

/// The repository (this crate is `lab/` in it).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The query API's answer, as Jaeger writes it (`model/json`), only the fields read here.
#[derive(Deserialize)]
struct Answer {
    /// `null` in an error answer.
    data: Option<Vec<RawTrace>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<RawSpan>,
    #[serde(default)]
    processes: HashMap<String, RawProcess>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpan {
    #[serde(rename = "spanID")]
    span_id: String,
    operation_name: String,
    #[serde(default)]
    references: Vec<RawReference>,
    #[serde(default)]
    tags: Vec<RawTag>,
    #[serde(rename = "processID")]
    process_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReference {
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProcess {
    service_name: String,
}

#[derive(Deserialize)]
struct RawTag {
    key: String,
    value: serde_json::Value,
}

/// The traces of a `/api/traces` answer (for a Jaeger this module did not start).
pub fn parse_traces(body: &str) -> serde_json::Result<Vec<Trace>> {
    let answer: Answer = serde_json::from_str(body)?;
    Ok(answer
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|t| Trace {
            trace_id: pad_hex(&t.trace_id, 32),
            spans: t
                .spans
                .into_iter()
                .map(|s| {
                    let tags: Vec<Tag> = s
                        .tags
                        .into_iter()
                        .map(|t| Tag {
                            key: t.key,
                            value: t.value,
                        })
                        .collect();
                    Span {
                        span_id: pad_hex(&s.span_id, 16),
                        parent: s
                            .references
                            .iter()
                            .find(|r| r.ref_type == "CHILD_OF")
                            .map(|r| pad_hex(&r.span_id, 16)),
                        operation: s.operation_name,
                        kind: tags
                            .iter()
                            .find(|t| t.key == "span.kind")
                            .and_then(|t| t.value.as_str())
                            .map(str::to_string),
                        service: t
                            .processes
                            .get(&s.process_id)
                            .map(|p| p.service_name.clone())
                            .unwrap_or_default(),
                        tags,
                    }
                })
                .collect(),
        })
        .collect())
}

/// A hex id lowercased and left-padded with zeros to `width` digits.
fn pad_hex(id: &str, width: usize) -> String {
    format!("{:0>width$}", id.to_ascii_lowercase())
}

impl Trace {
    /// Its span `span_id` (16 hex digits).
    pub fn span(&self, span_id: &str) -> Option<&Span> {
        self.spans.iter().find(|s| s.span_id == span_id)
    }
}

impl Span {
    /// The value of its tag `key`.
    pub fn tag(&self, key: &str) -> Option<&serde_json::Value> {
        self.tags.iter().find(|t| t.key == key).map(|t| &t.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_apis_json_reads_into_traces() {
        // Shortened from a real answer of Jaeger v1.75's /api/traces.
        let body = r#"{"data":[{"traceID":"ab","spans":[
            {"traceID":"ab","spanID":"2","operationName":"GET","references":[
                {"refType":"FOLLOWS_FROM","traceID":"ab","spanID":"9"},
                {"refType":"CHILD_OF","traceID":"ab","spanID":"00000000000000A1"}],
             "startTime":1,"duration":2,"tags":[
                {"key":"span.kind","type":"string","value":"server"},
                {"key":"http.response.status_code","type":"int64","value":200}],
             "logs":[],"processID":"p1","warnings":null}],
            "processes":{"p1":{"serviceName":"web","tags":[]}},"warnings":null}],
            "total":0,"limit":0,"offset":0,"errors":null}"#;
        let traces = parse_traces(body).expect("parses");
        assert_eq!(traces.len(), 1);
        let t = &traces[0];
        assert_eq!(t.trace_id, format!("{}ab", "0".repeat(30)));
        let s = t.span("0000000000000002").expect("span");
        assert_eq!(s.parent.as_deref(), Some("00000000000000a1"));
        assert_eq!(s.kind.as_deref(), Some("server"));
        assert_eq!(s.service, "web");
        assert_eq!(
            s.tag("http.response.status_code")
                .and_then(serde_json::Value::as_i64),
            Some(200)
        );
        assert_eq!(parse_traces(r#"{"data":null}"#).ok(), Some(vec![]));
        assert!(parse_traces("<html>").is_err());
        assert_eq!(parse_traces(r#"{"data":[]}"#).ok(), Some(vec![]));
    }

    #[test]
    fn the_config_binds_only_what_it_is_given() {
        let c = config(
            "127.0.0.1:4317".parse().expect("addr"),
            "[::1]:16686".parse().expect("addr"),
        );
        assert!(c.contains(r#"endpoint: "127.0.0.1:4317""#), "{c}");
        assert!(c.contains(r#"endpoint: "[::1]:16686""#), "{c}");
        assert!(c.contains(r#"endpoint: "[::1]:0""#), "{c}");
        assert!(!c.contains("0.0.0.0") && !c.contains("localhost:"), "{c}");
    }
}
