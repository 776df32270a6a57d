//! The report: one Markdown text, printed and written into `BENCHMARKS.md` (between markers)
//! and `bench/runs/<date>-<commit>.md`.

use std::{fmt::Write as _, path::Path, process::Command, time::Duration};

use crate::{
    load::{Pace, Protocol},
    procs::CpuTimes,
    setups::TCP_SETUPS,
    HttpSample, Plan, Results,
};

const BEGIN: &str = "<!-- bench:latest:begin -->";
const END: &str = "<!-- bench:latest:end -->";

/// Where and with what the run happened.
#[derive(Debug)]
pub struct Machine {
    pub date: String,
    pub commit: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub oha: String,
    pub haproxy: String,
}

impl Machine {
    pub fn read(oha: &Path) -> Machine {
        Machine {
            oha: crate::load::version(oha),
            haproxy: out("haproxy", &["-v"])
                .lines()
                .next()
                .unwrap_or("haproxy")
                .to_string(),
            ..Machine::host()
        }
    }

    /// The date, commit and host, without the load tools' versions.
    pub fn host() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let dirty = !out("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
        Machine {
            date: out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit: format!(
                "{}{}",
                out("git", &["rev-parse", "--short", "HEAD"]),
                if dirty { "-dirty" } else { "" }
            ),
            cpu: cpuinfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("model name")?
                        .split_once(':')
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            oha: String::new(),
            haproxy: String::new(),
        }
    }
}

/// What `cmd args` prints, trimmed; empty if it cannot run.
fn out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Median, min and max of a set of runs.
#[derive(Clone, Copy, Debug)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(mut values: Vec<f64>) -> Option<Stat> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }

    fn show(self, decimals: usize) -> String {
        if (self.max - self.min).abs() < f64::EPSILON {
            return format!("{:.*}", decimals, self.median);
        }
        format!(
            "{:.*} [{:.*}–{:.*}]",
            decimals, self.median, decimals, self.min, decimals, self.max
        )
    }
}

/// CPU seconds per 10k requests over `runs` (the part `part` picks: all, user or kernel).
fn per_10k(runs: &[HttpSample], part: fn(CpuTimes) -> Duration) -> Option<Stat> {
    Stat::of(
        runs.iter()
            .filter_map(|x| Some(part(x.cpu?).as_secs_f64() * 10_000.0 / x.outcome.requests as f64))
            .collect(),
    )
}

fn show(stat: Option<Stat>, decimals: usize) -> String {
    stat.map_or_else(|| "–".into(), |s| s.show(decimals))
}

fn ratio(a: Option<Stat>, b: Option<Stat>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
        _ => "–".into(),
    }
}

fn pace_name(pace: Pace) -> String {
    match pace {
        Pace::Rate(r) => format!("{r} rps"),
        Pace::Max => "max".into(),
    }
}

