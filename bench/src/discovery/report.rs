//! The discovery report: Markdown, printed, and written into `BENCHMARKS.md` between its own
//! markers (the "Latest run" section is left alone) and into
//! `bench/runs/<date>-<commit>-discovery.md`.

use std::{fmt::Write as _, time::Duration};

use super::{Level, Memory, Plan};
use crate::report::{Machine, Section};

pub fn render(
    plan: &Plan,
    m: &Machine,
    levels: &[Level],
    took: Duration,
    load: (Option<f64>, Option<f64>),
) -> String {
    let mut s = String::new();
    let pods = plan.services * plan.endpoints;
    let show = |l: Option<f64>| l.map_or_else(|| "?".into(), |l| format!("{l:.1}"));
    let _ = writeln!(
        s,
        "### Run of {}, commit `{}`\n\nMachine: {}, {} cores, Linux {}. Took {:.0} s. \
         1-minute load average before / after: {} / {} (other work shares the machine).\n",
        m.date,
        m.commit,
        m.cpu,
        m.cores,
        m.kernel,
        took.as_secs_f64(),
        show(load.0),
        show(load.1),
    );
    let _ = writeln!(
        s,
        "The release `weft-control-plane` (its 2 runtime threads, `--config-poll-interval {} ms`, \
         `--source local:DIR`), a fresh process per row, loads {} Services of {} ready, meshed \
         endpoints each ({pods} Pods, {} YAML documents in two files). One client process (a Tokio \
         runtime on all {} cores) plays the proxies: one TLS 1.3 + HTTP/2 connection per proxy, \
         checked against the trust anchor and the control plane's SPIFFE ID as a proxy checks \
         it, and {} `Watch` streams on it, one per destination the proxy talks to, on Services \
         dealt round robin (subscriber *i* watches Service *i* mod {}, by cluster IP). Proxies \
         dial together, at most {} handshakes at a time.\n",
        plan.poll.as_millis(),
        plan.services,
        plan.endpoints,
        plan.services * (2 + plan.endpoints),
        m.cores,
        plan.per_proxy,
        plan.services,
        plan.dial_concurrency,
    );

    s.push_str(
        "| subscribers | proxies (connections) | all connected / every first update, ms | \
         one-Service change p50 / p99 / max, ms | every-Service change p50 / p99 / last, ms | \
         control plane RSS / RssAnon, MiB |\n|---|---|---|---|---|---|\n",
    );
    let baselines: Vec<Memory> = levels.iter().map(|l| l.baseline).collect();
    let _ = writeln!(
        s,
        "| 0 (Services loaded) | – | – | – | – | {} / {} |",
        range(baselines.iter().map(|b| mib(b.rss_kib)), 1),
        range(baselines.iter().map(|b| mib(b.anon_kib)), 1),
    );
    for l in levels {
        let (one, all) = (&l.one.latencies, &l.all.latencies);
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} / {} / {} | {} / {} / {} | {:.1} / {:.1} |",
            l.subscribers,
            l.proxies,
            ms(l.connected),
            ms(l.first_updates),
            opt_ms(percentile(one, 0.5)),
            opt_ms(percentile(one, 0.99)),
            opt_ms(one.iter().max().copied()),
            opt_ms(percentile(all, 0.5)),
            opt_ms(percentile(all, 0.99)),
            median_range(&l.all.lasts),
            mib(l.established.rss_kib),
            mib(l.established.anon_kib),
        );
    }

    bars(&mut s, plan, levels);

    s.push_str(
        "\n### Where the time and memory go\n\n\
         | subscribers | told per one-Service change | server-side one-Service p50 / p99, ms | \
         server-side every-Service p50 / p99, ms | control plane CPU per every-Service change, ms | \
         client CPU per every-Service change, ms | control plane / client CPU to bring all up, ms | \
         RssAnon per subscriber over the baseline, KiB | RSS / RssAnon at the end, MiB | \
         peak RSS after loading / at the end, MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for l in levels {
        let per_change = |d: Duration, reps: usize| ms(d / reps.max(1) as u32);
        let per_sub = (l.established.anon_kib as f64 - l.baseline.anon_kib as f64)
            / l.subscribers.max(1) as f64;
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} / {} | {} | {} | {} / {} | {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
            l.subscribers,
            l.one.told,
            server(l.one.server.quantile(0.5)),
            server(l.one.server.quantile(0.99)),
            server(l.all.server.quantile(0.5)),
            server(l.all.server.quantile(0.99)),
            per_change(l.all.cp_cpu, l.all.reps),
            per_change(l.all.client_cpu, l.all.reps),
            ms(l.cp_cpu_establish),
            ms(l.client_cpu_establish),
            per_sub,
            mib(l.end.rss_kib),
            mib(l.end.anon_kib),
            mib(l.baseline_peak_kib),
            mib(l.peak_kib),
        );
    }

    let one_reps = levels.first().map_or(0, |l| l.one.reps);
    let all_reps = levels.first().map_or(0, |l| l.all.reps);
    let _ = writeln!(
        s,
        "\nHow to read it:\n\n\
         - **Push latency is client-side and nothing is subtracted**: from the `rename` that \
         atomically replaces the Services file (written whole under a temporary name first) to \
         the update's arrival on each subscriber's stream, on the same monotonic clock. It \
         includes the control plane noticing the change (inotify wakes its poll of the folder \
         once the folder has been quiet for 10 ms; without it, the next poll, 0 to {poll} ms \
         later), re-reading the folder and parsing the \
         documents whose text changed (the others' typed objects are kept between reads), \
         re-indexing, the push, and this client's own scheduling on the shared cores.\n\
         - A one-Service change flips one endpoint of one Service between ready and not ready, \
         {one_reps} times over different Services; its subscribers (the row's subscribers \
         divided by {services}, at least 1) each get a delta of one endpoint. An every-Service \
         change flips one endpoint of all {services} Services at once, {all_reps} times; every \
         subscriber gets a delta. p50 and p99 pool every subscriber of every repetition; \
         *last* is when the last subscriber had it, the median of the repetitions [min–max].\n\
         - Every change is checked: each subscriber of a changed Service gets exactly one delta \
         of exactly one endpoint, and no other subscriber gets anything. Each stream's first \
         update must be the whole endpoint set with the pods' SPIFFE identity.\n\
         - **Server-side** is the control plane's own `weft_discovery_push_latency_seconds` \
         over exactly the series' pushes (the difference of two scrapes; its count is checked \
         against the deltas received), interpolated inside buckets as `histogram_quantile` \
         does: from the new snapshot's indexing starting to the update's hand-off to the \
         stream. It excludes noticing the change and the parse.\n\
         - Memory is the control plane's `VmRSS` and `RssAnon` (private: heap and stacks, not \
         the binary's shared code pages) from `/proc` once every stream had its first update; \
         the 0 row is each fresh process with its Services loaded before anyone connects \
         [min–max over the processes]. Peak RSS is `VmHWM` once the folder is loaded, and at \
         the end of the row after every change.\n\
         - The client and the control plane share the machine's cores; the CPU columns (user + \
         system time from `/proc`, in clock ticks of 10 ms, averaged over the repetitions) \
         show each side's share.",
        poll = plan.poll.as_millis(),
        services = plan.services,
    );
    s
}

