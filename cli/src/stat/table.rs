//! The tables of `weftctl stat` and `weftctl stat-outbound` (plain and `-o wide`), with the
//! lines under them saying what is missing; figures as `linkerd viz stat` prints them.

use super::view::{Failed, OutboundReport, StatReport, TcpOut};

/// `weftctl stat`'s table; `wide` adds the counts behind the rates.
pub(crate) fn stat_table(report: &StatReport, wide: bool) -> String {
    let mut t = Table::new(&[
        "NAMESPACE",
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TLS",
    ]);
    if wide {
        t.extend_header(&[
            "REQUESTS",
            "FAILED",
            "TIMEOUTS",
            "TCP_CONN",
            "READ_BYTES/SEC",
            "WRITE_BYTES/SEC",
            "KIND",
        ]);
    }
    for r in &report.rows {
        let f = &r.figures;
        let meshed = match (r.meshed, r.pods) {
            (Some(m), Some(p)) => format!("{m}/{p}"),
            (Some(m), None) => m.to_string(),
            (None, _) => "-".into(),
        };
        // Every kind of workload in one list: say which each is.
        let name = if report.resource == "workload" {
            format!("{}/{}", r.kind, r.name)
        } else {
            r.name.clone()
        };
        let mut cells = vec![
            r.namespace.clone(),
            format!("{name}{}", if r.partial { " (partial)" } else { "" }),
            meshed,
            percent(f.success),
            rps(f.rps),
            millis(f.latency_ms_p50),
            millis(f.latency_ms_p95),
            millis(f.latency_ms_p99),
            percent(f.tls),
        ];
        if wide {
            let tcp = |v: fn(&TcpOut) -> f64, per_second: bool| {
                r.tcp.as_ref().map_or_else(
                    || "-".to_string(),
                    |t| {
                        if per_second {
                            format!("{:.1}B/s", v(t) + 0.0)
                        } else {
                            count(v(t))
                        }
                    },
                )
            };
            cells.extend([
                count(f.requests),
                count(f.requests - f.successes),
                count(f.timeouts),
                tcp(|t| t.open_connections, false),
                tcp(|t| t.read_bytes_per_second, true),
                tcp(|t| t.write_bytes_per_second, true),
                r.kind.clone(),
            ]);
        }
        t.row(cells);
    }
    t.render() + &footer(&report.errors, report.skipped_pods)
}

/// `weftctl stat-outbound`'s table: each route's row, then its backends (`├─►`).
pub(crate) fn outbound_table(report: &OutboundReport, wide: bool) -> String {
    let mut t = Table::new(&[
        "NAMESPACE",
        "NAME",
        "ROUTE",
        "BACKEND",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TIMEOUTS",
        "RETRIES",
    ]);
    if wide {
        t.extend_header(&["REQUESTS", "FAULTS"]);
    }
    let rows = &report.rows;
    for (i, r) in rows.iter().enumerate() {
        let f = &r.figures;
        let share = |n: f64| {
            if f.requests > 0.0 {
                percent(Some(n / f.requests))
            } else {
                "-".into()
            }
        };
        let (name, route, backend) = match &r.backend {
            None => (
                format!("{}{}", r.name, if r.partial { " (partial)" } else { "" }),
                route_shown(&r.route),
                String::new(),
            ),
            Some(b) => {
                let last = rows
                    .get(i + 1)
                    .is_none_or(|next| next.backend.is_none() || next.route != r.route);
                let arrow = if last { "└─►" } else { "├─►" };
                let b = if b.is_empty() { "(proxy)" } else { b };
                (String::new(), String::new(), format!("{arrow} {b}"))
            }
        };
        let mut cells = vec![
            if r.backend.is_none() {
                r.namespace.clone()
            } else {
                String::new()
            },
            name,
            route,
            backend,
            percent(f.success),
            rps(f.rps),
            millis(f.latency_ms_p50),
            millis(f.latency_ms_p95),
            millis(f.latency_ms_p99),
            share(f.timeouts),
            r.retries.map_or(String::new(), share),
        ];
        if wide {
            cells.extend([count(f.requests), r.faults.map_or(String::new(), count)]);
        }
        t.row(cells);
    }
    t.render() + &footer(&report.errors, report.skipped_pods)
}

/// How a route label is shown: as the proxy labels it, and `[default]` (linkerd's word) for
/// the requests no route chose.
fn route_shown(route: &str) -> String {
    if route.is_empty() {
        "[default]".into()
    } else {
        route.to_string()
    }
}

/// The lines under a table saying what is missing from it.
fn footer(errors: &[Failed], skipped: usize) -> String {
    let mut out = String::new();
    for e in errors {
        out.push_str(&format!(
            "partial: pod {}/{} could not be read: {}\n",
            e.namespace, e.pod, e.error
        ));
    }
    if skipped > 0 {
        out.push_str(&format!(
            "partial: {skipped} meshed pods were not read (more than --max-pods)\n"
        ));
    }
    out
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn rps(v: f64) -> String {
    format!("{:.1}rps", v + 0.0)
}

fn count(v: f64) -> String {
    // Counts read from proxies are whole; Prometheus's `increase` extrapolates.
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Milliseconds as `linkerd viz stat` prints them, finer below 10 ms.
pub(crate) fn millis(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) if v < 1000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.2}s", v / 1000.0),
    }
}

/// A plain text table, columns padded to their widest cell.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn extend_header(&mut self, more: &[&str]) {
        self.header.extend(more.iter().map(|h| h.to_string()));
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        if self.rows.is_empty() {
            return "No traffic found.\n".into();
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(w - cell.chars().count() + 3));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.header);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}
