//! The cluster the control plane is shown: `services` Services in namespace `bench`, each with
//! one EndpointSlice of `endpoints` ready endpoints and a meshed Pod behind every endpoint, as
//! the local source's YAML folder. Pure text generation; [`Cluster::write`] and
//! [`Cluster::publish`] are the only I/O.
//!
//! Addresses are data only, never dialled, and all from 198.18.0.0/15 (RFC 2544's benchmarking
//! range): cluster IPs from 198.19.0.0/16, pod IPs from 198.18.0.0/16.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

use anyhow::Context;

/// Most Services: one cluster IP each from 198.19.0.0/16, skipping .0.0 and the last.
pub const MAX_SERVICES: usize = 65_000;
/// Most pods: one IP each from 198.18.0.0/16.
pub const MAX_PODS: usize = 65_000;
/// The local source's caps: documents in the folder (`control-plane/config/src/yaml.rs`), bytes a
/// file (`control-plane/src/local.rs`).
pub const MAX_DOCUMENTS: usize = 100_000;
pub const MAX_FILE_BYTES: usize = 8 << 20;
/// The Services' port, as proxies ask for it.
pub const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
const NAMESPACE: &str = "bench";
/// The file every change rewrites (Services and EndpointSlices); Pods never change.
const SERVICES_FILE: &str = "services.yaml";
const PODS_FILE: &str = "pods.yaml";

/// The generated cluster and which endpoint 0s are ready now.
#[derive(Debug, Clone)]
pub struct Cluster {
    services: usize,
    endpoints: usize,
    /// Per Service: whether its endpoint 0 is ready (a change flips it).
    first_ready: Vec<bool>,
}

impl Cluster {
    /// Every endpoint ready. Fails, naming the limit, when the sizes do not fit the address
    /// ranges or the local source's caps.
    pub fn new(services: usize, endpoints: usize) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            (1..=MAX_SERVICES).contains(&services),
            "--services {services}: expected 1 to {MAX_SERVICES} (one cluster IP each from 198.19.0.0/16)"
        );
        anyhow::ensure!(
            endpoints >= 1 && services * endpoints <= MAX_PODS,
            "--endpoints {endpoints}: expected at least 1, and at most {MAX_PODS} pods in all \
             (one IP each from 198.18.0.0/16); {services} Services x {endpoints} is {}",
            services * endpoints
        );
        let documents = services * (2 + endpoints);
        anyhow::ensure!(
            documents <= MAX_DOCUMENTS,
            "{services} Services with {endpoints} endpoints make {documents} YAML documents; \
             the control plane's local source reads at most {MAX_DOCUMENTS}"
        );
        Ok(Cluster {
            services,
            endpoints,
            first_ready: vec![true; services],
        })
    }

    /// Service `i`'s cluster IP: 198.19.0.1, 198.19.0.2, ...
    pub fn cluster_ip(i: usize) -> Ipv4Addr {
        offset(Ipv4Addr::new(198, 19, 0, 0), i + 1)
    }

    /// The IP of service `i`'s endpoint `e`'s pod: 198.18.0.1, 198.18.0.2, ...
    pub fn pod_ip(&self, i: usize, e: usize) -> Ipv4Addr {
        offset(Ipv4Addr::new(198, 18, 0, 0), i * self.endpoints + e + 1)
    }

    /// What a proxy watches for service `i`: its cluster IP and port, as a redirected
    /// connection's original destination would be.
    pub fn target(i: usize) -> String {
        format!("{}:{SERVICE_PORT}", Cluster::cluster_ip(i))
    }

    /// Flips whether service `i`'s endpoint 0 is ready: its subscribers get a delta removing
    /// or adding that one endpoint.
    pub fn flip(&mut self, i: usize) {
        self.first_ready[i] = !self.first_ready[i];
    }

    /// Flips every Service's endpoint 0.
    pub fn flip_all(&mut self) {
        self.first_ready.iter_mut().for_each(|r| *r = !*r);
    }

    /// How many endpoints service `i` has ready now.
    pub fn ready(&self, i: usize) -> usize {
        self.endpoints - usize::from(!self.first_ready[i])
    }

    /// Writes both files into `dir` (Pods once; the Services file as [`Cluster::publish`]).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_checked(&dir.join(PODS_FILE), &self.pods_yaml())?;
        self.publish(dir)
    }

    /// Replaces the Services file atomically: written to a temporary name the control plane
    /// does not read (`*.tmp`), then renamed over, so a poll sees the old folder or the new.
    pub fn publish(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(SERVICES_FILE);
        let tmp = dir.join(format!("{SERVICES_FILE}.tmp"));
        write_checked(&tmp, &self.services_yaml())?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} over {}", tmp.display(), path.display()))
    }

    fn services_yaml(&self) -> String {
        let mut out = String::new();
        for i in 0..self.services {
            let name = name(i);
            let _ = write!(
                out,
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
                 spec: {{clusterIP: {}, ports: [{{name: http, port: {SERVICE_PORT}, targetPort: {TARGET_PORT}}}]}}\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {name}-1, namespace: {NAMESPACE}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: {TARGET_PORT}}}]\nendpoints:\n",
                Cluster::cluster_ip(i)
            );
            for e in 0..self.endpoints {
                let ready = e != 0 || self.first_ready[i];
                let _ = write!(
                    out,
                    "- addresses: [{}]\n  conditions: {{ready: {ready}}}\n  \
                     targetRef: {{kind: Pod, name: {name}-{e}, namespace: {NAMESPACE}}}\n",
                    self.pod_ip(i, e)
                );
            }
            out.push_str("---\n");
        }
        out
    }

    fn pods_yaml(&self) -> String {
        let mut out = String::new();
        for i in 0..self.services {
            let name = name(i);
            for e in 0..self.endpoints {
                let _ = write!(
                    out,
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-{e}, namespace: {NAMESPACE}}}\n\
                     spec:\n  serviceAccountName: {name}\n  containers:\n  - {{name: app, image: app}}\n  \
                     - {{name: weft-proxy, image: weft-proxy}}\nstatus: {{podIP: {}}}\n---\n",
                    self.pod_ip(i, e)
                );
            }
        }
        out
    }
}

