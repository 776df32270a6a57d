//! What every watch service shares: one [`Hub`] per kind of answer, holding the latest index
//! of the config and, for each target some proxy watches, a `watch` channel carrying that
//! target's current answer.
//!
//! A kind of answer is an [`Answers`] implementation: what a proxy watches, what it is told,
//! how a snapshot's index answers one target, and how an answer becomes a whole update or a
//! change. The destination service ([`crate::discovery`]) is the first; routes and policy are
//! one more implementation each, with a gRPC service of their own, on the same hub.
//!
//! What a hub guarantees, whatever it answers:
//! - a new snapshot is compared with the one in force first ([`Answers::changes`]): one that
//!   changes nothing this kind answers is not even indexed; otherwise it is indexed once,
//!   outside the lock, and only the watched targets the change may touch
//!   ([`Answers::touched`]) are looked up again, once per snapshot, not once per subscriber;
//!   only targets whose answer changed are told. A one-Service change costs one Service's
//!   lookups however many targets are watched;
//! - each subscriber's stream turns "what I last sent" and "what is current" into one update,
//!   so a burst of changes while a slow proxy is not reading coalesces into one (the `watch`
//!   channel keeps only the latest), and a slow reader never makes the control plane queue;
//! - at most [`MAX_TARGETS`] targets at once; targets nobody watches are forgotten on the next
//!   snapshot;
//! - `weft_discovery_push_latency_seconds` measures from a snapshot taking effect to its
//!   update leaving for a proxy.

use std::{
    collections::HashMap,
    fmt,
    hash::Hash,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use weft_control_plane_config::model::Snapshot;

use crate::{config_thread::ConfigThread, metrics::DiscoveryMetrics};

/// Most distinct targets a hub watches at once; past it, new targets are refused
/// (`RESOURCE_EXHAUSTED`) rather than letting callers grow the control plane without end.
pub const MAX_TARGETS: usize = 200_000;

/// One kind of answer a [`Hub`] serves.
pub trait Answers: Send + Sync + 'static {
    /// What a proxy watches (a destination; a Service's routes).
    type Target: Clone + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static;
    /// A snapshot prepared for answering targets: built once per snapshot, off the async
    /// workers and outside the hub's lock.
    type Index: Send + Sync + 'static;
    /// What a proxy is told about one target; compared to tell whether it changed.
    type Answer: PartialEq + fmt::Debug + Send + Sync + 'static;
    /// The message a stream carries.
    type Update: Send + 'static;
    /// What changed between two snapshots, as this kind's answers see it.
    type Changes: Send;

    /// The `kind` label values [`Answers::kind`] returns, so every series exists from the
    /// start.
    const KINDS: &'static [&'static str];

    /// Indexes `snapshot`.
    fn index(&self, snapshot: Arc<Snapshot>) -> Self::Index;
    /// `target`'s answer: a few map lookups, done under the hub's lock.
    fn answer(&self, index: &Self::Index, target: &Self::Target) -> Self::Answer;
    /// The whole answer, as the first update on a stream.
    fn whole(&self, answer: &Self::Answer, version: u64) -> Self::Update;
    /// The update that takes a proxy holding `old` to `new` (a delta, or the whole answer);
    /// `None` when there is nothing to send.
    fn since(&self, new: &Self::Answer, old: &Self::Answer, version: u64) -> Option<Self::Update>;
    /// The update's kind, for `weft_discovery_updates_pushed_total{kind}`: one of
    /// [`Answers::KINDS`].
    fn kind(update: &Self::Update) -> &'static str;

    /// What differs from `old` to `new` for this kind; `None` when no answer can differ (the
    /// index in force stays and nobody is looked up).
    fn changes(&self, old: &Snapshot, new: &Snapshot) -> Option<Self::Changes>;
    /// Whether `target` may be answered differently by `new` than by `old` after `changes`;
    /// false must mean the two answers are equal. Called under the hub's lock for every
    /// watched target: a few hash lookups at most.
    fn touched(
        &self,
        changes: &Self::Changes,
        old: &Self::Index,
        new: &Self::Index,
        target: &Self::Target,
    ) -> bool;
}

