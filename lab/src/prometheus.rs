//! A real Prometheus for the tests, the dashboards' previews and the demo: Debian's
//! `prometheus` binary (package `prometheus`, which `scripts/install-deps.sh` installs), run
//! with a config of ours in the lab's node namespace, scraping what the docs' Kubernetes scrape
//! config would (docs/observability.md):
//!
//! - job [`PROXY_JOB`]: every meshed pod's proxy admin `<pod ip>:15190/metrics`, with the target
//!   labels `namespace` and `pod`, from a file (`file_sd`) that [`Prometheus::set_proxies`]
//!   rewrites when the lab's pods change (Prometheus watches it; no reload);
//! - job [`CONTROL_PLANE_JOB`]: the control plane's admin `/metrics`, labelled as the
//!   chart's control plane would be ([`CONTROL_PLANE_NAMESPACE`], pod `weft-control-plane`).
//!
//! It scrapes and evaluates rules every [`Options::interval`] (1 s for the tests), loads the
//! rules file it is given (Weft's `helm/weft/rules/weft.rules.yaml`), keeps its storage under
//! the caller's work dir for at most [`RETENTION`], and is killed by PID on drop. Its HTTP API
//! is read from inside the namespace it runs in: [`Prometheus::query`] and
//! [`Prometheus::query_range`].
//!
//! ```no_run
//! # fn main() -> weft_lab::Result<()> {
//! use weft_lab::prometheus::{Options, Prometheus};
//! let dir = tempfile::tempdir().expect("temp dir");
//! let p = Prometheus::start(dir.path(), "127.0.0.1:29090".parse().expect("addr"), None,
//!     &Options::default())?;
//! let up = p.query("up")?;
//! # Ok(())
//! # }
//! ```

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, TcpStream},
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
    process::Daemon,
    registry::PodEntry,
    wait,
};

/// The program, from Debian's `prometheus` package.
pub const BINARY: &str = "prometheus";
/// The job scraping the proxies, as in docs/observability.md.
pub const PROXY_JOB: &str = "weft-proxies";
/// The job scraping the control plane, as in docs/observability.md.
pub const CONTROL_PLANE_JOB: &str = "weft-control-plane";
/// The `namespace` label of the control plane's target (the chart's usual namespace).
pub const CONTROL_PLANE_NAMESPACE: &str = "weft";
/// The `pod` label of the control plane's target.
pub const CONTROL_PLANE_POD: &str = "weft-control-plane";
/// The proxy's admin port, where it is scraped.
pub const PROXY_ADMIN_PORT: u16 = 15190;
/// How long samples are kept: a lab lives minutes, not hours.
pub const RETENTION: &str = "3h";
/// How long Prometheus may take to answer `/-/ready`.
const READY_PATIENCE: Duration = Duration::from_secs(30);
/// The file of proxy targets, in the work dir.
const TARGETS_FILE: &str = "prometheus-proxies.json";

/// What to scrape and evaluate.
#[derive(Clone, Debug)]
pub struct Options {
    /// The scrape and rule-evaluation interval (whole seconds or milliseconds).
    pub interval: Duration,
    /// A rules file to load (`rule_files`).
    pub rules: Option<PathBuf>,
    /// The control plane's admin address, as seen from where Prometheus runs.
    pub control_plane: Option<SocketAddr>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            interval: Duration::from_secs(1),
            rules: None,
            control_plane: None,
        }
    }
}

/// One proxy to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
}

impl ProxyTarget {
    /// The meshed pods of a lab (those with an identity), at their addresses.
    pub fn of_lab(pods: &[PodEntry]) -> Vec<ProxyTarget> {
        pods.iter()
            .filter(|p| p.identity.is_some())
            .filter_map(|p| {
                Some(ProxyTarget {
                    namespace: p.namespace.clone(),
                    pod: p.name.clone(),
                    ip: p.ip.parse().ok()?,
                })
            })
            .collect()
    }
}

/// A running Prometheus; killed (by PID) on drop.
#[derive(Debug)]
pub struct Prometheus {
    daemon: Daemon,
    addr: SocketAddr,
    targets: PathBuf,
    /// Where it runs, to read its API from there (never deleted by this handle).
    netns: Option<Netns>,
}