/// Where the discovery report goes in `BENCHMARKS.md` and `bench/runs/`.
pub const SECTION: Section = Section {
    begin: "<!-- bench:discovery:begin -->",
    end: "<!-- bench:discovery:end -->",
    heading: "## Discovery at scale (issue 5)",
    suffix: "discovery",
};

/// The `q` quantile by nearest rank.
/// Subscribers the push-latency bars of issue 19 are set at.
const BAR_SUBSCRIBERS: usize = 10_000;

/// Issue 19's control-plane bars, each with its verdict: push latency at [`BAR_SUBSCRIBERS`],
/// peak memory over the changes at every row.
fn bars(s: &mut String, plan: &Plan, levels: &[Level]) {
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    s.push_str("\n| bar | measured | verdict |\n|---|---|---|\n");
    let one_bar = Duration::from_millis(50) + plan.poll;
    match levels.iter().find(|l| l.subscribers == BAR_SUBSCRIBERS) {
        Some(l) => {
            let one = percentile(&l.one.latencies, 0.99);
            let all = percentile(&l.all.latencies, 0.99);
            let _ = writeln!(
                s,
                "| one-Service change to {BAR_SUBSCRIBERS} subscribers: p99 at most 50 ms + the \
                 {} ms poll interval | {} ms | {} |",
                plan.poll.as_millis(),
                opt_ms(one),
                one.map_or("not measured", |p| verdict(p <= one_bar)),
            );
            let _ = writeln!(
                s,
                "| every-Service change to {BAR_SUBSCRIBERS} subscribers: p99 at most 250 ms | {} ms \
                 | {} |",
                opt_ms(all),
                all.map_or("not measured", |p| verdict(p <= Duration::from_millis(250))),
            );
        }
        None => {
            let _ = writeln!(
                s,
                "| push latency to {BAR_SUBSCRIBERS} subscribers | – | not measured (no row of \
                 {BAR_SUBSCRIBERS}) |"
            );
        }
    }
    for l in levels {
        let raised = l.peak_kib.saturating_sub(l.established.rss_kib);
        let _ = writeln!(
            s,
            "| the changes raise peak RSS by at most 20 MiB ({} subscribers: every stream up, \
             then peak after them) | +{:.1} MiB | {} |",
            l.subscribers,
            mib(raised),
            verdict(raised <= 20 * 1024),
        );
    }
}