/// A target's answer as of one version.
#[derive(Debug)]
pub struct Versioned<A> {
    pub version: u64,
    /// When the change that produced it took effect here (for the push-latency histogram).
    pub since: Instant,
    pub answer: A,
}

/// Why a watch was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("the control plane has not finished reading the cluster yet; retry")]
    NotSynced,
    #[error("the control plane already watches {MAX_TARGETS} targets; retry later")]
    Full,
}

impl From<WatchError> for tonic::Status {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::NotSynced => tonic::Status::unavailable(e.to_string()),
            WatchError::Full => tonic::Status::resource_exhausted(e.to_string()),
        }
    }
}

/// The shared index of one kind of answer and its subscriptions.
pub struct Hub<K: Answers> {
    kind: K,
    /// False until a watched source published its first state: a watch is told to retry
    /// (UNAVAILABLE) rather than told that nothing exists.
    synced: AtomicBool,
    metrics: DiscoveryMetrics,
    /// One [`Hub::apply`] at a time: each compares with the snapshot the last one left.
    applying: Mutex<()>,
    state: Mutex<HubState<K>>,
}

struct HubState<K: Answers> {
    /// The snapshot `index` was built from.
    snapshot: Arc<Snapshot>,
    index: Arc<K::Index>,
    version: u64,
    targets: HashMap<K::Target, watch::Sender<Current<K>>>,
}

/// A target's current answer, as its `watch` channel carries it.
type Current<K> = Arc<Versioned<<K as Answers>::Answer>>;

impl<K: Answers + fmt::Debug> fmt::Debug for Hub<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("kind", &self.kind)
            .field("synced", &self.synced)
            .finish_non_exhaustive()
    }
}

/// One subscriber's stream of updates.
pub type UpdateStream<U> = Pin<Box<dyn Stream<Item = Result<U, tonic::Status>> + Send>>;

impl<K: Answers> Hub<K> {
    /// A hub answering with `kind`, starting from `snapshot` (indexed here).
    pub fn new(kind: K, snapshot: Arc<Snapshot>, metrics: DiscoveryMetrics) -> Arc<Self> {
        for k in K::KINDS {
            metrics.updates.with_label_values(&[k]);
        }
        let index = Arc::new(kind.index(snapshot.clone()));
        Arc::new(Self {
            kind,
            synced: AtomicBool::new(true),
            metrics,
            applying: Mutex::new(()),
            state: Mutex::new(HubState {
                snapshot,
                index,
                version: 1,
                targets: HashMap::new(),
            }),
        })
    }

    /// What the hub answers with.
    pub fn kind(&self) -> &K {
        &self.kind
    }

    /// Marks whether the index holds a real state yet.
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current answer for `target`, and its changes from now on.
    pub fn subscribe(&self, target: K::Target) -> Result<watch::Receiver<Current<K>>, WatchError> {
        let mut state = self.lock();
        if let Some(tx) = state.targets.get(&target) {
            return Ok(tx.subscribe());
        }
        if state.targets.len() >= MAX_TARGETS {
            return Err(WatchError::Full);
        }
        let answer = self.kind.answer(&state.index, &target);
        let (tx, rx) = watch::channel(Arc::new(Versioned {
            version: state.version,
            since: Instant::now(),
            answer,
        }));
        state.targets.insert(target, tx);
        self.metrics.destinations.set(state.targets.len() as i64);
        Ok(rx)
    }

    /// A stream of updates for `target`: its whole answer first, then its changes, until the
    /// receiver goes away or `shutdown`.
    pub fn watch(
        self: &Arc<Self>,
        target: K::Target,
        shutdown: CancellationToken,
    ) -> Result<UpdateStream<K::Update>, WatchError> {
        if !self.synced.load(Ordering::Acquire) {
            return Err(WatchError::NotSynced);
        }
        let rx = self.subscribe(target)?;
        let subscriber = Subscriber::new(self.clone(), rx, shutdown);
        Ok(Box::pin(futures_util::stream::unfold(
            subscriber,
            |mut s| async move {
                let update = s.next().await?;
                Some((Ok(update), s))
            },
        )))
    }