/// Renders the whole report.
pub fn render(plan: &Plan, m: &Machine, r: &Results, took: Duration) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Run of {}, commit `{}`{}\n",
        m.date,
        m.commit,
        if plan.smoke { " (smoke)" } else { "" }
    );
    let _ = writeln!(
        o,
        "Machine: {}, {} cores, Linux {}. Load: {}. {}. Took {:.0} s.\n",
        m.cpu,
        m.cores,
        m.kernel,
        m.oha,
        m.haproxy,
        took.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "Each figure is the median of {} runs per set-up, with [min–max] when they differ; runs \
         interleave the set-ups; a {:.1} s warm-up per scenario and set-up is discarded. Fixed-rate \
         runs last {:.0} s, open loop with oha's latency correction (coordinated omission); \
         maximum-throughput runs last {:.0} s, closed loop. Responses are {} bytes. Every proxy has \
         one thread. Weft's hop between its two proxies is mTLS (TLS 1.3, ECDSA P-256, certificates \
         from the control plane, the inbound proxy in strict mode), as is `haproxy-mtls`'s; \
         `haproxy-plain` shows what the hop's TLS costs HAProxy.\n",
        plan.reps,
        plan.warmup.as_secs_f64(),
        plan.rate_duration.as_secs_f64(),
        plan.max_duration.as_secs_f64(),
        plan.body_size
    );

    let http = |p: Protocol, pace: Pace, c: u32, s: &'static str| r.http.get(&(p, pace, c, s));
    let pct = |p, pace, c, s, i: usize| {
        http(p, pace, c, s)
            .and_then(|v| Stat::of(v.iter().map(|x| x.outcome.percentiles_us[i]).collect()))
    };
    let added_p99 = |p, pace, c, s| {
        let (Some(prox), Some(direct)) = (http(p, pace, c, s), http(p, pace, c, "direct")) else {
            return None;
        };
        // Pair each run with the direct run of the same round: drift cancels.
        Stat::of(
            prox.iter()
                .zip(direct)
                .map(|(a, b)| a.outcome.percentiles_us[2] - b.outcome.percentiles_us[2])
                .collect(),
        )
    };
    let mut scenarios: Vec<(Protocol, Pace, u32)> = plan.scenarios.clone();
    scenarios.dedup();

    let _ = writeln!(o, "### Latency at a fixed rate, µs\n");
    let _ = writeln!(o, "| protocol | rate | conns | set-up | p50 | p90 | p99 | p99.9 | p99 added over direct | achieved rps |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for &(p, pace, c) in scenarios.iter().filter(|s| s.1 != Pace::Max) {
        for &s in &plan.setups {
            let rps = http(p, pace, c, s)
                .and_then(|v| Stat::of(v.iter().map(|x| x.outcome.rps).collect()));
            let added = if s == "direct" {
                "–".into()
            } else {
                show(added_p99(p, pace, c, s), 0)
            };
            let _ = writeln!(
                o,
                "| {} | {} | {c} | {s} | {} | {} | {} | {} | {added} | {} |",
                p.name(),
                pace_name(pace),
                show(pct(p, pace, c, s, 0), 0),
                show(pct(p, pace, c, s, 1), 0),
                show(pct(p, pace, c, s, 2), 0),
                show(pct(p, pace, c, s, 3), 0),
                show(rps, 0)
            );
        }
    }

    let _ = writeln!(o, "\n### Ratios at a fixed rate (medians)\n");
    let _ = writeln!(o, "| protocol | rate | conns | Weft/direct p99 | Weft/HAProxy-mTLS p99 | Weft/HAProxy-plain p99 | added p99: Weft/HAProxy-mTLS | added p99: Weft/HAProxy-plain |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for &(p, pace, c) in scenarios.iter().filter(|s| s.1 != Pace::Max) {
        let weft = pct(p, pace, c, "weft", 2);
        let _ = writeln!(
            o,
            "| {} | {} | {c} | {} | {} | {} | {} | {} |",
            p.name(),
            pace_name(pace),
            ratio(weft, pct(p, pace, c, "direct", 2)),
            ratio(weft, pct(p, pace, c, "haproxy-mtls", 2)),
            ratio(weft, pct(p, pace, c, "haproxy-plain", 2)),
            ratio(
                added_p99(p, pace, c, "weft"),
                added_p99(p, pace, c, "haproxy-mtls")
            ),
            ratio(
                added_p99(p, pace, c, "weft"),
                added_p99(p, pace, c, "haproxy-plain")
            ),
        );
    }

    // Requests per CPU-second of one proxy: a chain has two proxies on every request's path.
    let per_core = |p, c, s| {
        http(p, Pace::Max, c, s).and_then(|v| {
            Stat::of(
                v.iter()
                    .filter_map(|x| {
                        Some(2.0 * x.outcome.requests as f64 / x.cpu?.total().as_secs_f64())
                    })
                    .collect(),
            )
        })
    };
    let cpu_10k = |p, pace, c, s| http(p, pace, c, s).and_then(|v| per_10k(v, CpuTimes::total));
    // The closed loop's CPU per 10k requests split: user space, and the kernel's (system
    // calls and the loopback TCP they run), medians over the runs.
    let split_10k = |p, c, s| {
        let v = http(p, Pace::Max, c, s)?;
        let (user, kernel) = (per_10k(v, |t| t.user)?, per_10k(v, |t| t.system)?);
        Some(format!("{:.3} / {:.3}", user.median, kernel.median))
    };
    let _ = writeln!(o, "\n### Maximum throughput (closed loop) and CPU\n");
    let _ = writeln!(o, "| protocol | conns | set-up | requests/s | requests per proxy CPU-second | CPU s per 10k requests (both proxies) | of which user / kernel (medians) | CPU s per 10k at a fixed rate (both proxies) |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for &(p, _, c) in scenarios.iter().filter(|s| s.1 == Pace::Max) {
        for &s in &plan.setups {
            let rps = http(p, Pace::Max, c, s)
                .and_then(|v| Stat::of(v.iter().map(|x| x.outcome.rps).collect()));
            let at_rate = scenarios
                .iter()
                .find(|x| x.0 == p && matches!(x.1, Pace::Rate(_)))
                .and_then(|&(_, pace, c2)| {
                    Some(format!(
                        "{} at {}, {c2} conns",
                        cpu_10k(p, pace, c2, s)?.show(3),
                        pace_name(pace)
                    ))
                });
            let _ = writeln!(
                o,
                "| {} | {c} | {s} | {} | {} | {} | {} | {} |",
                p.name(),
                show(rps, 0),
                show(per_core(p, c, s), 0),
                show(cpu_10k(p, Pace::Max, c, s), 3),
                split_10k(p, c, s).unwrap_or_else(|| "–".into()),
                at_rate.unwrap_or_else(|| "–".into())
            );
        }
    }

    if ["weft-service", "weft-route", "weft-policy"]
        .iter()
        .any(|s| plan.setups.contains(s))
    {
        routes_section(&mut o, &scenarios, r);
    }

    let _ = writeln!(o, "\n### Opaque TCP (one connection)\n");
    let _ = writeln!(
        o,
        "| set-up | round trip p50, µs | round trip p99, µs | bulk echo, MiB/s each way | \
         proxies' CPU s per GiB of bulk echo |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for s in TCP_SETUPS.into_iter().filter(|s| plan.setups.contains(s)) {
        let v = r.tcp.get(s).cloned().unwrap_or_default();
        let st = |f: fn(&crate::TcpSample) -> f64| Stat::of(v.iter().map(f).collect());
        let _ = writeln!(
            o,
            "| {s} | {} | {} | {} | {} |",
            show(st(|x| x.rtt_p50_us), 0),
            show(st(|x| x.rtt_p99_us), 0),
            show(st(|x| x.bulk_mib_s), 0),
            show(st(|x| x.bulk_cpu_s_per_gib.unwrap_or(f64::NAN)), 2)
        );
    }
    let _ = writeln!(
        o,
        "\nBulk echo: one connection carries the bytes both ways at once; the CPU is both \
         proxies' user + system time while it runs, per GiB each way (the client and the echo \
         server share the same cores, so MiB/s also depends on what they use).\n\n\
         New mTLS connections: Weft keeps one long-lived connection per peer proxy, so the load \
         above opens none after warm-up; the cost of one full mutual handshake is measured by \
         `make bench-micro` (`mtls_handshake`, in BENCHMARKS.md)."
    );

    let _ = writeln!(
        o,
        "\n### Memory per proxy process, MiB (the larger of a chain's two)\n"
    );
    let _ = writeln!(
        o,
        "| set-up | traffic | idle RSS | idle private (RssAnon) | peak RSS (VmHWM) after the run |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for ((s, traffic), mem) in &r.memory {
        if *s == "direct" {
            continue;
        }
        let _ = writeln!(
            o,
            "| {s} | {traffic} | {:.1} | {:.1} | {:.1} |",
            mem.idle_kib as f64 / 1024.0,
            mem.idle_anon_kib as f64 / 1024.0,
            mem.peak_kib as f64 / 1024.0
        );
    }

    // Goals of issue 19 (which raised issue 3's), on this machine in this run.
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    };
    let _ = writeln!(o, "\n### Goals (issue 19)\n");
    let _ = writeln!(o, "| goal | Weft | HAProxy (mTLS) | verdict |");
    let _ = writeln!(o, "|---|---|---|---|");
    let bars = [
        (Protocol::Http1, 1000, 4, 0.5),
        (Protocol::Http1, 1000, 16, 0.5),
        (Protocol::Http1, 5000, 16, 0.8),
        (Protocol::Http2, 1000, 4, 0.5),
        (Protocol::Http2, 1000, 16, 0.5),
        (Protocol::Http2, 5000, 16, 0.8),
    ];
    for (p, rate, c, bar) in bars {
        let (w, h) = (
            added_p99(p, Pace::Rate(rate), c, "weft"),
            added_p99(p, Pace::Rate(rate), c, "haproxy-mtls"),
        );
        let _ = writeln!(
            o,
            "| added p99 at {rate} rps ({}, {c} conns) at most {bar}x HAProxy's, µs | {} | {} | {} |",
            p.name(),
            show(w, 0),
            show(h, 0),
            verdict(w.zip(h).map(|(w, h)| w.median <= bar * h.median))
        );
    }
    // p99.9 never worse than HAProxy's, over every fixed-rate scenario both ran.
    let tails: Vec<(f64, f64)> = scenarios
        .iter()
        .filter(|s| s.1 != Pace::Max)
        .filter_map(|&(p, pace, c)| {
            Some((
                pct(p, pace, c, "weft", 3)?.median,
                pct(p, pace, c, "haproxy-mtls", 3)?.median,
            ))
        })
        .collect();
    let at_most = tails.iter().filter(|(w, h)| w <= h).count();
    let _ = writeln!(
        o,
        "| p99.9 at most HAProxy's in every fixed-rate scenario | {at_most} of {} | – | {} |",
        tails.len(),
        verdict((!tails.is_empty()).then_some(at_most == tails.len()))
    );
    for p in [Protocol::Http1, Protocol::Http2, Protocol::Grpc] {
        let (w, h) = (
            cpu_10k(p, Pace::Max, 16, "weft"),
            cpu_10k(p, Pace::Max, 16, "haproxy-mtls"),
        );
        let _ = writeln!(
            o,
            "| CPU per request ({}, closed loop, 16 conns) at most 0.8x HAProxy's, s per 10k | {} | {} | {} |",
            p.name(),
            show(w, 3),
            show(h, 3),
            verdict(w.zip(h).map(|(w, h)| w.median <= 0.8 * h.median))
        );
    }
    let tcp = |s: &str, f: fn(&crate::TcpSample) -> f64| tcp_stat(r, s, f);
    let (bulk, direct_bulk) = (
        tcp("weft", |x| x.bulk_mib_s),
        tcp("direct", |x| x.bulk_mib_s),
    );
    let _ = writeln!(
        o,
        "| opaque TCP bulk over the hop at least 0.5x direct's ({}), MiB/s | {} | {} | {} |",
        show(direct_bulk, 0),
        show(bulk, 0),
        show(tcp("haproxy-mtls", |x| x.bulk_mib_s), 0),
        verdict(
            bulk.zip(direct_bulk)
                .map(|(w, d)| w.median >= 0.5 * d.median)
        )
    );
    let (rtt, hap_rtt) = (
        tcp("weft", |x| x.rtt_p99_us),
        tcp("haproxy-mtls", |x| x.rtt_p99_us),
    );
    let _ = writeln!(
        o,
        "| opaque TCP round trip p99 no worse than HAProxy's, µs | {} | {} | {} |",
        show(rtt, 0),
        show(hap_rtt, 0),
        verdict(rtt.zip(hap_rtt).map(|(w, h)| w.median <= h.median))
    );
    let weft_mem = r.memory.get(&("weft", "http"));
    let hap_mem = r.memory.get(&("haproxy-mtls", "http"));
    let mib = |k: u64| k as f64 / 1024.0;
    let _ = writeln!(
        o,
        "| idle RSS per proxy under 6 MiB | {} | {} | {} |",
        weft_mem.map_or("–".into(), |m| format!("{:.1}", mib(m.idle_kib))),
        hap_mem.map_or("–".into(), |m| format!("{:.1}", mib(m.idle_kib))),
        verdict(weft_mem.map(|m| mib(m.idle_kib) < 6.0))
    );
    let _ = writeln!(
        o,
        "| idle private memory (RssAnon) per proxy under 2 MiB | {} | {} | {} |",
        weft_mem.map_or("–".into(), |m| format!("{:.1}", mib(m.idle_anon_kib))),
        hap_mem.map_or("–".into(), |m| format!("{:.1}", mib(m.idle_anon_kib))),
        verdict(weft_mem.map(|m| mib(m.idle_anon_kib) < 2.0))
    );
    bars_section(&mut o, r, m.cores);
    let _ = writeln!(
        o,
        "\nPeak memory under load is in the table above. Memory per idle connection, connections \
         within a descriptor limit and new mesh connections per second are `weft-bench conns`'s \
         (\"Connections per proxy\", with their verdicts); the control plane's figures are \
         `weft-bench discovery`'s."
    );
    let _ = writeln!(
        o,
        "\nBoth chains' hops are mutual TLS 1.3 with P-256 certificates: HAProxy-mTLS is the \
         like-for-like comparison."
    );

    // Is the load tool the bottleneck? The direct set-up shows what it can drive.
    if let (Some(direct), Some(weft)) = (
        http(Protocol::Http1, Pace::Max, 16, "direct")
            .and_then(|v| Stat::of(v.iter().map(|x| x.outcome.rps).collect())),
        http(Protocol::Http1, Pace::Max, 16, "weft")
            .and_then(|v| Stat::of(v.iter().map(|x| x.outcome.rps).collect())),
    ) {
        let _ = writeln!(
            o,
            "\nLoad tool check: closed loop, oha drives the upstream directly at {:.0} requests/s, \
             {:.1}x what it gets through Weft, so the proxied figures are not capped by the client. \
             Every process shares the same {} cores, so client, proxies and server compete for CPU \
             alike in every set-up.",
            direct.median,
            direct.median / weft.median.max(1.0),
            m.cores
        );
    }
    o
}