/// One series of a query's answer: its labels and its samples (one for an instant query).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// `(unix time in seconds, value)`, oldest first.
    pub values: Vec<(f64, f64)>,
}

impl Prometheus {
    /// Writes its config to `work_dir/prometheus.yml` (and an empty target list), starts it
    /// (in `netns` if given, else in this process's namespace) listening on `listen`, with its
    /// storage in `work_dir/prometheus-data` and its log in `work_dir/prometheus.log`, and
    /// returns once `/-/ready` answers 200. `listen` should be a loopback or lab address.
    pub fn start(
        work_dir: &Path,
        listen: SocketAddr,
        netns: Option<&Netns>,
        options: &Options,
    ) -> Result<Prometheus> {
        let targets = work_dir.join(TARGETS_FILE);
        write_atomically(&targets, "[]\n")?;
        let config_path = work_dir.join("prometheus.yml");
        std::fs::write(&config_path, config(options, &targets)?)
            .map_err(Error::io(format!("write {}", config_path.display())))?;
        let data = work_dir.join("prometheus-data");
        let mut cmd = match netns {
            Some(ns) => ns.command("setpriv"),
            None => Command::new("setpriv"),
        };
        // Killed with the process that started it, even when that one is killed outright.
        cmd.arg("--pdeathsig=KILL")
            .arg(BINARY)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--storage.tsdb.retention.time={RETENTION}"))
            .arg(format!("--web.listen-address={listen}"))
            // Its own console pages are not installed with the binary; nothing reads them.
            .arg("--log.level=warn");
        let daemon = Daemon::spawn("prometheus", &mut cmd, &work_dir.join("prometheus.log"))?;
        let mut prometheus = Prometheus {
            daemon,
            addr: listen,
            targets,
            netns: netns.map(|ns| Netns::attach(ns.name())).transpose()?,
        };
        let ready = wait::until(
            format!("prometheus's /-/ready on {listen}"),
            READY_PATIENCE,
            || {
                if let Err(e) = prometheus.daemon.check_running() {
                    return Some(Err(e));
                }
                prometheus
                    .get("/-/ready")
                    .is_ok_and(|r| r.status == 200)
                    .then_some(Ok(()))
            },
        );
        wait::ready_or_log(ready, || prometheus.log())?;
        Ok(prometheus)
    }

    /// Where its HTTP API and UI answer.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scrape exactly these proxies from now on (Prometheus picks the file up within a scrape
    /// interval or two).
    pub fn set_proxies(&self, proxies: &[ProxyTarget]) -> Result<()> {
        write_atomically(&self.targets, &targets_json(proxies))
    }

    /// The instant query `expr` at the server's present.
    pub fn query(&self, expr: &str) -> Result<Vec<Series>> {
        self.api(
            &format!("/api/v1/query?query={}", http::query_escape(expr)),
            expr,
        )
    }

    /// The range query `expr` from `start` to `end` (unix seconds) every `step`.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<Series>> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={:.3}",
            http::query_escape(expr),
            step.as_secs_f64()
        );
        self.api(&path, expr)
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Its PID.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    fn api(&self, path: &str, expr: &str) -> Result<Vec<Series>> {
        let reply = self.get(path)?;
        parse_answer(&reply.body).map_err(|problem| match problem {
            Problem::Refused(error) => Error::Query {
                expr: expr.to_string(),
                error,
            },
            Problem::Unreadable(e) => Error::Protocol {
                what: format!(
                    "GET http://{}{path} (prometheus's API): status {}, {e}",
                    self.addr, reply.status
                ),
                answer: reply.body.clone(),
            },
        })
    }

    fn connect(&self) -> Result<TcpStream> {
        match &self.netns {
            Some(ns) => ns.connect(self.addr, http::IO_TIMEOUT),
            None => {
                let what = || format!("connect to {}", self.addr);
                let s = TcpStream::connect_timeout(&self.addr, http::IO_TIMEOUT)
                    .map_err(Error::io(what()))?;
                s.set_read_timeout(Some(http::IO_TIMEOUT))
                    .and_then(|()| s.set_write_timeout(Some(http::IO_TIMEOUT)))
                    .map_err(Error::io(what()))?;
                Ok(s)
            }
        }
    }

    fn get(&self, path: &str) -> Result<HttpReply> {
        let mut conn = self.connect()?;
        http::request(&mut conn, self.addr, &self.addr.to_string(), path)
    }
}

