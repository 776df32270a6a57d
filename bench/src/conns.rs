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
//!
//! New mesh connections: a client makes `--handshakes` full mutual TLS 1.3 handshakes with a
//! third proxy's inbound port (strict mTLS), as a peer proxy makes them (its configs and
//! verifiers, a P-256 certificate from the mesh's issuer), 8 at a time, each on a new TCP
//! connection. The CPU both ends spent per handshake, from `/proc`, against the same
//! handshake done in memory in this process (what `make bench-micro`'s `mtls_handshake` does),
//! the two taking turns in four rounds: the share of rustls's rate that survives sockets, the
//! kernel and the proxy around it.
//!
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
    procs::{memory_of, Memory, Proc},
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

/// How long after the connections closed the proxy's memory is read again: past its next look
/// at the heap they freed (the admin thread's, every 2 s).
const AFTER_CLOSE: Duration = Duration::from_secs(3);

/// What one run measures.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    /// Idle connections held at once through one proxy.
    pub count: usize,
    /// The second proxy's descriptor limit.
    pub fd_limit: u64,
    /// New mesh connections made with the third.
    pub handshakes: usize,
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
    let idle = memory_of(proxy.pid())?;
    let (held, open) = rt.block_on(open_many(entry, plan.count))?;
    anyhow::ensure!(
        held.len() == plan.count,
        "only {} of {} connections were echoed through the proxy",
        held.len(),
        plan.count
    );
    std::thread::sleep(Duration::from_millis(500));
    let loaded = memory_of(proxy.pid())?;
    let peak = proxy.status_kib("VmHWM")?;
    drop(held);
    std::thread::sleep(AFTER_CLOSE);
    let after = memory_of(proxy.pid())?;
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
    drop(limited);

    // New mesh connections.
    let tls = Tls::new(&mesh)?;
    let in_port = crate::procs::free_port()?;
    let (inbound, admin) = Chain::weft_proxy(
        &weft_bin,
        &mesh,
        "weft-handshakes",
        "server",
        &[
            ("WEFT_INBOUND_PORT", in_port.to_string()),
            ("WEFT_INBOUND_TARGET", tcp_up.to_string()),
            ("WEFT_INBOUND_MTLS", "strict".to_string()),
        ],
    )?;
    crate::procs::wait_ready(admin, "weft-handshakes")?;
    let entry = SocketAddr::from(([127, 0, 0, 1], in_port));
    let bare = BareServer::start(tls.server.clone())?;
    // Warm-up.
    rt.block_on(handshakes(entry, &tls, 16))?;
    rt.block_on(handshakes(bare.addr, &tls, 16))?;
    // End to end (the proxy, then a bare tokio-rustls server) and in memory take turns, so a
    // change in the machine's speed during the run (other work, the CPU's clock) weighs on
    // every side of the ratios alike.
    let mut handshake = Handshakes {
        count: plan.handshakes,
        wall: Duration::ZERO,
        proxy: Duration::ZERO,
        client: Duration::ZERO,
        bare: (Duration::ZERO, Duration::ZERO),
        in_memory: (Duration::ZERO, Duration::ZERO),
    };
    let mut in_memory_count = 0;
    for round in 0..HANDSHAKE_ROUNDS {
        let share =
            |total: usize| total / HANDSHAKE_ROUNDS + usize::from(round < total % HANDSHAKE_ROUNDS);
        let (proxy_before, client_before) = (inbound.cpu()?, own_cpu()?);
        handshake.wall += rt.block_on(handshakes(entry, &tls, share(plan.handshakes)))?;
        // The proxy verifies the last client's certificate after that client returned.
        std::thread::sleep(Duration::from_millis(200));
        handshake.proxy += inbound.cpu()? - proxy_before;
        handshake.client += own_cpu()? - client_before;
        let (server_before, all_before) = (bare.cpu()?, own_cpu()?);
        rt.block_on(handshakes(bare.addr, &tls, share(plan.handshakes)))?;
        std::thread::sleep(Duration::from_millis(200));
        let server = bare.cpu()? - server_before;
        handshake.bare.0 += server;
        handshake.bare.1 += (own_cpu()? - all_before).saturating_sub(server);
        let count = share(plan.handshakes.min(2000));
        let (both, server) = tls.in_memory(count)?;
        handshake.in_memory.0 += both;
        handshake.in_memory.1 += server;
        in_memory_count += count;
    }
    let n = u32::try_from(in_memory_count.max(1)).unwrap_or(u32::MAX);
    handshake.in_memory = (handshake.in_memory.0 / n, handshake.in_memory.1 / n);

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
            handshake,
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

