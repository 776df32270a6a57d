//! The JSON Patch (RFC 6902) that meshes a pod: the containers, the volume and the annotations
//! the injector adds. Every operation is an `add` that creates what is missing (an array, a map)
//! or appends to what is there; a user's array is never replaced, and map keys are escaped
//! (`weft.dev/injected` is `weft.dev~1injected` in a path).

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
        Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
        ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection,
        Volume, VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};
use serde_json::Value;
use weft_pod::{
    annotations as a, ids,
    settings::{proxy_settings, ProxySettings, SettingError, ENV_LOG},
};

/// The annotation `kubectl` reads to pick a pod's container when none is named: the app's, so
/// that `kubectl logs` and `kubectl exec` reach the app and not the proxy.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The audience of the service-account token a proxy proves its identity with.
pub const TOKEN_AUDIENCE: &str = "identity.weft.dev";

/// The projected volume holding that token, and where the proxy finds it.
pub const TOKEN_VOLUME: &str = "weft-identity-token";
const TOKEN_DIR: &str = "/var/run/secrets/weft.dev/identity";
const TOKEN_FILE: &str = "token";

/// Where the proxy's image keeps its program (the images' contract: `/usr/local/bin/<name>`),
/// for the classic sidecar's `postStart` hook when no command is configured.
pub const PROXY_BINARY: &str = "/usr/local/bin/weft-proxy";

/// The proxy's variable holding the trust anchors themselves (PEM), as the injector gives them:
/// a ConfigMap cannot be mounted across namespaces, so the anchors travel in the pod's spec, as
/// Linkerd's do; a pod picks up new anchors when it is recreated.
pub const ENV_TRUST_ANCHORS_PEM: &str = "WEFT_TRUST_ANCHORS_PEM";

/// How pods are injected: the chart's values, as the injector reads them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Weft's version, the value of `weft.dev/injected`.
    pub version: String,
    /// The proxy's image.
    pub proxy_image: String,
    /// The init container's image (`weft-init`).
    pub init_image: String,
    /// `imagePullPolicy` of both; the cluster's default when `None`.
    pub image_pull_policy: Option<String>,
    /// The proxy's and the init container's `command`, for images without an entrypoint
    /// (the k8s tier's one image of every binary); the image's own when `None`.
    pub proxy_command: Option<Vec<String>>,
    pub init_command: Option<Vec<String>>,
    /// The control plane's gRPC address, `host:port`.
    pub control_plane: String,
    /// The SPIFFE ID the control plane presents; `None` leaves the proxy's default
    /// (`spiffe://<trust domain>/ns/weft/sa/weft-control-plane`), wrong when Weft is installed
    /// in another namespace.
    pub control_plane_identity: Option<String>,
    /// The trust domain; `None` leaves the proxy's default, `cluster.local`.
    pub trust_domain: Option<String>,
    /// The trust anchors (PEM).
    pub trust_anchors_pem: String,
    /// The CNI plugin redirects pods' traffic: no init container, nothing privileged.
    pub cni: bool,
    /// Nodes run native sidecars (Kubernetes 1.29 and later): the proxy is an init container
    /// with `restartPolicy: Always`; otherwise it is the first of the pod's containers.
    pub native_sidecars: bool,
    /// The proxy's log filter unless the pod's annotation says otherwise.
    pub log_level: String,
    /// The proxy's resources unless the pod's annotations say otherwise.
    pub proxy_cpu_request: String,
    pub proxy_memory_request: String,
    pub proxy_cpu_limit: Option<String>,
    pub proxy_memory_limit: Option<String>,
    /// Where proxies send spans (`WEFT_TRACE_COLLECTOR`, an OTLP/gRPC `host:port`), and the
    /// share of requests they sample when a trace starts with them; no tracing when `None`.
    pub trace_collector: Option<String>,
    pub trace_sampling: Option<String>,
}

