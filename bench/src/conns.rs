//! `weft-bench conns`: what an idle proxied connection costs one Weft proxy, and how many one
//! proxy holds within its file-descriptor limit.
//!
//! One plaintext Weft proxy (one thread) forwards opaque TCP to the upstream's echo port
//! (`WEFT_OUTBOUND_TARGET`, an address no Service or meshed pod has, so it passes through). The client opens `--count` connections through it, each sends one
//! byte and reads its echo (so the forward is established and has carried data), and all stay
//! open and idle; the proxy's `VmRSS` and `RssAnon` from `/proc` before, with all of them
//! open, and after they closed give the cost per connection. A second proxy gets a descriptor
//! limit of `--fd-limit` (`prlimit`); the client opens connections one at a time until one is
//! not echoed within a second, and then checks the proxy serves again once some closed.
//! Every wait is bounded; every address is on loopback.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    procs::Proc,
    report::{Machine, Section},
    setups::{Chain, Cluster, MeshPki},
};

/// Where the report goes.
pub const SECTION: Section = Section {
    begin: "<!-- bench:conns:begin -->",
    end: "<!-- bench:conns:end -->",
    heading: "## Connections per proxy (issue 19)",
    suffix: "conns",
};

/// Connections dialling at once.
const DIAL_CONCURRENCY: usize = 128;
/// Bound on one connection's dial and echo.
const ECHO_PATIENCE: Duration = Duration::from_secs(1);

/// What one run measures.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    /// Idle connections held at once through one proxy.
    pub count: usize,
    /// The second proxy's descriptor limit.
    pub fd_limit: u64,
}

/// Memory of one proxy, KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    anon: u64,
}

impl Memory {
    fn of(proc: &Proc) -> anyhow::Result<Memory> {
        Ok(Memory {
            rss: proc.status_kib("VmRSS")?,
            anon: proc.status_kib("RssAnon")?,
        })
    }
}

