//! The Kubernetes client every cluster-facing command uses: the kubeconfig given, else
//! `$KUBECONFIG`, `~/.kube/config` or the in-cluster config, as kubectl finds it, with a bound
//! on every call.

use std::{path::Path, time::Duration};

use anyhow::Context;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

/// A client for `kubeconfig` (or the usual places), whose connects and reads are bounded by
/// `timeout`.
pub(crate) async fn client(kubeconfig: Option<&Path>, timeout: Duration) -> anyhow::Result<Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("read the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("use the kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("find a kubeconfig ($KUBECONFIG, ~/.kube/config) or in-cluster config")?,
    };
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    Client::try_from(config).context("make a Kubernetes client")
}
