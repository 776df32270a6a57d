//! The YAML the control plane reads in local mode for a [`Folder`]: one file, written whole.
//!
//! What it holds: the folder's Namespaces and ServiceAccounts; every pod with its address
//! (`status.podIP`, `status.podIPs`, phase `Running`) and, when meshed, what the pod contract
//! says a meshed pod carries (the `weft.dev/injected` annotation and a `weft-proxy` container
//! with its `weft-inbound` port, [`weft_pod::decide`]); every Service with its cluster IP;
//! every EndpointSlice, the folder's and the derived ones; and the passed-through kinds as read.
//! Deployments are not written: the control plane reads their pods.
//!
//! One file, renamed into place, so the control plane (which polls the folder) reads either
//! the old set or the new one, never half of each.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodIP, PodStatus, Service};
use serde::Serialize;
use weft_pod::{annotations, ids};

use super::{Folder, LabPod, LabService};
use crate::{redirect::INBOUND_PORT, spec::INJECTED_VERSION};

/// The file [`write_for_control_plane`] writes in its folder.
pub const CONTROL_PLANE_FILE: &str = "weft-lab.yaml";

/// Why the control plane's file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {what} as YAML: {source}")]
    Yaml {
        what: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("writing the control plane's config: {0}")]
    Write(#[source] crate::Error),
}

/// The control plane's YAML for `folder`.
pub fn render_for_control_plane(folder: &Folder) -> Result<String, WriteError> {
    let mut y = String::from(
        "# Written by weft-lab: the lab's folder as the control plane reads it (pods with their \
         addresses, Services with their cluster IPs, EndpointSlices). Edit the folder, not this.\n",
    );
    for (name, ns) in &folder.namespaces {
        push(&mut y, &format!("Namespace {name}"), &ns.object)?;
    }
    for ((ns, name), sa) in &folder.service_accounts {
        push(&mut y, &format!("ServiceAccount {ns}/{name}"), &sa.object)?;
    }
    for ((ns, name), pod) in &folder.pods {
        push(&mut y, &format!("pod {ns}/{name}"), &pod.as_injected())?;
    }
    for ((ns, name), svc) in &folder.services {
        push(
            &mut y,
            &format!("Service {ns}/{name}"),
            &service_for_control_plane(svc),
        )?;
    }
    for ((ns, name), slice) in &folder.endpoint_slices {
        push(&mut y, &format!("EndpointSlice {ns}/{name}"), &slice.object)?;
    }
    for doc in &folder.passed {
        let what = format!(
            "the document {} of {}",
            doc.origin.document,
            doc.origin.file.display()
        );
        push(&mut y, &what, &doc.object)?;
    }
    Ok(y)
}

/// Writes the control plane's YAML for `folder` to `out_dir`/[`CONTROL_PLANE_FILE`]
/// atomically (a temp file that the control plane does not read, renamed over it), and
/// returns its path. `out_dir` should be the lab's own: the control plane reads every YAML
/// file there.
pub fn write_for_control_plane(folder: &Folder, out_dir: &Path) -> Result<PathBuf, WriteError> {
    let text = render_for_control_plane(folder)?;
    let path = out_dir.join(CONTROL_PLANE_FILE);
    crate::pki::write(&path, &text, 0o644).map_err(WriteError::Write)?;
    Ok(path)
}

fn push(y: &mut String, what: &str, object: &impl Serialize) -> Result<(), WriteError> {
    let text = serde_yaml::to_string(object).map_err(|source| WriteError::Yaml {
        what: what.to_string(),
        source,
    })?;
    y.push_str("---\n");
    y.push_str(&text);
    Ok(())
}

impl LabPod {
    /// The pod as the injector and the kubelet would leave it, what the control plane reads:
    /// its address in `status` and, when meshed, the `weft.dev/injected` annotation and the
    /// lab's `weft-proxy` container (in place of any the folder gave it). Its annotations are
    /// also what `weft-cni` must be given, so that it decides as the control plane does.
    pub fn as_injected(&self) -> Pod {
        let ip = self.ip.to_string();
        let mut out = Pod {
            metadata: self.object.metadata.clone(),
            spec: self.object.spec.clone(),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.clone()),
                pod_ips: Some(vec![PodIP { ip }]),
                ..PodStatus::default()
            }),
        };
        if self.is_meshed() {
            out.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .entry(annotations::INJECTED.into())
                .or_insert_with(|| INJECTED_VERSION.into());
            // The lab's proxy, on the lab's inbound port, whatever proxy container the folder had.
            let spec = out.spec.get_or_insert_with(Default::default);
            spec.containers.retain(|c| c.name != ids::PROXY_CONTAINER);
            if let Some(init) = spec.init_containers.as_mut() {
                init.retain(|c| c.name != ids::PROXY_CONTAINER);
            }
            spec.containers.push(Container {
                name: ids::PROXY_CONTAINER.into(),
                image: Some("weft-proxy".into()),
                ports: Some(vec![ContainerPort {
                    name: Some(ids::INBOUND_PORT_NAME.into()),
                    container_port: i32::from(INBOUND_PORT),
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            });
        }
        out
    }
}

/// The Service with the cluster IP in force.
fn service_for_control_plane(svc: &LabService) -> Service {
    let mut out = svc.object.clone();
    if let (Some(ip), Some(spec)) = (svc.cluster_ip, out.spec.as_mut()) {
        spec.cluster_ip = Some(ip.to_string());
        spec.cluster_ips = Some(vec![ip.to_string()]);
    }
    out
}

/// The `/etc/hosts` a pod of `namespace` sees under `weftctl lab exec`, as cluster DNS would
/// answer it: each Service with a cluster IP as `name.ns.svc.cluster.local`, `name.ns.svc` and
/// `name.ns`, and by its bare `name` from its own namespace (what DNS search domains give in a
/// cluster). Headless Services have no line: their names would stand for pods.
pub fn hosts_file(folder: &Folder, namespace: &str) -> String {
    let mut out = String::from(
        "# Written by weftctl lab: the folder's Services, as cluster DNS names them\n\
         127.0.0.1 localhost\n::1 localhost\n",
    );
    for service in folder.services.values() {
        let Some(ip) = service.cluster_ip else {
            continue;
        };
        let (name, ns) = (service.name(), service.namespace());
        out.push_str(&format!(
            "{ip} {name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}"
        ));
        if ns == namespace {
            out.push_str(&format!(" {name}"));
        }
        out.push('\n');
    }
    out
}
