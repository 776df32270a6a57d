//! The exporter thread: batches from the queue, one OTLP `Export` call per batch.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use http::{uri::PathAndQuery, Uri};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use weft_api::client::H2Connection;
use weft_proxy_trace::Span;

use crate::{convert, Counters, Resource, Settings};

/// The gRPC method spans go to.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How often the same export failure is logged again.
const REPEAT_WARNING: Duration = Duration::from_secs(60);

pub(crate) struct Exporter {
    settings: Settings,
    resource: Resource,
    counters: Arc<Counters>,
    conn: Option<H2Connection>,
    last_warning: Option<(String, Instant)>,
}

impl Exporter {
    pub(crate) fn new(settings: Settings, resource: Resource, counters: Arc<Counters>) -> Self {
        Exporter {
            settings,
            resource,
            counters,
            conn: None,
            last_warning: None,
        }
    }

    /// The thread's body: batches until every sender is gone, then one last export.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Span>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                warn!("trace export is off: cannot start its runtime: {e}");
                // The queue fills and every span is counted as dropped.
                return;
            }
        };
        rt.block_on(async move {
            let max = self.settings.batch.max(1);
            let mut batch = Vec::with_capacity(max);
            loop {
                let Some(first) = rx.recv().await else { break };
                batch.push(first);
                let deadline = tokio::time::Instant::now() + self.settings.flush_every;
                let mut closed = false;
                while batch.len() < max {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(span)) => batch.push(span),
                        Ok(None) => {
                            closed = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                self.export(&batch).await;
                batch.clear();
                if closed {
                    break;
                }
            }
            debug!("trace export stopped: no more spans will come");
        });
    }

    /// One batch, counted whatever happens.
    async fn export(&mut self, batch: &[Span]) {
        let n = batch.len() as u64;
        let request = convert::request(&self.resource, batch);
        let outcome = tokio::time::timeout(self.settings.timeout, self.call(request)).await;
        let error = match outcome {
            Ok(Ok(response)) => {
                let partial = response.partial_success.unwrap_or_default();
                let rejected = u64::try_from(partial.rejected_spans).unwrap_or(0).min(n);
                self.counters
                    .exported
                    .fetch_add(n - rejected, Ordering::Relaxed);
                if rejected == 0 {
                    self.last_warning = None;
                    return;
                }
                self.counters
                    .rejected
                    .fetch_add(rejected, Ordering::Relaxed);
                format!(
                    "the collector {} refused {rejected} of {n} spans: {}",
                    self.settings.collector, partial.error_message
                )
            }
            Ok(Err(e)) => {
                self.conn = None;
                self.counters.export_failed.fetch_add(n, Ordering::Relaxed);
                format!("exporting {n} spans to {}: {e}", self.settings.collector)
            }
            Err(_) => {
                self.conn = None;
                self.counters.export_failed.fetch_add(n, Ordering::Relaxed);
                format!(
                    "exporting {n} spans to {}: no answer within {:?}",
                    self.settings.collector, self.settings.timeout
                )
            }
        };
        self.warn(error);
    }

    /// Logs `text` unless the same was logged within [`REPEAT_WARNING`].
    fn warn(&mut self, text: String) {
        let now = Instant::now();
        let repeat = self
            .last_warning
            .as_ref()
            .is_some_and(|(last, at)| *last == text && now.duration_since(*at) < REPEAT_WARNING);
        if !repeat {
            warn!("{text}; spans are dropped until it recovers");
            self.last_warning = Some((text, now));
        }
    }

    async fn call(
        &mut self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, String> {
        let conn = match &self.conn {
            Some(c) if !c.is_closed() => c.clone(),
            _ => {
                let tcp = tokio::net::TcpStream::connect(self.settings.collector.as_str())
                    .await
                    .map_err(|e| format!("connecting: {e}"))?;
                let _ = tcp.set_nodelay(true);
                let c = H2Connection::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
                self.conn = Some(c.clone());
                c
            }
        };
        let origin = Uri::try_from(format!("http://{}", self.settings.collector))
            .map_err(|e| format!("the collector address is not host:port: {e}"))?;
        let mut grpc = tonic::client::Grpc::with_origin(conn, origin);
        grpc.ready()
            .await
            .map_err(|e| format!("the connection is not ready: {e}"))?;
        let codec = tonic_prost::ProstCodec::default();
        grpc.unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(EXPORT_PATH),
            codec,
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))
    }
}