impl Config {
    /// The chart's defaults around what must be given: the images, the control plane's
    /// address and the trust anchors. Version: this crate's; native sidecars, no CNI plugin,
    /// log `info`, requests of 10m CPU and 20Mi memory, no limits, the images' own commands.
    pub fn new(
        proxy_image: impl Into<String>,
        init_image: impl Into<String>,
        control_plane: impl Into<String>,
        trust_anchors_pem: impl Into<String>,
    ) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").into(),
            proxy_image: proxy_image.into(),
            init_image: init_image.into(),
            image_pull_policy: None,
            proxy_command: None,
            init_command: None,
            control_plane: control_plane.into(),
            control_plane_identity: None,
            trust_domain: None,
            trust_anchors_pem: trust_anchors_pem.into(),
            cni: false,
            native_sidecars: true,
            log_level: "info".into(),
            proxy_cpu_request: "10m".into(),
            proxy_memory_request: "20Mi".into(),
            proxy_cpu_limit: None,
            proxy_memory_limit: None,
            trace_collector: None,
            trace_sampling: None,
        }
    }
}

/// The patch that meshes `pod` (whose namespace has `namespace_annotations`), or the pod
/// annotation that cannot be honoured.
pub fn patch(
    pod: &Pod,
    namespace_annotations: &BTreeMap<String, String>,
    config: &Config,
) -> Result<Patch, SettingError> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let settings = proxy_settings(annotations, namespace_annotations)?;
    let proxy = proxy_container(&settings, config, crate::workload::of(pod).as_ref());
    let init = (!config.cni).then(|| init_container(annotations, config));
    let spec = pod.spec.as_ref();

    let mut ops = Vec::new();
    // Init containers: weft-init first (the rules in place before anything runs), then the
    // proxy as a native sidecar, so that the user's own init containers have a working mesh.
    let mut front: Vec<Value> = init.iter().map(to_value).collect();
    if config.native_sidecars {
        front.push(to_value(&proxy));
    }
    let has_inits = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| !c.is_empty());
    if has_inits {
        for c in front.into_iter().rev() {
            ops.push(add(&["spec", "initContainers", "0"], c));
        }
    } else if !front.is_empty() {
        ops.push(add(&["spec", "initContainers"], Value::Array(front)));
    }
    if !config.native_sidecars {
        // The first container: the kubelet starts containers in order.
        ops.push(add(&["spec", "containers", "0"], to_value(&proxy)));
    }
    let volume = to_value(&token_volume());
    if spec.and_then(|s| s.volumes.as_ref()).is_some() {
        ops.push(add(&["spec", "volumes", "-"], volume));
    } else {
        ops.push(add(&["spec", "volumes"], Value::Array(vec![volume])));
    }

    // Annotations: injected, and the app as the default container.
    let mut extra = vec![(a::INJECTED, config.version.clone())];
    let app = spec
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone());
    if let (Some(app), false) = (app, annotations.contains_key(DEFAULT_CONTAINER)) {
        extra.push((DEFAULT_CONTAINER, app));
    }
    if pod.metadata.annotations.is_some() {
        for (key, value) in extra {
            ops.push(add(&["metadata", "annotations", key], Value::String(value)));
        }
    } else {
        let map = extra
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        ops.push(add(&["metadata", "annotations"], Value::Object(map)));
    }
    Ok(Patch(ops))
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // The k8s-openapi types serialize without fail: plain structs of strings and numbers.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The proxy's container.
fn proxy_container(
    settings: &ProxySettings,
    config: &Config,
    workload: Option<&crate::workload::Workload>,
) -> Container {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let value = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..Default::default()
    };
    let mut env = vec![
        value("WEFT_CONTROL_PLANE", config.control_plane.clone()),
        value(ENV_TRUST_ANCHORS_PEM, config.trust_anchors_pem.clone()),
        value(
            "WEFT_IDENTITY_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ),
        EnvVar {
            name: "WEFT_NAMESPACE".into(),
            value_from: Some(field("metadata.namespace")),
            ..Default::default()
        },
        EnvVar {
            name: "WEFT_SERVICE_ACCOUNT".into(),
            value_from: Some(field("spec.serviceAccountName")),
            ..Default::default()
        },
        value("WEFT_REDIRECT_CHECK", "5s".into()),
    ];
    if let Some(id) = &config.control_plane_identity {
        env.push(value("WEFT_CONTROL_PLANE_IDENTITY", id.clone()));
    }
    if let Some(domain) = &config.trust_domain {
        env.push(value("WEFT_TRUST_DOMAIN", domain.clone()));
    }
    if let Some(w) = workload {
        env.push(value("WEFT_WORKLOAD", w.to_env()));
    }
    if let Some(collector) = &config.trace_collector {
        env.push(value("WEFT_TRACE_COLLECTOR", collector.clone()));
        if let Some(share) = &config.trace_sampling {
            env.push(value("WEFT_TRACE_SAMPLING", share.clone()));
        }
    }
    if !settings.env.iter().any(|(k, _)| *k == ENV_LOG) {
        env.push(value(ENV_LOG, config.log_level.clone()));
    }
    env.extend(settings.env.iter().map(|(k, v)| value(k, v.clone())));

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(ids::ADMIN_PORT)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let mut limits = BTreeMap::new();
    let cpu_limit = settings
        .cpu_limit_millis
        .map(|m| format!("{m}m"))
        .or_else(|| config.proxy_cpu_limit.clone());
    let memory_limit = settings
        .memory_limit_bytes
        .map(|b| b.to_string())
        .or_else(|| config.proxy_memory_limit.clone());
    if let Some(cpu) = cpu_limit {
        limits.insert("cpu".to_string(), Quantity(cpu));
    }
    if let Some(memory) = memory_limit {
        limits.insert("memory".to_string(), Quantity(memory));
    }
    let requests = BTreeMap::from([
        (
            "cpu".to_string(),
            at_most(&config.proxy_cpu_request, limits.get("cpu"), 9),
        ),
        (
            "memory".to_string(),
            at_most(&config.proxy_memory_request, limits.get("memory"), 3),
        ),
    ]);
    Container {
        name: ids::PROXY_CONTAINER.into(),
        image: Some(config.proxy_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: config.proxy_command.clone(),
        // A native sidecar: started before the app, stopped after it, and it does not keep a
        // Job's pod from completing.
        restart_policy: config.native_sidecars.then(|| "Always".into()),
        ports: Some(vec![
            ContainerPort {
                name: Some(ids::INBOUND_PORT_NAME.into()),
                container_port: i32::from(ids::INBOUND_PORT),
                ..Default::default()
            },
            ContainerPort {
                name: Some("weft-admin".into()),
                container_port: i32::from(ids::ADMIN_PORT),
                ..Default::default()
            },
        ]),
        env: Some(env),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        // The app starts once the proxy is ready. Native sidecars: the kubelet waits for the
        // startup probe before the next container. Classic: the proxy is the first container
        // and the kubelet starts the next one only when its postStart hook returns, which
        // `weft-proxy await-ready` does once /ready answers 200.
        startup_probe: Some(probe("/ready", 1, 120)),
        lifecycle: (!config.native_sidecars).then(|| {
            let program = config
                .proxy_command
                .as_ref()
                .and_then(|c| c.first().cloned())
                .unwrap_or_else(|| PROXY_BINARY.into());
            Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec![program, "await-ready".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }),
        readiness_probe: Some(probe("/ready", 5, 3)),
        liveness_probe: Some(probe("/live", 10, 3)),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..Default::default()
        }),
        security_context: Some(locked_down(ids::PROXY_UID, None)),
        ..Default::default()
    }
}

