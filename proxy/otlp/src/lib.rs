//! The Weft proxy's span exporter: OTLP over gRPC to `WEFT_TRACE_COLLECTOR`, from a thread of
//! its own.
//!
//! The data path hands a finished span to [`SpanSink::record`], which never blocks and never
//! waits: a `try_send` into a bounded queue, and a full queue drops the span and counts it. The
//! exporter thread (`weft-otlp`, its own single-threaded tokio runtime, so a stuck export can
//! never hold a data-path worker, and a shutdown never waits for it) takes up to
//! [`Settings::batch`] spans at a time, or what has come after [`Settings::flush_every`], and
//! sends them in one `Export` call bounded by [`Settings::timeout`]. A failed call drops its
//! batch (counted) and the connection; the next batch dials again.
//!
//! Why not the OpenTelemetry SDK's tracer and batch processor: the proxy makes one span per
//! sampled request with a fixed set of attributes, and the SDK's per-span machinery (a
//! `Context`, a boxed span, a `Vec<KeyValue>` of owned strings, a processor behind `dyn`) costs
//! more than the span; its dropped spans are logged, not counted where Prometheus sees them; and
//! its gRPC exporter brings tonic's whole channel stack. This crate uses the OpenTelemetry
//! project's own OTLP messages (`opentelemetry-proto`) and the connection the proxy already has
//! for gRPC (`weft_api::client::H2Connection`), and makes the OTLP span once, on this thread.

#![forbid(unsafe_code)]

mod convert;
mod export;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::mpsc;

pub use convert::{request, span, Resource};
pub use export::EXPORT_PATH;
use weft_proxy_trace::Span;

/// Where and how spans go.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The collector's OTLP/gRPC address, `host:port` (plaintext HTTP/2).
    pub collector: String,
    /// Spans waiting for the exporter at most; more are dropped.
    pub queue: usize,
    /// Spans per export call at most.
    pub batch: usize,
    /// How long a span may wait for a batch to fill.
    pub flush_every: Duration,
    /// One export call, connecting included, at most.
    pub timeout: Duration,
}

impl Settings {
    /// The defaults for `collector`: 2048 queued, batches of 512, flushed every second, 5 s
    /// per call.
    pub fn new(collector: impl Into<String>) -> Self {
        Settings {
            collector: collector.into(),
            queue: 2048,
            batch: 512,
            flush_every: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What became of the spans handed over (read by the proxy's `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    // Written by the exporter thread (and `queue_full` by the data path), read by scrapes.
    exported: AtomicU64,
    queue_full: AtomicU64,
    export_failed: AtomicU64,
    rejected: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted by the collector.
    pub exported: u64,
    /// Dropped because the queue was full (the collector slower than the traffic).
    pub queue_full: u64,
    /// Dropped with a batch whose export failed (no collector, a timeout, an error status).
    pub export_failed: u64,
    /// Refused by the collector in an otherwise successful export (its partial success).
    pub rejected: u64,
}

impl Counters {
    pub fn get(&self) -> Counts {
        Counts {
            exported: self.exported.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            export_failed: self.export_failed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

impl Counts {
    /// Every span accounted for.
    pub fn total(&self) -> u64 {
        self.exported + self.queue_full + self.export_failed + self.rejected
    }
}

/// The data path's handle: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct SpanSink {
    tx: mpsc::Sender<Span>,
    counters: Arc<Counters>,
}

impl SpanSink {
    /// Hands `span` to the exporter, or drops it (counted) if the queue is full or the exporter
    /// has stopped.
    pub fn record(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

impl weft_proxy_trace::Recorder for SpanSink {
    fn record(&self, span: Span) {
        SpanSink::record(self, span);
    }
}

/// Starts the exporter thread for `settings`, its spans made by `resource`. The thread ends
/// when every [`SpanSink`] is dropped, after one last bounded export of what is queued.
pub fn start(settings: Settings, resource: Resource) -> std::io::Result<SpanSink> {
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let counters = Arc::new(Counters::default());
    let exporter = export::Exporter::new(settings, resource, counters.clone());
    std::thread::Builder::new()
        .name("weft-otlp".into())
        .spawn(move || exporter.run(rx))?;
    Ok(SpanSink { tx, counters })
}