/// The client's side of the mesh hop, as a peer proxy has it, and the server's, for the
/// in-memory baseline.
struct Tls {
    client: std::sync::Arc<rustls::ClientConfig>,
    server: std::sync::Arc<rustls::ServerConfig>,
}

impl Tls {
    fn new(mesh: &MeshPki) -> anyhow::Result<Tls> {
        let issuer = mesh.issuer()?;
        let bundle = weft_certs::TrustBundle::from_pem(&std::fs::read_to_string(&mesh.anchors)?)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = |sa: &str| -> anyhow::Result<weft_proxy_identity::MeshTls> {
            let id = weft_certs::SpiffeId::new("cluster.local", "bench", sa)?;
            let req = weft_certs::new_key_and_csr(&id)?;
            let signed = issuer.sign_csr(
                &req.csr_der,
                &id,
                Duration::from_secs(3600),
                time::OffsetDateTime::now_utc(),
            )?;
            let store = weft_certs::CertStore::new();
            store.store(weft_certs::certified_key(
                &signed.chain_der,
                &req.key,
                &provider,
            )?);
            Ok(weft_proxy_identity::MeshTls::new(
                id,
                bundle.clone(),
                provider.clone(),
                store,
            )?)
        };
        let (client, server) = (tls("client")?, tls("server")?);
        Ok(Tls {
            client: client.client_config(server.id())?,
            server: server.server_config(),
        })
    }

    /// `count` handshakes in memory on this thread, as `mtls_handshake` makes them: the CPU
    /// of them all, both ends, and the server's part of it (timed around its calls on the
    /// monotonic clock; the thread does nothing else).
    fn in_memory(&self, count: usize) -> anyhow::Result<(Duration, Duration)> {
        let mut server_side = Duration::ZERO;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let started = crate::procs::thread_cpu()?;
        let mut buf = Vec::with_capacity(8192);
        for _ in 0..count {
            let mut c = rustls::ClientConnection::new(self.client.clone(), name.clone())?;
            let t = Instant::now();
            let mut s = rustls::ServerConnection::new(self.server.clone())?;
            server_side += t.elapsed();
            for _ in 0..8 {
                if !c.is_handshaking() && !s.is_handshaking() {
                    break;
                }
                buf.clear();
                c.write_tls(&mut buf)?;
                let t = Instant::now();
                s.read_tls(&mut buf.as_slice())?;
                s.process_new_packets()?;
                buf.clear();
                s.write_tls(&mut buf)?;
                server_side += t.elapsed();
                c.read_tls(&mut buf.as_slice())?;
                c.process_new_packets()?;
            }
            anyhow::ensure!(
                !c.is_handshaking() && !s.is_handshaking(),
                "in-memory handshake did not finish"
            );
        }
        Ok((crate::procs::thread_cpu()? - started, server_side))
    }
}

/// This process's CPU time, every thread.
fn own_cpu() -> anyhow::Result<Duration> {
    crate::procs::cpu_of(std::process::id())
}

/// A tokio-rustls server on its own thread (one current-thread runtime) with the proxy's
/// server config, doing nothing but the handshake and waiting for the close: what a socket and
/// a runtime cost around a handshake without a proxy. Stops when dropped.
struct BareServer {
    addr: SocketAddr,
    thread: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl BareServer {
    fn start(config: std::sync::Arc<rustls::ServerConfig>) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (path_tx, path_rx) = std::sync::mpsc::channel();
        let join = std::thread::Builder::new()
            .name("bare-tls".into())
            .spawn(move || {
                let _ = path_tx.send(crate::procs::thread_path());
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    loop {
                        let tcp = tokio::select! {
                            _ = &mut stopped => return,
                            accepted = listener.accept() => match accepted {
                                Ok((tcp, _)) => tcp,
                                Err(_) => {
                                    // Out of descriptors, say: not a busy loop.
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            },
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            let _ = tcp.set_nodelay(true);
                            let serve = async {
                                let mut tls = acceptor.accept(tcp).await?;
                                let mut byte = [0u8; 1];
                                while tls.read(&mut byte).await? > 0 {}
                                std::io::Result::Ok(())
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
                        });
                    }
                });
            })?;
        let thread = path_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the bare TLS server's thread did not start")??;
        Ok(Self {
            addr,
            thread,
            stop: Some(stop),
            join: Some(join),
        })
    }

    /// The server thread's CPU so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        crate::procs::thread_cpu_at(&self.thread)
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// The turns end-to-end and in-memory handshakes take.
const HANDSHAKE_ROUNDS: usize = 4;