/// The proxy's request, or its limit where that is lower: the API server refuses a container
/// whose request exceeds its limit (`must be less than or equal to cpu limit`), and the request
/// is the injector's default where the limit is what the pod's annotation (or the chart) asked
/// for; Kubernetes, too, takes the limit as the request when none is given. The two are
/// compared in units of 10^-`scale`: nanocores for CPU (the API server's finest), millibytes
/// for memory. What does not parse is left for the API server to judge.
fn at_most(request: &str, limit: Option<&Quantity>, scale: i32) -> Quantity {
    let units = |q: &str| weft_pod::Quantity::parse(q.trim()).and_then(|q| q.ceil_scaled(scale));
    match limit {
        Some(limit) if matches!((units(request), units(&limit.0)), (Some(r), Some(l)) if r > l) => {
            limit.clone()
        }
        _ => Quantity(request.to_string()),
    }
}

/// The init container that installs the redirect rules, with the pod's skip lists (checked by
/// [`proxy_settings`] already).
fn init_container(annotations: &BTreeMap<String, String>, config: &Config) -> Container {
    let env = [
        (a::SKIP_INBOUND_PORTS, "WEFT_SKIP_INBOUND_PORTS"),
        (a::SKIP_OUTBOUND_PORTS, "WEFT_SKIP_OUTBOUND_PORTS"),
        (a::SKIP_OUTBOUND_CIDRS, "WEFT_SKIP_OUTBOUND_CIDRS"),
    ]
    .into_iter()
    .filter_map(|(annotation, var)| {
        annotations.get(annotation).map(|v| EnvVar {
            name: var.to_string(),
            value: Some(v.trim().to_string()),
            ..Default::default()
        })
    })
    .collect::<Vec<_>>();
    Container {
        name: ids::INIT_CONTAINER.into(),
        image: Some(config.init_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: config.init_command.clone(),
        env: (!env.is_empty()).then_some(env),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".into())),
                ("memory".to_string(), Quantity("10Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("50Mi".into())),
            ])),
            ..Default::default()
        }),
        // iptables needs root in the pod's network namespace, and these two capabilities only.
        security_context: Some(locked_down(0, Some(vec!["NET_ADMIN", "NET_RAW"]))),
        ..Default::default()
    }
}

