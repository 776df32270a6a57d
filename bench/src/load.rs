//! HTTP load with oha: open loop at a fixed rate with latency correction (coordinated
//! omission), or closed loop for maximum throughput.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::server::GRPC_ECHO_PATH;

/// What the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::Grpc => "gRPC",
        }
    }
}

/// Open loop at `rps`, or closed loop (as fast as the set-up answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pace {
    Rate(u32),
    Max,
}

/// One oha run's figures.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub requests: u64,
    pub rps: f64,
    /// p50, p90, p99, p99.9 in microseconds.
    pub percentiles_us: [f64; 4],
    pub failures: u64,
}

/// Runs oha against `entry` and reads its JSON report. A run with failed requests is an error:
/// a benchmark of errors measures nothing.
pub fn run(
    oha: &Path,
    grpc_message: &Path,
    entry: SocketAddr,
    protocol: Protocol,
    pace: Pace,
    conns: u32,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let mut cmd = Command::new(oha);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--wait-ongoing-requests-after-deadline",
    ])
    .arg("-z")
    .arg(format!("{}ms", duration.as_millis()))
    .arg("-c")
    .arg(conns.to_string());
    if let Pace::Rate(rps) = pace {
        cmd.arg("-q")
            .arg(rps.to_string())
            .arg("--latency-correction");
    }
    let url = match protocol {
        Protocol::Http1 => format!("http://{entry}/"),
        Protocol::Http2 => {
            cmd.args(["--http2", "-p", "1"]);
            format!("http://{entry}/")
        }
        Protocol::Grpc => {
            cmd.args(["--http2", "-p", "1", "-m", "POST"])
                .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
                .arg("-D")
                .arg(grpc_message);
            format!("http://{entry}{GRPC_ECHO_PATH}")
        }
    };
    let out = cmd.arg(&url).output().context("running oha")?;
    if !out.status.success() {
        bail!(
            "oha failed on {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    outcome(&v).with_context(|| format!("oha on {url}"))
}

/// Reads oha's JSON report. A run with failed requests is an error.
fn outcome(v: &Value) -> anyhow::Result<Outcome> {
    let requests: u64 = v["statusCodeDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let ok: u64 = v["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
    // In fixed-rate mode oha lists the requests it had scheduled but not yet sent when the time
    // ran out as "aborted due to deadline" (it happens against the upstream directly too): they
    // never reached the set-up, so they are not its failures. Every other error is.
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "aborted due to deadline")
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1e6;
    let outcome = Outcome {
        requests,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        percentiles_us: [pct("p50"), pct("p90"), pct("p99"), pct("p99.9")],
        failures: requests - ok + errors,
    };
    if outcome.requests == 0 || outcome.failures > 0 {
        bail!(
            "{} requests, {} failed: status {} errors {}",
            outcome.requests,
            outcome.failures,
            v["statusCodeDistribution"],
            v["errorDistribution"]
        );
    }
    Ok(outcome)
}

/// oha's version line.
pub fn version(oha: &Path) -> String {
    Command::new(oha)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "oha (unknown version)".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(status: Value, errors: Value) -> Value {
        json!({
            "summary": {"requestsPerSec": 999.5},
            "statusCodeDistribution": status,
            "errorDistribution": errors,
            "latencyPercentiles": {"p50": 0.0001, "p90": 0.0002, "p99": 0.0004, "p99.9": 0.001},
        })
    }

    #[test]
    fn reads_rate_and_percentiles_in_microseconds() {
        let o = outcome(&report(json!({"200": 4000}), json!({}))).expect("clean run");
        assert_eq!(o.requests, 4000);
        assert_eq!(o.rps, 999.5);
        let [p50, _, p99, p999] = o.percentiles_us;
        assert!(
            (p50 - 100.0).abs() < 1e-6
                && (p99 - 400.0).abs() < 1e-6
                && (p999 - 1000.0).abs() < 1e-6
        );
    }

    #[test]
    fn unsent_requests_at_the_deadline_are_not_failures_but_everything_else_is() {
        let o = outcome(&report(
            json!({"200": 4000}),
            json!({"aborted due to deadline": 3}),
        ));
        assert_eq!(o.expect("deadline leftovers are not failures").failures, 0);
        let err = outcome(&report(json!({"200": 3999, "502": 1}), json!({}))).expect_err("a 502");
        assert!(err.to_string().contains("1 failed"), "{err}");
        let err = outcome(&report(
            json!({"200": 4000}),
            json!({"connection reset": 2}),
        ))
        .expect_err("reset");
        assert!(err.to_string().contains("2 failed"), "{err}");
        assert!(
            outcome(&report(json!({}), json!({}))).is_err(),
            "no requests at all"
        );
    }
}