    /// Takes a new snapshot: every watched target whose answer changed is told, once.
    /// Targets nobody watches any more are forgotten.
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let since = Instant::now();
        let _one = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.lock().snapshot.clone();
        // Comparing and indexing happen outside the lock; only the lookups hold it.
        let Some(changes) = self.kind.changes(&old, &snapshot) else {
            let mut state = self.lock();
            state.targets.retain(|_, tx| tx.receiver_count() > 0);
            self.metrics.destinations.set(state.targets.len() as i64);
            debug!(version = state.version, "config applied: no answer changes");
            return;
        };
        let services = snapshot.services.len();
        let index = Arc::new(self.kind.index(snapshot.clone()));
        let mut state = self.lock();
        state.version += 1;
        let version = state.version;
        // The previous index and snapshot are freed after the pushes and outside the lock
        // (profiled: dropping a large snapshot is a tenth of the apply).
        let previous = std::mem::replace(&mut state.index, index.clone());
        let previous_snapshot = std::mem::replace(&mut state.snapshot, snapshot);
        let mut looked_up = 0usize;
        state.targets.retain(|target, tx| {
            if tx.receiver_count() == 0 {
                return false;
            }
            if !self.kind.touched(&changes, &previous, &index, target) {
                return true;
            }
            looked_up += 1;
            let answer = self.kind.answer(&index, target);
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
        drop(previous_snapshot);
        debug!(version, services, targets, looked_up, "config applied");
    }

    /// Applies every snapshot `source` publishes, on `work`, until it closes or `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        mut source: watch::Receiver<Arc<Snapshot>>,
        work: ConfigThread,
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
            if work.run(move || hub.apply(snapshot)).await.is_err() {
                tracing::error!("applying a config snapshot panicked; keeping the previous one");
                continue;
            }
            if !self.synced.swap(true, Ordering::AcqRel) {
                tracing::info!("config source in sync; serving discovery");
            }
        }
    }
}

/// One proxy's subscription to one target.
pub(crate) struct Subscriber<K: Answers> {
    hub: Arc<Hub<K>>,
    rx: watch::Receiver<Current<K>>,
    /// What this proxy holds: the last answer sent.
    sent: Option<Current<K>>,
    shutdown: CancellationToken,
}

impl<K: Answers> Drop for Subscriber<K> {
    fn drop(&mut self) {
        self.hub.metrics.subscribers.dec();
    }
}

impl<K: Answers> Subscriber<K> {
    pub(crate) fn new(
        hub: Arc<Hub<K>>,
        rx: watch::Receiver<Current<K>>,
        shutdown: CancellationToken,
    ) -> Self {
        hub.metrics.subscribers.inc();
        Self {
            hub,
            rx,
            sent: None,
            shutdown,
        }
    }

    /// The next update to send: the whole answer first, then one per change seen (several
    /// changes since the last read coalesce into one); `None` at shutdown or when the hub
    /// dropped the target.
    pub(crate) async fn next(&mut self) -> Option<K::Update> {
        loop {
            if self.sent.is_some() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    r = self.rx.changed() => r.ok()?,
                }
            }
            let current = self.rx.borrow_and_update().clone();
            let kind = &self.hub.kind;
            let update = match &self.sent {
                None => Some(kind.whole(&current.answer, current.version)),
                Some(sent) => kind.since(&current.answer, &sent.answer, current.version),
            };
            self.sent = Some(current.clone());
            // A change and its reversal, coalesced, are nothing to send.
            let Some(update) = update else { continue };
            let metrics = &self.hub.metrics;
            metrics.updates.with_label_values(&[K::kind(&update)]).inc();
            metrics
                .push_latency
                .observe(current.since.elapsed().as_secs_f64());
            return Some(update);
        }
    }

    #[cfg(test)]
    pub(crate) fn cancel(&self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests;