/// `true` if Debian's `prometheus` is on `PATH`; otherwise the loud skip (`SKIPPED: <test>:
/// ...`), or with `WEFT_REQUIRE_NETNS_TESTS=1` a failure (CI installs it with `make deps`).
pub fn should_run(test: &str) -> bool {
    prereq::run_or_skip(
        test,
        (!installed()).then(|| {
            "prometheus not found on PATH (Debian package prometheus; `make deps` installs it)"
                .to_string()
        }),
    )
}

/// Whether Debian's `prometheus` is on `PATH`.
pub fn installed() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(BINARY).is_file())
}

/// The config for `options`, the proxies read from `targets`.
pub fn config(options: &Options, targets: &Path) -> Result<String> {
    let interval = duration(options.interval)?;
    let mut out = format!(
        "# Written by weft-lab (lab/src/prometheus.rs).\n\
         global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
         evaluation_interval: {interval}\n"
    );
    if let Some(rules) = &options.rules {
        let _ = writeln!(
            out,
            "rule_files: [{}]",
            yaml_string(&rules.display().to_string())
        );
    }
    let _ = write!(
        out,
        "scrape_configs:\n\
         - job_name: {PROXY_JOB}\n  file_sd_configs:\n  - files: [{}]\n    refresh_interval: {interval}\n",
        yaml_string(&targets.display().to_string())
    );
    if let Some(cp) = options.control_plane {
        let _ = write!(
            out,
            "- job_name: {CONTROL_PLANE_JOB}\n  static_configs:\n  - targets: [{}]\n    \
             labels: {{namespace: {CONTROL_PLANE_NAMESPACE}, pod: {CONTROL_PLANE_POD}}}\n",
            yaml_string(&cp.to_string())
        );
    }
    Ok(out)
}

/// The `file_sd` list of `proxies`: one target group per pod, labelled `namespace` and `pod`.
pub fn targets_json(proxies: &[ProxyTarget]) -> String {
    let groups: Vec<serde_json::Value> = proxies
        .iter()
        .map(|p| {
            serde_json::json!({
                "targets": [SocketAddr::from((p.ip, PROXY_ADMIN_PORT)).to_string()],
                "labels": {"namespace": p.namespace, "pod": p.pod},
            })
        })
        .collect();
    format!("{}\n", serde_json::Value::Array(groups))
}

/// A Prometheus duration: whole milliseconds, at least one.
fn duration(d: Duration) -> Result<String> {
    let ms = d.as_millis();
    if ms == 0 {
        return Err(Error::Invalid {
            what: "prometheus interval",
            value: format!("{d:?}"),
            reason: "must be at least 1ms",
        });
    }
    Ok(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

/// `s` as a double-quoted YAML (and JSON) string.
fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader (Prometheus's
/// file watcher) never sees half of it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(Error::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!(
        "rename {} to {}",
        tmp.display(),
        path.display()
    )))
}