fn percentile(values: &[Duration], q: f64) -> Option<Duration> {
    let mut v = values.to_vec();
    v.sort();
    let rank = (q * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len().max(1)) - 1).copied()
}

fn median_range(values: &[Duration]) -> String {
    let mut v = values.to_vec();
    v.sort();
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(lo), Some(mid), Some(hi)) if lo == hi => ms(*mid),
        (Some(lo), Some(_), Some(hi)) => {
            let median = percentile(&v, 0.5).unwrap_or_default();
            format!("{} [{}–{}]", ms(median), ms(*lo), ms(*hi))
        }
        _ => "–".into(),
    }
}

fn range(values: impl Iterator<Item = f64>, decimals: usize) -> String {
    let v: Vec<f64> = values.collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "–".into()
    } else if (hi - lo).abs() < 0.05 {
        format!("{lo:.decimals$}")
    } else {
        format!("{lo:.decimals$}–{hi:.decimals$}")
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Milliseconds with about three significant digits.
fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), ms)
}

fn server(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "–".into(), |s| ms(Duration::from_secs_f64(s.max(0.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_goes_before_latest_run_then_is_replaced_in_place() {
        let doc = "# Weft benchmarks\n\n## Targets\n\nx\n\n## Latest run\n\n<!-- bench:latest:begin -->\nold\n<!-- bench:latest:end -->\n";
        let once = SECTION.splice(doc, "first");
        assert!(once.contains("x\n\n## Discovery at scale (issue 5)\n\n<!-- bench:discovery:begin -->\nfirst\n<!-- bench:discovery:end -->\n\n## Latest run\n"), "{once}");
        let twice = SECTION.splice(&once, "second");
        assert_eq!(twice, once.replace("first", "second"));
        assert!(twice.contains("<!-- bench:latest:begin -->\nold\n"));
        assert!(SECTION
            .splice("", "t")
            .contains("<!-- bench:discovery:begin -->\nt\n"));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(ms(Duration::from_micros(1234)), "1.23");
        assert_eq!(ms(Duration::from_millis(123)), "123");
        assert_eq!(
            median_range(&[3, 1, 2].map(Duration::from_millis)),
            "2.00 [1.00–3.00]"
        );
    }
}