/// `count` handshakes with `entry`, 8 at a time, each on a new TCP connection, closed once
/// done; the wall time.
async fn handshakes(entry: SocketAddr, tls: &Tls, count: usize) -> anyhow::Result<Duration> {
    const AT_ONCE: usize = 8;
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let started = Instant::now();
    let workers: Vec<_> = (0..AT_ONCE)
        .map(|w| {
            let (connector, name) = (connector.clone(), name.clone());
            let mine = count / AT_ONCE + usize::from(w < count % AT_ONCE);
            tokio::spawn(async move {
                for _ in 0..mine {
                    let tcp = TcpStream::connect(entry).await?;
                    tcp.set_nodelay(true)?;
                    let tls =
                        tokio::time::timeout(ECHO_PATIENCE, connector.connect(name.clone(), tcp))
                            .await
                            .context("no handshake within a second")??;
                    drop(tls);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await.context("handshake task")??;
    }
    Ok(started.elapsed())
}

struct Handshakes {
    count: usize,
    wall: Duration,
    proxy: Duration,
    client: Duration,
    /// The same handshakes with a bare tokio-rustls server: its CPU, and the client's.
    bare: (Duration, Duration),
    /// CPU of one in-memory handshake, both ends, and the server's part.
    in_memory: (Duration, Duration),
}

struct Figures {
    idle: Memory,
    loaded: Memory,
    peak: u64,
    after: Memory,
    open: Duration,
    most: usize,
    recovered: bool,
    handshake: Handshakes,
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
         | 3 s after they closed (the proxy gives freed heap back every 2 s) | {:.1} | {:.1} |\n",
        mib(f.idle.rss_kib),
        mib(f.idle.anon_kib),
        plan.count,
        mib(f.loaded.rss_kib),
        mib(f.loaded.anon_kib),
        per(f.idle.rss_kib, f.loaded.rss_kib),
        per(f.idle.anon_kib, f.loaded.anon_kib),
        mib(f.peak),
        mib(f.after.rss_kib),
        mib(f.after.anon_kib),
    );
    let per_conn = per(f.idle.rss_kib, f.loaded.rss_kib);
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
    let h = &f.handshake;
    let per_handshake = |cpu: Duration| cpu.as_secs_f64() * 1e6 / h.count.max(1) as f64;
    let (proxy_us, client_us) = (per_handshake(h.proxy), per_handshake(h.client));
    let both_us = proxy_us + client_us;
    let memory_us = h.in_memory.0.as_secs_f64() * 1e6;
    let memory_server_us = h.in_memory.1.as_secs_f64() * 1e6;
    let (bare_server_us, bare_client_us) = (per_handshake(h.bare.0), per_handshake(h.bare.1));
    let bare_us = bare_server_us + bare_client_us;
    let share = memory_us / both_us.max(f64::MIN_POSITIVE);
    let server_share = memory_server_us / proxy_us.max(f64::MIN_POSITIVE);
    let _ = writeln!(
        s,
        "\nNew mesh connections: {count} full mutual TLS 1.3 handshakes (P-256, the proxies' \
         configs and verifiers) with a Weft proxy's inbound port in strict mode, 8 at a time, \
         each on a new TCP connection: {rate:.0} per second on the wall clock. They and the \
         same handshakes in memory take turns, {HANDSHAKE_ROUNDS} rounds of each.\n\n\
         | CPU per handshake, µs | proxy (server) | client | both ends | handshakes per second per \
         core, both ends |\n|---|---|---|---|---|\n\
         | end to end | {proxy_us:.0} | {client_us:.0} | {both_us:.0} | {e2e:.0} |\n\
         | end to end with a bare tokio-rustls server (no proxy), this process | {bare_server_us:.0} | {bare_client_us:.0} | {bare_us:.0} | {bare:.0} |\n\
         | in memory, this process (`mtls_handshake`'s loop) | {memory_server_us:.0} | {memory_client_us:.0} | {memory_us:.0} | {mem:.0} |\n\n\
         Goal (issue 19): end to end at least 0.8x rustls's in-memory rate: **{verdict}** \
         ({share:.2}x for both ends; the proxy's side alone keeps {server_share:.2}x of the \
         in-memory server's rate; the client here is the harness, not a proxy). Against the \
         bare tokio-rustls server over the same sockets the proxy's side keeps \
         {bare_share:.2}x of its rate: what sockets and a runtime cost is in both.\n",
        count = h.count,
        rate = h.count as f64 / h.wall.as_secs_f64().max(f64::MIN_POSITIVE),
        e2e = 1e6 / both_us.max(f64::MIN_POSITIVE),
        memory_client_us = memory_us - memory_server_us,
        mem = 1e6 / memory_us.max(f64::MIN_POSITIVE),
        bare = 1e6 / bare_us.max(f64::MIN_POSITIVE),
        bare_share = bare_server_us / proxy_us.max(f64::MIN_POSITIVE),
        verdict = if share >= 0.8 { "met" } else { "not met" },
    );
    s
}