/// Why an answer is not a result.
#[derive(Debug, PartialEq)]
enum Problem {
    /// Prometheus refused the query (`status: error`): its words.
    Refused(String),
    /// Not the API's JSON.
    Unreadable(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    data: Option<Data>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// The series of an API answer (`vector`, `matrix` or `scalar`), or why there are none.
fn parse_answer(body: &str) -> std::result::Result<Vec<Series>, Problem> {
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| Problem::Unreadable(e.to_string()))?;
    if answer.status != "success" {
        return Err(Problem::Refused(format!(
            "{}: {}",
            answer.error_type.unwrap_or_default(),
            answer.error.unwrap_or_default()
        )));
    }
    let data = answer
        .data
        .ok_or_else(|| Problem::Unreadable("no data".into()))?;
    let unreadable = |e: serde_json::Error| Problem::Unreadable(e.to_string());
    let raw: Vec<RawSeries> = match data.result_type.as_str() {
        "vector" | "matrix" => serde_json::from_value(data.result).map_err(unreadable)?,
        "scalar" => vec![RawSeries {
            metric: BTreeMap::new(),
            value: Some(serde_json::from_value(data.result).map_err(unreadable)?),
            values: Vec::new(),
        }],
        other => return Err(Problem::Unreadable(format!("result type {other}"))),
    };
    raw.into_iter()
        .map(|s| {
            let values = s
                .value
                .into_iter()
                .chain(s.values)
                .map(|(t, v)| {
                    number(&v)
                        .map(|v| (t, v))
                        .ok_or_else(|| Problem::Unreadable(format!("sample value {v:?}")))
                })
                .collect::<std::result::Result<_, _>>()?;
            Ok(Series {
                labels: s.metric,
                values,
            })
        })
        .collect()
}

/// A sample value as Prometheus writes it (`1.5`, `NaN`, `+Inf`, `-Inf`).
fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_scrapes_the_proxies_file_and_the_control_plane() {
        let c = config(
            &Options {
                interval: Duration::from_millis(500),
                rules: Some(PathBuf::from("/r/weft.rules.yaml")),
                control_plane: Some("127.0.0.1:9990".parse().expect("addr")),
            },
            Path::new("/w/targets.json"),
        )
        .expect("config");
        assert!(c.contains("scrape_interval: 500ms"), "{c}");
        assert!(c.contains("evaluation_interval: 500ms"), "{c}");
        assert!(c.contains(r#"rule_files: ["/r/weft.rules.yaml"]"#), "{c}");
        assert!(c.contains(r#"files: ["/w/targets.json"]"#), "{c}");
        assert!(c.contains("job_name: weft-proxies"), "{c}");
        assert!(c.contains(r#"targets: ["127.0.0.1:9990"]"#), "{c}");
        assert!(
            c.contains("labels: {namespace: weft, pod: weft-control-plane}"),
            "{c}"
        );
        let plain = config(&Options::default(), Path::new("/w/t.json")).expect("config");
        assert!(plain.contains("scrape_interval: 1s"), "{plain}");
        assert!(!plain.contains("rule_files") && !plain.contains("weft-control-plane"));
        let zero = Options {
            interval: Duration::ZERO,
            ..Options::default()
        };
        let e = config(&zero, Path::new("/t")).expect_err("a zero interval is refused");
        assert!(e.to_string().contains("at least 1ms"), "{e}");
    }

    #[test]
    fn targets_are_one_group_per_pod_labelled_as_kubernetes_sd_would() {
        let json = targets_json(&[ProxyTarget {
            namespace: "demo".into(),
            pod: "web".into(),
            ip: Ipv4Addr::new(198, 18, 0, 5),
        }]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(
            v,
            serde_json::json!([{"targets": ["198.18.0.5:15190"],
                "labels": {"namespace": "demo", "pod": "web"}}])
        );
        assert_eq!(targets_json(&[]), "[]\n");
    }

    #[test]
    fn answers_read_into_series_and_refusals_into_their_reason() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"weft-proxies"},"value":[1700000000.5,"1"]},
            {"metric":{},"value":[1700000000.5,"+Inf"]}]}}"#;
        let s = parse_answer(vector).expect("vector");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["job"], "weft-proxies");
        assert_eq!(s[0].values, vec![(1_700_000_000.5, 1.0)]);
        assert_eq!(s[1].values[0].1, f64::INFINITY);
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"pod":"web"},"values":[[1,"0.5"],[2,"NaN"]]}]}}"#;
        let m = parse_answer(matrix).expect("matrix");
        assert_eq!(m[0].values.len(), 2);
        assert!(m[0].values[1].1.is_nan());
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[3,"2"]}}"#;
        assert_eq!(
            parse_answer(scalar).expect("scalar")[0].values,
            vec![(3.0, 2.0)]
        );
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            parse_answer(refused),
            Err(Problem::Refused("bad_data: parse error".into()))
        );
        assert!(matches!(
            parse_answer("<html>"),
            Err(Problem::Unreadable(_))
        ));
        let bad = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"x"]}]}}"#;
        assert!(matches!(parse_answer(bad), Err(Problem::Unreadable(_))));
    }
}
