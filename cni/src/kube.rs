//! Kubernetes mode: the pod's annotations and containers, from the API server named by the
//! plugin's kubeconfig. The runtime gives us the pod's namespace and name in `CNI_ARGS`.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};

/// How long the whole lookup may take. The runtime retries a failed ADD, and a pod sandbox that
/// waits on a slow API server holds up the node.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the plugin needs to know about a pod.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    pub annotations: BTreeMap<String, String>,
    pub containers: Vec<String>,
}

/// Why the pod could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build a Kubernetes client from {path}: {source}")]
    Client { path: String, source: kube::Error },
    #[error("pod {namespace}/{name} does not exist")]
    NotFound { namespace: String, name: String },
    #[error("cannot get pod {namespace}/{name} from the API server: {source}")]
    Get {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("the API server did not answer for pod {namespace}/{name} within {timeout:?}")]
    Timeout {
        namespace: String,
        name: String,
        timeout: Duration,
    },
}

impl KubeError {
    /// Whether trying again later may help (the API server is slow or away), as opposed to a
    /// config error that will fail again.
    pub fn is_transient(&self) -> bool {
        match self {
            KubeError::Timeout { .. } => true,
            // The API server answered: a 4xx (403: RBAC) fails again; 429 and 5xx may not.
            KubeError::Get {
                source: kube::Error::Api(status),
                ..
            } => status.code == 429 || status.code >= 500,
            // No answer at all (connection refused, TLS, ...).
            KubeError::Get { .. } => true,
            _ => false,
        }
    }
}

/// Looks the pod up, within [`LOOKUP_TIMEOUT`], on a runtime of its own that is gone when it
/// returns (so the caller's thread can enter the pod's namespace afterwards).
pub fn pod_info(kubeconfig: &Path, namespace: &str, name: &str) -> Result<PodInfo, KubeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KubeError::Client {
            path: kubeconfig.display().to_string(),
            source: kube::Error::Service(Box::new(e)),
        })?;
    let timeout = LOOKUP_TIMEOUT;
    runtime.block_on(async {
        match tokio::time::timeout(timeout, fetch(kubeconfig, namespace, name)).await {
            Ok(r) => r,
            Err(_) => Err(KubeError::Timeout {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                timeout,
            }),
        }
    })
}

async fn fetch(kubeconfig: &Path, namespace: &str, name: &str) -> Result<PodInfo, KubeError> {
    let path = kubeconfig.display().to_string();
    let file = Kubeconfig::read_from(kubeconfig).map_err(|source| KubeError::Kubeconfig {
        path: path.clone(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    let client = Client::try_from(config).map_err(|source| KubeError::Client { path, source })?;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = match pods.get_opt(name).await {
        Ok(Some(pod)) => pod,
        Ok(None) => {
            return Err(KubeError::NotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        Err(source) => {
            return Err(KubeError::Get {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })
        }
    };
    let containers = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| c.name.clone())
        .collect();
    Ok(PodInfo {
        annotations: pod.metadata.annotations.unwrap_or_default(),
        containers,
    })
}