pub fn main(plan: Plan, out: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let machine = Machine::host();
    // The client holds `count` sockets, the upstream `count`, the proxy twice that.
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let need = 2 * plan.count as u64 + 256;
    anyhow::ensure!(
        limit >= need,
        "{} connections need about {need} open files in the proxy; the limit is {limit} (raise \
         the hard limit: ulimit -Hn, or pass a smaller --count)",
        plan.count
    );
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary folder")?;
    let weft_bin = dir.join("weft-proxy");
    anyhow::ensure!(
        weft_bin.exists() && dir.join("weft-control-plane").exists(),
        "weft-proxy and weft-control-plane not built; run `make bench`"
    );
    let work = std::env::temp_dir().join(format!("weft-bench-conns-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let _cleanup = crate::RemoveOnDrop(work.clone());
    // The echo on 127.0.0.2: the cluster the control plane reads has a meshed pod on
    // 127.0.0.1 (the other set-ups' upstream), and this proxy's traffic must pass through as
    // plain opaque TCP.
    let (_server, http_up, tcp_up) = crate::start_upstream(&exe, 1024, "127.0.0.2")?;
    let mesh = MeshPki::start(dir, &work, &Cluster::new(http_up)?)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    // Idle connections through one proxy.
    let (proxy, entry) = plain_proxy(&weft_bin, &mesh, tcp_up, "weft-conns")?;
    rt.block_on(async {
        let warm = dial(entry).await?;
        drop(warm);
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = Memory::of(&proxy)?;
    let (held, open) = rt.block_on(open_many(entry, plan.count))?;
    anyhow::ensure!(
        held.len() == plan.count,
        "only {} of {} connections were echoed through the proxy",
        held.len(),
        plan.count
    );
    std::thread::sleep(Duration::from_millis(500));
    let loaded = Memory::of(&proxy)?;
    let peak = proxy.status_kib("VmHWM")?;
    drop(held);
    std::thread::sleep(Duration::from_secs(1));
    let after = Memory::of(&proxy)?;
    drop(proxy);

    // How many one proxy holds within a descriptor limit.
    let (limited, entry) = plain_proxy(&weft_bin, &mesh, tcp_up, "weft-fd-limit")?;
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(limited.pid().to_string())
        .arg(format!("--nofile={0}:{0}", plan.fd_limit))
        .status()
        .context("running prlimit (util-linux)")?;
    anyhow::ensure!(status.success(), "prlimit failed: {status}");
    let (most, recovered) = rt.block_on(fill(entry, plan.fd_limit as usize))?;

    let text = render(
        &plan,
        &machine,
        Figures {
            idle,
            loaded,
            peak,
            after,
            open,
            most,
            recovered,
        },
        started.elapsed(),
    );
    println!("{text}");
    if !plan.smoke {
        SECTION.write(out, &machine, &text)?;
        eprintln!("weft-bench conns: wrote {} and bench/runs/", out.display());
    }
    Ok(())
}

/// A Weft proxy forwarding opaque TCP to `target`; its entry address.
fn plain_proxy(
    bin: &Path,
    mesh: &MeshPki,
    target: SocketAddr,
    name: &str,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let port = crate::procs::free_port()?;
    let (proc, admin) = Chain::weft_proxy(
        bin,
        mesh,
        name,
        "client",
        &[
            ("WEFT_OUTBOUND_PORT", port.to_string()),
            ("WEFT_OUTBOUND_TARGET", target.to_string()),
        ],
    )?;
    crate::procs::wait_ready(admin, name)?;
    Ok((proc, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// A connection through the proxy that has carried one byte each way: a NUL, which no HTTP
/// request starts with, so the proxy's protocol detection decides "opaque" at once.
async fn dial(entry: SocketAddr) -> anyhow::Result<TcpStream> {
    tokio::time::timeout(ECHO_PATIENCE, async {
        let mut s = TcpStream::connect(entry).await?;
        s.write_all(b"\0").await?;
        let mut one = [1u8; 1];
        s.read_exact(&mut one).await?;
        anyhow::ensure!(one == *b"\0", "echo corrupted");
        anyhow::Ok(s)
    })
    .await
    .context("no echo within a second")?
}

/// `count` echoed connections, dialled `DIAL_CONCURRENCY` at a time; how long it took.
async fn open_many(entry: SocketAddr, count: usize) -> anyhow::Result<(Vec<TcpStream>, Duration)> {
    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let batch = DIAL_CONCURRENCY.min(count - held.len());
        let dials: Vec<_> = (0..batch).map(|_| tokio::spawn(dial(entry))).collect();
        for d in dials {
            held.push(d.await.context("dial task")??);
        }
    }
    Ok((held, started.elapsed()))
}

/// Opens connections one at a time until one is not echoed (at most `bound`); closes a tenth
/// and checks a new one is served again. The connections held, and whether it recovered.
async fn fill(entry: SocketAddr, bound: usize) -> anyhow::Result<(usize, bool)> {
    let mut held = Vec::new();
    while held.len() < bound {
        match dial(entry).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    let most = held.len();
    held.truncate(most - most / 10);
    // The proxy backs off accepting after running out of descriptors: give it a moment.
    let mut recovered = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if dial(entry).await.is_ok() {
            recovered = true;
            break;
        }
    }
    Ok((most, recovered))
}

struct Figures {
    idle: Memory,
    loaded: Memory,
    peak: u64,
    after: Memory,
    open: Duration,
    most: usize,
    recovered: bool,
}

fn render(plan: &Plan, m: &Machine, f: Figures, took: Duration) -> String {
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / plan.count as f64;
    let mib = |k: u64| k as f64 / 1024.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Run of {}, commit `{}`\n\nMachine: {}, {} cores, Linux {}. Took {:.0} s.\n",
        m.date,
        m.commit,
        m.cpu,
        m.cores,
        m.kernel,
        took.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "One Weft proxy (one thread) forwards opaque TCP in plaintext to an echo server. \
         {count} connections through it each carry one byte each way and then stay open and \
         idle (dialled {DIAL_CONCURRENCY} at a time, all up in {open:.1} s).\n",
        count = plan.count,
        open = f.open.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| | RSS, MiB | private (RssAnon), MiB |\n|---|---|---|\n\
         | idle, after one connection came and went | {:.1} | {:.1} |\n\
         | {} idle connections open | {:.1} | {:.1} |\n\
         | **per idle connection, KiB** | **{:.1}** | **{:.1}** |\n\
         | peak (VmHWM) | {:.1} | |\n\
         | 1 s after they closed | {:.1} | {:.1} |\n",
        mib(f.idle.rss),
        mib(f.idle.anon),
        plan.count,
        mib(f.loaded.rss),
        mib(f.loaded.anon),
        per(f.idle.rss, f.loaded.rss),
        per(f.idle.anon, f.loaded.anon),
        mib(f.peak),
        mib(f.after.rss),
        mib(f.after.anon),
    );
    let per_conn = per(f.idle.rss, f.loaded.rss);
    let _ = writeln!(
        s,
        "Goal (issue 19): an idle proxied connection costs at most 8 KiB: **{}** ({per_conn:.1} \
         KiB).\n",
        if per_conn <= 8.0 { "met" } else { "not met" }
    );
    let _ = writeln!(
        s,
        "Within a descriptor limit of {limit} (`prlimit --nofile`), one proxy held **{most}** \
         echoed connections (two descriptors each) before the next was not answered within a \
         second; with a tenth of them closed, it {recovered}.",
        limit = plan.fd_limit,
        most = f.most,
        recovered = if f.recovered {
            "served a new connection again"
        } else {
            "did **not** serve a new connection within 2 s"
        }
    );
    s
}