/// A container's security context: every capability dropped but `add`, a read-only root file
/// system, no privilege escalation, the runtime's seccomp profile.
fn locked_down(uid: u32, add: Option<Vec<&str>>) -> SecurityContext {
    let uid = i64::from(uid);
    SecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        run_as_non_root: Some(uid != 0),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: add.map(|caps| caps.into_iter().map(String::from).collect()),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The projected service-account token, for the control plane's identity service only.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(24 * 3600),
                    path: TOKEN_FILE.into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::core::v1::PodSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta};

    use super::*;
    use crate::decide::{decide, Context, Decision, Skip};

    fn config(native: bool, cni: bool) -> Config {
        Config {
            version: "0.1.0".into(),
            image_pull_policy: Some("IfNotPresent".into()),
            cni,
            native_sidecars: native,
            ..Config::new(
                "weft/proxy:0.1.0",
                "weft/init:0.1.0",
                "weft-control-plane.weft.svc:8443",
                "-----BEGIN CERTIFICATE-----\n...\n",
            )
        }
    }

    fn pod(annotations: Option<&[(&str, &str)]>, inits: Option<Vec<&str>>) -> Pod {
        let container = |name: &str| Container {
            name: name.into(),
            image: Some("app".into()),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                annotations: annotations.map(|list| {
                    list.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container("app"), container("worker")],
                init_containers: inits.map(|names| names.into_iter().map(container).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn applied(pod: &Pod, config: &Config) -> Pod {
        let patch = patch(pod, &BTreeMap::new(), config).expect("a patch");
        let mut doc = serde_json::to_value(pod).expect("json");
        json_patch::patch(&mut doc, &patch.0).expect("the patch applies");
        serde_json::from_value(doc).expect("still a pod")
    }

    fn names(containers: Option<&Vec<Container>>) -> Vec<&str> {
        containers
            .map(|c| c.iter().map(|c| c.name.as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_plain_pod_gets_the_init_container_and_a_native_sidecar() {
        let out = applied(&pod(None, None), &config(true, false));
        let spec = out.spec.as_ref().expect("spec");
        assert_eq!(
            names(spec.init_containers.as_ref()),
            ["weft-init", "weft-proxy"]
        );
        assert_eq!(names(Some(&spec.containers)), ["app", "worker"]);
        let proxy = &spec.init_containers.as_ref().expect("inits")[1];
        assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        assert!(proxy.startup_probe.is_some());
        let sc = proxy.security_context.as_ref().expect("locked down");
        assert_eq!(sc.run_as_user, Some(2121));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let init = &spec.init_containers.as_ref().expect("inits")[0];
        let caps = init
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone());
        assert_eq!(caps, Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]));
        let annotations = out.metadata.annotations.expect("annotations");
        assert_eq!(annotations["weft.dev/injected"], "0.1.0");
        assert_eq!(annotations[DEFAULT_CONTAINER], "app");
        let volumes = spec.volumes.as_ref().expect("volumes");
        assert_eq!(volumes[0].name, TOKEN_VOLUME);
    }

    #[test]
    fn the_users_init_containers_and_annotations_are_kept_after_the_mesh() {
        let original = pod(Some(&[("team", "shop")]), Some(vec!["migrate", "seed"]));
        let out = applied(&original, &config(true, false));
        let spec = out.spec.as_ref().expect("spec");
        assert_eq!(
            names(spec.init_containers.as_ref()),
            ["weft-init", "weft-proxy", "migrate", "seed"]
        );
        let annotations = out.metadata.annotations.expect("annotations");
        assert_eq!(annotations["team"], "shop");
        assert_eq!(annotations["weft.dev/injected"], "0.1.0");
    }

    #[test]
    fn with_the_cni_plugin_nothing_is_privileged_and_without_native_sidecars_the_proxy_runs_first()
    {
        let out = applied(&pod(None, None), &config(true, true));
        let spec = out.spec.as_ref().expect("spec");
        assert_eq!(names(spec.init_containers.as_ref()), ["weft-proxy"]);
        let classic = applied(&pod(None, None), &config(false, false));
        let spec = classic.spec.as_ref().expect("spec");
        assert_eq!(names(spec.init_containers.as_ref()), ["weft-init"]);
        assert_eq!(
            names(Some(&spec.containers)),
            ["weft-proxy", "app", "worker"]
        );
        assert_eq!(spec.containers[0].restart_policy, None);
        // The app waits for the proxy: its postStart hook returns once /ready is 200.
        let hook = spec.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone());
        assert_eq!(
            hook,
            Some(vec![PROXY_BINARY.to_string(), "await-ready".to_string()])
        );
        let native = applied(&pod(None, None), &config(true, false));
        let inits = native.spec.and_then(|s| s.init_containers).expect("inits");
        assert!(inits[1].lifecycle.is_none(), "its startup probe does that");
        // The app stays the default container even with the proxy first.
        let annotations = classic.metadata.annotations.expect("annotations");
        assert_eq!(annotations[DEFAULT_CONTAINER], "app");
    }

    #[test]
    fn the_control_plane_identity_and_trust_domain_reach_the_proxy_only_when_set() {
        let env = |config: &Config| -> Vec<(String, Option<String>)> {
            let out = applied(&pod(None, None), config);
            let spec = out.spec.expect("spec");
            let proxy = spec.init_containers.expect("inits").remove(1);
            proxy
                .env
                .expect("env")
                .into_iter()
                .map(|e| (e.name, e.value))
                .collect()
        };
        let defaults = env(&config(true, false));
        assert!(defaults
            .iter()
            .all(|(k, _)| k != "WEFT_CONTROL_PLANE_IDENTITY" && k != "WEFT_TRUST_DOMAIN"));
        let elsewhere = Config {
            control_plane_identity: Some(
                "spiffe://example.org/ns/mesh/sa/weft-control-plane".into(),
            ),
            trust_domain: Some("example.org".into()),
            ..config(true, false)
        };
        let set = env(&elsewhere);
        assert!(set.contains(&(
            "WEFT_CONTROL_PLANE_IDENTITY".into(),
            Some("spiffe://example.org/ns/mesh/sa/weft-control-plane".into())
        )));
        assert!(set.contains(&("WEFT_TRUST_DOMAIN".into(), Some("example.org".into()))));
    }

    #[test]
    fn proxies_trace_only_when_a_collector_is_set() {
        let env = |c: &Config| -> Vec<(String, Option<String>)> {
            let out = applied(&pod(None, None), c);
            let spec = out.spec.expect("spec");
            let proxy = spec
                .init_containers
                .iter()
                .flatten()
                .find(|c| c.name == "weft-proxy")
                .cloned()
                .expect("the proxy");
            proxy
                .env
                .into_iter()
                .flatten()
                .map(|e| (e.name, e.value))
                .collect()
        };
        assert!(env(&config(true, false))
            .iter()
            .all(|(k, _)| !k.starts_with("WEFT_TRACE_")));
        let traced = env(&Config {
            trace_collector: Some("jaeger-collector.tracing:4317".into()),
            trace_sampling: Some("0.1".into()),
            ..config(true, false)
        });
        assert!(traced.contains(&(
            "WEFT_TRACE_COLLECTOR".into(),
            Some("jaeger-collector.tracing:4317".into())
        )));
        assert!(traced.contains(&("WEFT_TRACE_SAMPLING".into(), Some("0.1".into()))));
    }

    #[test]
    fn annotations_reach_the_proxy_and_the_init_container() {
        let original = pod(
            Some(&[
                ("weft.dev/opaque-ports", "5432"),
                ("weft.dev/proxy-log-level", "debug"),
                ("weft.dev/skip-outbound-ports", "9000-9010"),
                ("weft.dev/proxy-memory-limit", "128Mi"),
            ]),
            None,
        );
        let out = applied(&original, &config(true, false));
        let spec = out.spec.as_ref().expect("spec");
        let inits = spec.init_containers.as_ref().expect("inits");
        let env = |c: &Container, name: &str| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(env(&inits[1], "WEFT_OPAQUE_PORTS").as_deref(), Some("5432"));
        assert_eq!(env(&inits[1], "WEFT_LOG").as_deref(), Some("debug"));
        assert_eq!(
            env(&inits[0], "WEFT_SKIP_OUTBOUND_PORTS").as_deref(),
            Some("9000-9010")
        );
        let limits = inits[1]
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .expect("limits");
        assert_eq!(limits["memory"], Quantity((128u64 << 20).to_string()));
    }

    #[test]
    fn a_limit_below_the_default_request_brings_the_request_down_to_it() {
        let resources = |annotations: &[(&str, &str)], config: &Config| {
            let out = applied(&pod(Some(annotations), None), config);
            let inits = out.spec.and_then(|s| s.init_containers).expect("inits");
            let resources = inits[1].resources.clone().expect("resources");
            (
                resources.requests.expect("requests"),
                resources.limits.expect("limits"),
            )
        };
        let low = [
            ("weft.dev/proxy-cpu-limit", "5m"),
            ("weft.dev/proxy-memory-limit", "16Mi"),
        ];
        let (requests, limits) = resources(&low, &config(true, false));
        assert_eq!(requests["cpu"], Quantity("5m".into()));
        assert_eq!(limits["cpu"], Quantity("5m".into()));
        assert_eq!(requests["memory"], Quantity((16u64 << 20).to_string()));
        // Above the requests, or equal to them, the requests stay the defaults.
        let high = [
            ("weft.dev/proxy-cpu-limit", "0.01"),
            ("weft.dev/proxy-memory-limit", "1Gi"),
        ];
        let (requests, limits) = resources(&high, &config(true, false));
        assert_eq!(requests["cpu"], Quantity("10m".into()));
        assert_eq!(limits["cpu"], Quantity("10m".into()));
        assert_eq!(requests["memory"], Quantity("20Mi".into()));
        // The chart's limits are held to the same rule.
        let chart = Config {
            proxy_cpu_limit: Some("2m".into()),
            ..config(true, false)
        };
        let (requests, _) = resources(&low[1..], &chart);
        assert_eq!(requests["cpu"], Quantity("2m".into()));
    }

    #[test]
    fn an_annotation_that_cannot_be_honoured_is_refused_by_name() {
        let bad = pod(Some(&[("weft.dev/opaque-ports", "http")]), None);
        let err = patch(&bad, &BTreeMap::new(), &config(true, false)).expect_err("refused");
        assert_eq!(err.annotation, "weft.dev/opaque-ports");
    }

    #[test]
    fn an_injected_pod_is_not_injected_again() {
        let out = applied(&pod(None, None), &config(true, false));
        let labels = BTreeMap::from([("weft.dev/inject".to_string(), "enabled".to_string())]);
        let cx = Context {
            namespace: "shop",
            namespace_labels: &labels,
            weft_namespace: "weft",
            native_sidecars: true,
        };
        assert_eq!(decide(&out, &cx), Decision::Skip(Skip::AlreadyInjected));
    }
}
