//! The destination service: `Watch(target) -> stream Update`.
//!
//! One [`Hub`] is shared by every subscriber. It holds the latest [`Lookup`] and, for each
//! target some proxy watches, a `watch` channel carrying that target's current answer. A new
//! snapshot is looked up once per watched target, not once per subscriber, and sent only to
//! targets whose answer changed; each subscriber's stream then turns "what I last sent" and
//! "what is current" into one delta. A burst of changes while a slow proxy is not reading
//! coalesces into one update (the `watch` channel keeps only the latest), so a slow reader
//! never makes the control plane queue for it.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;
use weft_api::destination::{self as pb, destination_server};
use weft_control_plane_config::{
    index::{Answer, Lookup, Target},
    model::Snapshot,
};

use crate::metrics::DiscoveryMetrics;

/// Most distinct targets watched at once; past it, new targets are refused
/// (`RESOURCE_EXHAUSTED`) rather than letting callers grow the control plane without end.
pub const MAX_TARGETS: usize = 200_000;

/// A target's answer as of one version.
#[derive(Debug)]
pub struct Versioned {
    pub version: u64,
    /// When the change that produced it took effect here (for the push-latency histogram).
    pub since: Instant,
    pub answer: Answer,
}

/// The shared index and its subscriptions.
#[derive(Debug)]
pub struct Hub {
    /// False until a watched source published its first state: Watch answers UNAVAILABLE
    /// (the proxy retries) rather than "no such Service".
    synced: std::sync::atomic::AtomicBool,
    cluster_domain: String,
    trust_domain: String,
    metrics: DiscoveryMetrics,
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    lookup: Arc<Lookup>,
    version: u64,
    targets: HashMap<Target, watch::Sender<Arc<Versioned>>>,
}

impl Hub {
    pub fn new(
        snapshot: Arc<Snapshot>,
        trust_domain: &str,
        cluster_domain: &str,
        metrics: DiscoveryMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            synced: std::sync::atomic::AtomicBool::new(true),
            cluster_domain: cluster_domain.to_string(),
            trust_domain: trust_domain.to_string(),
            metrics,
            state: Mutex::new(HubState {
                lookup: Arc::new(Lookup::new(snapshot, trust_domain)),
                version: 1,
                targets: HashMap::new(),
            }),
        })
    }

    /// Marks whether the index holds a real state yet.
    pub fn set_synced(&self, synced: bool) {
        self.synced
            .store(synced, std::sync::atomic::Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current answer for `target`, and its changes from now on.
    pub fn subscribe(&self, target: Target) -> Result<watch::Receiver<Arc<Versioned>>, Status> {
        let mut state = self.lock();
        if let Some(tx) = state.targets.get(&target) {
            return Ok(tx.subscribe());
        }
        if state.targets.len() >= MAX_TARGETS {
            return Err(Status::resource_exhausted(format!(
                "the control plane already tracks {MAX_TARGETS} destinations"
            )));
        }
        let answer = state.lookup.answer(&target);
        let (tx, rx) = watch::channel(Arc::new(Versioned {
            version: state.version,
            since: Instant::now(),
            answer,
        }));
        state.targets.insert(target, tx);
        self.metrics.destinations.set(state.targets.len() as i64);
        Ok(rx)
    }

    /// Takes a new snapshot: every watched target whose answer changed is told, once.
    /// Targets nobody watches any more are forgotten.
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let since = Instant::now();
        // Indexing happens outside the lock; only the per-target lookups hold it.
        let lookup = Arc::new(Lookup::new(snapshot, &self.trust_domain));
        let mut state = self.lock();
        state.version += 1;
        let version = state.version;
        // The previous index is freed after the pushes and outside the lock (profiled: dropping
        // a large snapshot is a tenth of the apply).
        let previous = std::mem::replace(&mut state.lookup, lookup.clone());
        state.targets.retain(|target, tx| {
            if tx.receiver_count() == 0 {
                return false;
            }
            let answer = lookup.answer(target);
            tx.send_if_modified(|current| {
                if current.answer == answer {
                    return false;
                }
                *current = Arc::new(Versioned {
                    version,
                    since,
                    answer,
                });
                true
            });
            true
        });
        self.metrics.destinations.set(state.targets.len() as i64);
        let targets = state.targets.len();
        drop(state);
        drop(previous);
        debug!(
            version,
            services = lookup.services(),
            targets,
            "config applied"
        );
    }

    /// Applies every snapshot `source` publishes until it closes or `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        mut source: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = source.changed() => if r.is_err() { return },
            }
            let snapshot = source.borrow_and_update().clone();
            let hub = self.clone();
            // Indexing a large cluster is CPU work: off the async workers.
            if tokio::task::spawn_blocking(move || hub.apply(snapshot))
                .await
                .is_err()
            {
                tracing::error!("applying a config snapshot panicked; keeping the previous one");
                continue;
            }
            if !self.synced.swap(true, std::sync::atomic::Ordering::AcqRel) {
                tracing::info!("config source in sync; serving discovery");
            }
        }
    }
}

/// The service behind `weft.destination.v1.Destination`.
#[derive(Debug, Clone)]
pub struct DestinationService {
    hub: Arc<Hub>,
    shutdown: CancellationToken,
}

impl DestinationService {
    pub fn new(hub: Arc<Hub>, shutdown: CancellationToken) -> Self {
        Self { hub, shutdown }
    }
}

/// One subscriber's stream of updates.
pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::Update, Status>> + Send>>;

struct Subscriber {
    rx: watch::Receiver<Arc<Versioned>>,
    /// What this proxy holds: the last answer sent.
    sent: Option<Arc<Versioned>>,
    metrics: DiscoveryMetrics,
    shutdown: CancellationToken,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
    }
}

impl Subscriber {
    async fn next(&mut self) -> Option<pb::Update> {
        loop {
            if self.sent.is_some() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    r = self.rx.changed() => r.ok()?,
                }
            }
            let current = self.rx.borrow_and_update().clone();
            let update = match &self.sent {
                None => Some(current.answer.whole(current.version)),
                Some(sent) => current.answer.since(&sent.answer, current.version),
            };
            self.sent = Some(current.clone());
            // A change and its reversal, coalesced, are nothing to send.
            let Some(update) = update else { continue };
            let kind = match &update.kind {
                Some(pb::update::Kind::Delta(_)) => "delta",
                Some(pb::update::Kind::NotAService(_)) => "not_a_service",
                _ => "snapshot",
            };
            self.metrics.updates.with_label_values(&[kind]).inc();
            self.metrics
                .push_latency
                .observe(current.since.elapsed().as_secs_f64());
            return Some(update);
        }
    }
}

#[tonic::async_trait]
impl destination_server::Destination for DestinationService {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if !self.hub.synced.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Status::unavailable(
                "the control plane has not finished reading the cluster yet; retry",
            ));
        }
        let target = match &req.service {
            Some(service) => Target::service(service),
            None => Target::parse(&req.target, &self.hub.cluster_domain),
        }
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        debug!(%target, proxy = %req.proxy_id.chars().take(256).collect::<String>(), "watch");
        let rx = self.hub.subscribe(target)?;
        self.hub.metrics.subscribers.inc();
        let subscriber = Subscriber {
            rx,
            sent: None,
            metrics: self.hub.metrics.clone(),
            shutdown: self.shutdown.clone(),
        };
        let stream = futures_util::stream::unfold(subscriber, |mut s| async move {
            let update = s.next().await?;
            Some((Ok(update), s))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests;
