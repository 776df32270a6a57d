//! What kube-proxy does on a node, for the lab's pods that have no proxy of their own: a
//! connection to a Service's cluster IP and port is sent to one of its ready endpoints, picked
//! at random (iptables `statistic` rules, as kube-proxy's iptables mode writes them), in the
//! node namespace's `nat` table. Meshed pods never need it (their proxy picks the endpoint
//! before the packet leaves the pod); unmeshed pods reach Services as they would in a cluster.
//!
//! The rules live in one chain, [`CHAIN`], rewritten whole with `iptables-restore --noflush`
//! on every applied edit, so a half-written set is never in force. Bridged traffic passes the
//! node's conntrack (`bridge-nf-call-iptables`) so that replies from a pod on the same bridge
//! are translated back, as on a Kubernetes node with the bridge plugin.

use std::collections::BTreeMap;

use crate::{
    error::{Error, Result},
    folder::Folder,
    netns::Netns,
};

/// The node's chain of Service rules, jumped to from `PREROUTING`.
pub const CHAIN: &str = "WEFT-LAB-SERVICES";

/// The `iptables-restore --noflush` input that makes [`CHAIN`] hold `folder`'s Services: for
/// each TCP port of a Service with a cluster IP and ready endpoints, one `DNAT` rule per
/// endpoint, the `n`th taken with probability `1/(endpoints left)`, so each is equally likely.
pub fn rules(folder: &Folder) -> String {
    let mut out = format!("*nat\n:{CHAIN} - [0:0]\n");
    for service in folder.services.values() {
        let Some(ip) = service.cluster_ip else {
            continue;
        };
        for port in service.ports() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Ok(service_port) = u16::try_from(port.port) else {
                continue;
            };
            let endpoints = endpoints(
                folder,
                service.namespace(),
                service.name(),
                port.name.as_deref(),
            );
            let comment = format!(
                "{}/{}:{}",
                service.namespace(),
                service.name(),
                service_port
            );
            for (i, endpoint) in endpoints.iter().enumerate() {
                let left = endpoints.len() - i;
                let pick = if left > 1 {
                    format!(
                        " -m statistic --mode random --probability {:.10}",
                        1.0 / left as f64
                    )
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "-A {CHAIN} -d {ip}/32 -p tcp -m tcp --dport {service_port} \
                     -m comment --comment \"{comment}\"{pick} -j DNAT --to-destination {endpoint}\n"
                ));
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The ready endpoints (`ip:port`) of a Service's port named `port_name`, from its
/// EndpointSlices (the folder's or the derived ones), sorted.
fn endpoints(
    folder: &Folder,
    namespace: &str,
    service: &str,
    port_name: Option<&str>,
) -> Vec<String> {
    let mut out = BTreeMap::new();
    for slice in folder.endpoint_slices.values() {
        let s = &slice.object;
        let ours = s.metadata.namespace.as_deref().unwrap_or("default") == namespace
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .is_some_and(|n| n == service);
        if !ours || s.address_type != "IPv4" {
            continue;
        }
        let Some(port) = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name.unwrap_or(""))
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &s.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if ready {
                for address in &endpoint.addresses {
                    out.insert(format!("{address}:{port}"), ());
                }
            }
        }
    }
    out.into_keys().collect()
}

/// Makes the node forward Service traffic as kube-proxy would: bridged packets through its
/// conntrack, and a jump from `PREROUTING` to an empty [`CHAIN`]. Once per node.
pub fn prepare(node: &Netns) -> Result<()> {
    // Needs the br_netfilter module (`modprobe br_netfilter`); the error names the setting.
    node.run(
        "sysctl",
        &["-q", "-w", "net.bridge.bridge-nf-call-iptables=1"],
    )?;
    apply(node, &Folder::default())?;
    node.run("iptables", &["-t", "nat", "-A", "PREROUTING", "-j", CHAIN])?;
    Ok(())
}

/// Replaces [`CHAIN`]'s rules with `folder`'s Services, in one `iptables-restore`.
pub fn apply(node: &Netns, folder: &Folder) -> Result<()> {
    let out = node.output("iptables-restore", &["--noflush"], rules(folder).as_bytes())?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: format!(
            "iptables-restore --noflush (the {CHAIN} chain) in {}",
            node.name()
        ),
        status: out.status.to_string(),
        stderr: out.stderr.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::folder::{self, Addresses};

    const FOLDER: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop, labels: {app: api}}\nstatus: {podIP: 198.18.0.10}\nspec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}\n\
        ---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop, labels: {app: api}}\nstatus: {podIP: 198.18.0.11}\nspec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}\n\
        ---\napiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: shop, labels: {app: api}}\nstatus: {podIP: 198.18.0.12}\nspec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}\n\
        ---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec: {clusterIP: 198.19.0.20, selector: {app: api}, ports: [{port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]}\n\
        ---\napiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: shop}\nspec: {clusterIP: 198.19.0.21, selector: {app: none}, ports: [{port: 80}]}\n\
        ---\napiVersion: v1\nkind: Service\nmetadata: {name: headless, namespace: shop}\nspec: {clusterIP: None, selector: {app: api}, ports: [{port: 80}]}\n";

    #[test]
    fn each_ready_endpoint_of_a_tcp_port_is_equally_likely() {
        let folder = folder::build([(Path::new("a.yaml"), FOLDER)], &Addresses::default());
        assert!(folder.is_whole(), "{:#?}", folder.refused);
        let rules = rules(&folder);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines[..2], ["*nat", ":WEFT-LAB-SERVICES - [0:0]"]);
        assert_eq!(lines.last(), Some(&"COMMIT"));
        let dnat: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("-A"))
            .collect();
        assert_eq!(
            dnat.len(),
            3,
            "api's three pods on TCP 80; UDP, no endpoints and headless none:\n{rules}"
        );
        for (line, (probability, to)) in dnat.iter().zip([
            (Some("0.3333333333"), "198.18.0.10:8080"),
            (Some("0.5000000000"), "198.18.0.11:8080"),
            (None, "198.18.0.12:8080"),
        ]) {
            assert!(
                line.contains("-d 198.19.0.20/32 -p tcp -m tcp --dport 80 "),
                "{line}"
            );
            assert!(
                line.ends_with(&format!("-j DNAT --to-destination {to}")),
                "{line}"
            );
            match probability {
                Some(p) => assert!(line.contains(&format!("--probability {p}")), "{line}"),
                None => assert!(
                    !line.contains("statistic"),
                    "the last one takes the rest: {line}"
                ),
            }
        }
    }

    #[test]
    fn hosts_name_services_as_cluster_dns_does() {
        let folder = folder::build([(Path::new("a.yaml"), FOLDER)], &Addresses::default());
        let shop = folder::hosts_file(&folder, "shop");
        assert!(
            shop.contains("198.19.0.20 api.shop.svc.cluster.local api.shop.svc api.shop api\n"),
            "{shop}"
        );
        assert!(!shop.contains("headless"), "{shop}");
        let other = folder::hosts_file(&folder, "ops");
        assert!(
            other.contains("198.19.0.20 api.shop.svc.cluster.local api.shop.svc api.shop\n"),
            "{other}"
        );
    }
}
