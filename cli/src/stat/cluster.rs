//! `weftctl stat` on a cluster without Prometheus: the meshed pods listed with the user's
//! kubeconfig (or in-cluster config), each proxy's `/metrics` read through the API server's
//! pod proxy subresource, `GET /api/v1/namespaces/NS/pods/NAME:15190/proxy/metrics` (RBAC:
//! `get` on `pods/proxy`), as `kubectl get --raw` would.

use std::{path::Path, time::Duration};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api, Client};

use super::{
    resource::is_name,
    scrape::{observe_twice, Target, ADMIN_PORT},
    view::{Observed, PodInfo, Workload},
};

/// The most pods listed per call.
const POD_PAGE: u32 = 1000;

/// The API server path of a pod's proxy `/metrics`.
pub(crate) fn metrics_path(namespace: &str, pod: &str) -> anyhow::Result<String> {
    // Names go into a path: only what Kubernetes allows, so nothing can climb out of it.
    if !is_name(namespace) || namespace.contains('.') {
        bail!("{namespace:?} is not a namespace name");
    }
    if !is_name(pod) {
        bail!("{pod:?} is not a pod name");
    }
    Ok(format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{ADMIN_PORT}/proxy/metrics"
    ))
}

/// What stat needs of a listed pod: whether it is meshed (injected: the `weft.dev/injected`
/// annotation or a `weft-proxy` container) and running, and its workload. `None` for a pod
/// that is not running (its proxy cannot answer).
pub(crate) fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone()?;
    let name = meta.name.clone()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Running") {
        return None;
    }
    let spec = pod.spec.as_ref();
    let has_proxy = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == "weft-proxy")
    });
    let injected = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("weft.dev/injected"));
    let workload = weft_injector_core::workload::of(pod).map_or_else(
        || Workload::pod(&name),
        |w| Workload {
            kind: w.kind,
            name: w.name,
        },
    );
    Some(PodInfo {
        namespace,
        name,
        workload,
        meshed: has_proxy || injected,
    })
}

async fn client(kubeconfig: Option<&Path>, timeout: Duration) -> anyhow::Result<Client> {
    let client = crate::kubeconfig::client(kubeconfig, timeout).await;
    if kubeconfig.is_none() {
        return client.context(
            "no metrics source: give --prometheus URL or --lab NAME, or a kubeconfig \
             (--kubeconfig, $KUBECONFIG, ~/.kube/config) or in-cluster config",
        );
    }
    client
}

/// Reads the cluster's meshed pods (of `namespace`, or all) over `window`, having `announce`d
/// how many.
pub(crate) fn observe(
    kubeconfig: Option<&Path>,
    namespace: Option<&str>,
    window: Duration,
    max: usize,
    timeout: Duration,
    announce: &dyn Fn(usize),
) -> anyhow::Result<Observed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let client = runtime.block_on(client(kubeconfig, timeout))?;
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = runtime
        .block_on(async {
            tokio::time::timeout(timeout, pods.list(&ListParams::default().limit(POD_PAGE))).await
        })
        .map_err(|_| anyhow::anyhow!("list pods: no answer within {timeout:?}"))?
        .context("list pods")?;
    let infos: Vec<PodInfo> = list.items.iter().filter_map(pod_info).collect();
    let (targets, skipped) = super::scrape::meshed_targets(&infos, max);
    announce(targets.len());
    let mut read = |t: &Target| -> Result<String, String> {
        let path = metrics_path(&t.namespace, &t.pod).map_err(|e| e.to_string())?;
        let request = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            match tokio::time::timeout(timeout, client.request_text(request)).await {
                Ok(Ok(text)) => Ok(text),
                Ok(Err(e)) => Err(format!("GET {path}: {e}")),
                Err(_) => Err(format!("GET {path}: no answer within {timeout:?}")),
            }
        })
    };
    let mut obs = observe_twice(&targets, window, &mut read);
    obs.source = "kubernetes (pod proxy)".into();
    obs.pods = Some(infos);
    obs.skipped = skipped;
    Ok(obs)
}