/// The identity the control plane must give service `i`'s endpoints.
pub fn identity(i: usize) -> String {
    format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/{}", name(i))
}

fn name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn offset(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    // Callers keep `n` under 65,536: the sizes are checked in `Cluster::new`.
    Ipv4Addr::from(u32::from(base) + n as u32)
}

fn write_checked(path: &Path, text: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        text.len() <= MAX_FILE_BYTES,
        "{} would be {} bytes; the control plane's local source reads at most {MAX_FILE_BYTES} a file",
        path.display(),
        text.len()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_benchmark_range(ip: Ipv4Addr) -> bool {
        ip.octets()[0] == 198 && (ip.octets()[1] & 0xfe) == 18
    }

    #[test]
    fn every_address_is_in_198_18_0_0_slash_15() {
        for i in [0, 1, 254, 255, 256, MAX_SERVICES - 1] {
            let ip = Cluster::cluster_ip(i);
            assert!(in_benchmark_range(ip) && ip.octets()[1] == 19, "{ip}");
        }
        // The most pods the caps allow.
        let c = Cluster::new(MAX_DOCUMENTS / 4, 2).expect("largest");
        for (i, e) in [(0, 0), (127, 1), (MAX_DOCUMENTS / 4 - 1, 1)] {
            let pod = c.pod_ip(i, e);
            assert!(in_benchmark_range(pod) && pod.octets()[1] == 18, "{pod}");
        }
        assert_eq!(Cluster::cluster_ip(0), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(
            Cluster::cluster_ip(MAX_SERVICES - 1),
            Ipv4Addr::new(198, 19, 253, 232)
        );
        assert_eq!(Cluster::target(0), "198.19.0.1:80");
    }

    #[test]
    fn sizes_past_the_ranges_or_caps_are_refused() {
        assert!(Cluster::new(0, 3).is_err());
        assert!(Cluster::new(MAX_SERVICES + 1, 1).is_err());
        assert!(Cluster::new(30_000, 3).is_err());
        assert!(Cluster::new(1000, 0).is_err());
        assert!(Cluster::new(1000, 3).is_ok());
    }

    #[test]
    fn a_flip_makes_endpoint_0_unready_then_ready() {
        let mut c = Cluster::new(2, 3).expect("cluster");
        assert!(!c.services_yaml().contains("ready: false"));
        c.flip(1);
        assert_eq!((c.ready(0), c.ready(1)), (3, 2));
        let yaml = c.services_yaml();
        assert_eq!(yaml.matches("ready: false").count(), 1);
        assert!(yaml.contains("- addresses: [198.18.0.4]\n  conditions: {ready: false}"));
        c.flip_all();
        assert_eq!((c.ready(0), c.ready(1)), (2, 3));
        assert_eq!(c.pods_yaml().matches("name: weft-proxy").count(), 6);
    }

    #[test]
    fn publish_replaces_the_services_file_and_leaves_no_yaml_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut c = Cluster::new(3, 2).expect("cluster");
        c.write(dir).expect("write");
        c.flip(0);
        c.publish(dir).expect("publish");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["pods.yaml", "services.yaml"]);
        let text = std::fs::read_to_string(dir.join("services.yaml")).expect("read");
        assert_eq!(text.matches("ready: false").count(), 1);
    }
}