/// A figure of set-up `s`'s opaque TCP runs, over the runs.
fn tcp_stat(r: &Results, s: &str, f: fn(&crate::TcpSample) -> f64) -> Option<Stat> {
    r.tcp
        .get(s)
        .and_then(|v| Stat::of(v.iter().map(f).collect()))
}

/// What the CPU and bulk bars would take, from this run's own figures: the profile behind a
/// "not met". A proxy's CPU per request is user space (its code and libraries) plus the kernel
/// (its system calls and the loopback TCP they run); at the bar, what is left for user space is
/// the bar less Weft's kernel time, since the system calls are already one read and one write
/// per message per proxy (`PROFILE_TOOL=strace scripts/profile.sh`). Bulk's bar is set against
/// the cores the proxies would need at this run's CPU per GiB.
fn bars_section(o: &mut String, r: &Results, cores: usize) {
    let split = |p, s, part: fn(CpuTimes) -> Duration| {
        r.http
            .get(&(p, Pace::Max, 16, s))
            .and_then(|v| per_10k(v, part))
            .map(|x| x.median)
    };
    let mut rows = String::new();
    for p in [Protocol::Http1, Protocol::Http2, Protocol::Grpc] {
        let (Some(wu), Some(wk), Some(hu), Some(hk)) = (
            split(p, "weft", |t| t.user),
            split(p, "weft", |t| t.system),
            split(p, "haproxy-mtls", |t| t.user),
            split(p, "haproxy-mtls", |t| t.system),
        ) else {
            continue;
        };
        let bar = 0.8 * (hu + hk);
        let left = bar - wk;
        let cut = if left <= 0.0 {
            "all of it, and more".to_string()
        } else {
            format!("{:.0} %", 100.0 * (1.0 - left / wu).max(0.0))
        };
        let _ = writeln!(
            rows,
            "| {} | {bar:.3} | {wk:.3} / {hk:.3} | {left:.3} | {wu:.3} / {hu:.3} | {cut} |",
            p.name()
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(o, "\n### What the CPU bars leave for user space\n");
        let _ = writeln!(
            o,
            "| protocol | bar: 0.8x HAProxy's, s per 10k | kernel: Weft / HAProxy | left for Weft's user space | user: Weft / HAProxy | Weft's user space to cut |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        o.push_str(&rows);
        let _ = writeln!(
            o,
            "\nClosed loop, 16 connections, medians. The kernel's part is system calls and the \
             loopback TCP they run; Weft's, counted apart (`PROFILE_TOOL=strace \
             scripts/profile.sh`), are one read and one write per message per proxy with no empty \
             reads, so the bar has to be met in user space."
        );
    }
    let bulk = |s: &str, f: fn(&crate::TcpSample) -> f64| tcp_stat(r, s, f).map(|x| x.median);
    let per_gib = |s| bulk(s, |x| x.bulk_cpu_s_per_gib.unwrap_or(f64::NAN));
    if let (Some(direct), Some(weft)) = (bulk("direct", |x| x.bulk_mib_s), per_gib("weft")) {
        let bar = 0.5 * direct;
        let cores_at = |s_per_gib: f64| bar / 1024.0 * s_per_gib;
        let others: Vec<String> = ["haproxy-mtls", "haproxy-plain"]
            .into_iter()
            .filter_map(|s| Some(format!("{s} {:.1}", cores_at(per_gib(s)?))))
            .collect();
        let theirs = if others.is_empty() {
            String::new()
        } else {
            format!(" (at theirs: {})", others.join(", "))
        };
        let _ = writeln!(
            o,
            "\nOpaque bulk at the bar ({bar:.0} MiB/s each way) would take the two proxies alone \
             {:.1} cores at Weft's CPU per GiB in this run{theirs}; the machine has {cores}, \
             shared with the client and the echo server.",
            cores_at(weft)
        );
    }
}

/// What one HTTPRoute costs (issue 15): the Weft chain reached through discovery without a
/// route (`weft-service`) and with one (`weft-route`), beside the chain with a static peer
/// (`weft`), for every scenario.
fn routes_section(o: &mut String, scenarios: &[(Protocol, Pace, u32)], r: &Results) {
    const WEFTS: [&str; 4] = ["weft", "weft-service", "weft-route", "weft-policy"];
    let samples = |p, pace, c, s: &str| {
        r.http
            .iter()
            .find(|((p2, pace2, c2, s2), _)| (*p2, *pace2, *c2) == (p, pace, c) && *s2 == s)
            .map(|(_, v)| v)
    };
    let pct = |p, pace, c, s, i: usize| {
        samples(p, pace, c, s)
            .and_then(|v| Stat::of(v.iter().map(|x| x.outcome.percentiles_us[i]).collect()))
    };
    let cpu_10k = |p, pace, c, s| samples(p, pace, c, s).and_then(|v| per_10k(v, CpuTimes::total));
    let _ = writeln!(o, "\n### Routes (issue 15)\n");
    let _ = writeln!(
        o,
        "`weft` knows its peer from a static map; `weft-service` sends to a Service's cluster IP \
         and learns its endpoint from the control plane (no route); `weft-route` is the same with \
         one HTTPRoute on the Service (one rule, PathPrefix `/`, one backend Service). The route's \
         cost is `weft-route` over `weft-service`; `weft-policy` is `weft-route` with timeouts and \
         a retry policy that never retries (issue 16), its cost `weft-policy` over `weft-route`. \
         CPU is both proxies' user + system time per 10k requests.\n"
    );
    let _ = writeln!(o, "| protocol | rate | conns | p50 / p99, µs: weft | weft-service | weft-route | weft-policy | CPU s per 10k: weft | weft-service | weft-route | weft-policy | route / service CPU | policy / route CPU |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &(p, pace, c) in scenarios {
        let lat = |s| {
            if pace == Pace::Max {
                return "–".to_string();
            }
            match (pct(p, pace, c, s, 0), pct(p, pace, c, s, 2)) {
                (None, None) => "–".into(),
                (p50, p99) => format!("{} / {}", show(p50, 0), show(p99, 0)),
            }
        };
        let [weft, service, route, policy] = WEFTS.map(|s| cpu_10k(p, pace, c, s));
        let _ = writeln!(
            o,
            "| {} | {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name(),
            pace_name(pace),
            lat(WEFTS[0]),
            lat(WEFTS[1]),
            lat(WEFTS[2]),
            lat(WEFTS[3]),
            show(weft, 3),
            show(service, 3),
            show(route, 3),
            show(policy, 3),
            ratio(route, service),
            ratio(policy, route),
        );
    }
}

/// Saves a run of some set-ups or traffic (`--setups`, `--traffic`) as
/// `bench/runs/<date>-<commit>-partial.md`,
/// leaving `BENCHMARKS.md` as it is: its latest run stays a whole one.
pub fn write_partial(m: &Machine, text: &str) -> anyhow::Result<std::path::PathBuf> {
    let runs = Path::new("bench/runs");
    std::fs::create_dir_all(runs)?;
    let file = runs.join(format!(
        "{}-{}-partial.md",
        m.date.split(' ').next().unwrap_or("run"),
        m.commit
    ));
    std::fs::write(&file, text)?;
    Ok(file)
}

/// A report of its own in `BENCHMARKS.md`, between its markers (the "Latest run" section is
/// left alone), and in `bench/runs/<date>-<commit>-<suffix>.md`.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub begin: &'static str,
    pub end: &'static str,
    /// The heading it gets when it is new, placed before "Latest run".
    pub heading: &'static str,
    pub suffix: &'static str,
}

impl Section {
    /// Replaces the section in `out`, or adds it; writes the run file.
    pub fn write(&self, out: &Path, m: &Machine, text: &str) -> anyhow::Result<()> {
        let doc = std::fs::read_to_string(out).unwrap_or_default();
        std::fs::write(out, self.splice(&doc, text))?;
        let runs = Path::new("bench/runs");
        std::fs::create_dir_all(runs)?;
        let name = format!(
            "{}-{}-{}.md",
            m.date.split(' ').next().unwrap_or("run"),
            m.commit,
            self.suffix
        );
        std::fs::write(runs.join(name), text)?;
        Ok(())
    }

    pub fn splice(&self, doc: &str, text: &str) -> String {
        let section = format!("{}\n{text}\n{}", self.begin, self.end);
        if let (Some(b), Some(e)) = (doc.find(self.begin), doc.find(self.end)) {
            if b < e {
                return format!("{}{section}{}", &doc[..b], &doc[e + self.end.len()..]);
            }
        }
        let new = format!("{}\n\n{section}\n\n", self.heading);
        match doc.find("\n## Latest run\n") {
            Some(at) => format!("{}{new}{}", &doc[..at + 1], &doc[at + 1..]),
            None => format!("{doc}\n{new}"),
        }
    }
}

/// Replaces the latest-run section of `out` and saves the run under `bench/runs/`.
pub fn write(out: &Path, m: &Machine, text: &str) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(out).unwrap_or_default();
    let section = format!("{BEGIN}\n{text}\n{END}");
    let doc = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &doc[..b], &doc[e + END.len()..]),
        _ => format!("{doc}\n## Latest run\n\n{section}\n"),
    };
    std::fs::write(out, doc)?;
    let runs = Path::new("bench/runs");
    std::fs::create_dir_all(runs)?;
    let name = format!(
        "{}-{}.md",
        m.date.split(' ').next().unwrap_or("run"),
        m.commit
    );
    std::fs::write(runs.join(name), text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]).expect("stat");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Stat::of(vec![4.0, 1.0, 2.0, 3.0]).expect("stat");
        assert_eq!(s.median, 2.5);
        assert!(Stat::of(vec![f64::NAN]).is_none());
        assert_eq!(Stat::of(vec![5.0]).expect("stat").show(0), "5");
        assert_eq!(
            Stat::of(vec![5.0, 7.0, 6.0]).expect("stat").show(0),
            "6 [5–7]"
        );
    }

    fn closed_loop(user_s: f64, system_s: f64) -> Vec<HttpSample> {
        vec![HttpSample {
            outcome: crate::load::Outcome {
                requests: 10_000,
                rps: 1.0,
                percentiles_us: [0.0; 4],
                failures: 0,
            },
            cpu: Some(CpuTimes {
                user: Duration::from_secs_f64(user_s),
                system: Duration::from_secs_f64(system_s),
            }),
            duration: Duration::from_secs(1),
        }]
    }

    #[test]
    fn bars_say_what_user_space_must_lose() {
        let mut r = Results::default();
        let key = |s| (Protocol::Http1, Pace::Max, 16, s);
        r.http.insert(key("weft"), closed_loop(0.172, 0.219));
        r.http
            .insert(key("haproxy-mtls"), closed_loop(0.189, 0.227));
        // HTTP/2: Weft's kernel time alone is over the bar.
        let key2 = |s| (Protocol::Http2, Pace::Max, 16, s);
        r.http.insert(key2("weft"), closed_loop(0.3, 0.25));
        r.http.insert(key2("haproxy-mtls"), closed_loop(0.1, 0.2));
        let tcp = |mib, per_gib| crate::TcpSample {
            rtt_p50_us: 1.0,
            rtt_p99_us: 1.0,
            bulk_mib_s: mib,
            bulk_cpu_s_per_gib: per_gib,
        };
        r.tcp.insert("direct", vec![tcp(2048.0, None)]);
        r.tcp.insert("weft", vec![tcp(400.0, Some(3.0))]);
        r.tcp.insert("haproxy-mtls", vec![tcp(400.0, Some(4.0))]);
        let mut o = String::new();
        bars_section(&mut o, &r, 2);
        // 0.8 x 0.416 = 0.333; less Weft's kernel 0.219 leaves 0.114 of its 0.172: cut 34 %.
        assert!(
            o.contains("| HTTP/1.1 | 0.333 | 0.219 / 0.227 | 0.114 | 0.172 / 0.189 | 34 % |"),
            "{o}"
        );
        assert!(o.contains("| 0.240 | 0.250 / 0.200 | -0.010 |"), "{o}");
        assert!(o.contains("all of it, and more"), "{o}");
        // Bar 1024 MiB/s = 1 GiB/s: 3 and 4 cores at 3 and 4 s per GiB.
        assert!(o.contains("(1024 MiB/s each way)"), "{o}");
        assert!(o.contains("proxies alone 3.0 cores"), "{o}");
        // Without HAProxy's figures the line says nothing of them.
        let mut tcp_only = r.tcp.clone();
        tcp_only.remove("haproxy-mtls");
        let alone = Results {
            tcp: tcp_only,
            ..Results::default()
        };
        let mut o2 = String::new();
        bars_section(&mut o2, &alone, 2);
        assert!(o2.contains("in this run; the machine has 2"), "{o2}");
        assert!(!o2.contains("theirs"), "{o2}");
        assert!(
            o.contains("at theirs: haproxy-mtls 4.0); the machine has 2"),
            "{o}"
        );
    }
}
