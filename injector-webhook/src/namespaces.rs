//! Namespaces from the API server: a reflector keeps every namespace's labels and annotations
//! (a few hundred bytes each), so a review costs no API call; a namespace created a moment ago
//! and not seen yet is fetched directly.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace as KubeNamespace;
use kube::{
    runtime::{reflector, watcher, WatchStreamExt as _},
    Api, Client, ResourceExt as _,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use weft_injector_core::review::Namespace;

use crate::webhook::Namespaces;

/// The namespaces the API server knows, kept current.
pub(crate) struct KubeNamespaces {
    api: Api<KubeNamespace>,
    store: reflector::Store<KubeNamespace>,
    ready: watch::Receiver<bool>,
}

impl KubeNamespaces {
    /// Starts the reflector; it runs until `shutdown`, retrying with backoff when the API
    /// server is away.
    pub(crate) fn start(client: Client, shutdown: CancellationToken) -> Self {
        let api = Api::<KubeNamespace>::all(client);
        let (store, writer) = reflector::store();
        let (ready_tx, ready) = watch::channel(false);
        let stream = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .modify(|ns: &mut KubeNamespace| {
                // Only labels and annotations are read: the rest is not kept.
                ns.metadata.managed_fields = None;
                ns.spec = None;
                ns.status = None;
            })
            .reflect(writer)
            .applied_objects();
        let waiting = store.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut synced = std::pin::pin!(waiting.wait_until_ready());
            let mut announced = false;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    done = &mut synced, if !announced => {
                        announced = true;
                        if done.is_ok() {
                            let _ = ready_tx.send(true);
                        }
                    }
                    item = stream.next() => match item {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => warn!(error = %e, "watching namespaces; retrying"),
                        None => return,
                    },
                }
            }
        });
        Self { api, store, ready }
    }

    /// Whether the namespaces were listed once.
    pub(crate) fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }
}

fn view(ns: &KubeNamespace) -> Namespace {
    let copy = |m: &BTreeMap<String, String>| m.clone();
    Namespace {
        labels: copy(ns.labels()),
        annotations: copy(ns.annotations()),
    }
}

impl Namespaces for KubeNamespaces {
    async fn get(&self, name: &str) -> Result<Option<Namespace>, String> {
        if let Some(ns) = self.store.get(&reflector::ObjectRef::new(name)) {
            return Ok(Some(view(&ns)));
        }
        // Not seen yet (just created, or the reflector is behind): ask.
        self.api
            .get_opt(name)
            .await
            .map(|ns| ns.as_ref().map(view))
            .map_err(|e| e.to_string())
    }
}
