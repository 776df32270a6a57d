//! EndpointSlices made from Services' selectors, as the EndpointSlice controller makes them.

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::*;
use crate::folder::slices::{MANAGED_BY, MANAGED_BY_LABEL};

/// The derived slices of `namespace/service`.
fn slices_of<'a>(folder: &'a Folder, namespace: &str, service: &str) -> Vec<&'a EndpointSlice> {
    folder
        .endpoint_slices
        .iter()
        .filter(|((ns, _), s)| {
            ns == namespace
                && s.object
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    == Some(&service.to_string())
        })
        .map(|(_, s)| &s.object)
        .collect()
}

/// (port name, port) of each port of a slice.
type Ports<'a> = Vec<(Option<&'a str>, Option<i32>)>;

fn ports(slice: &EndpointSlice) -> Ports<'_> {
    slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.port))
        .collect()
}

/// The pods a slice lists, by name.
fn members(slice: &EndpointSlice) -> Vec<&str> {
    slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref()?.name.as_deref())
        .collect()
}

#[test]
fn a_service_gets_a_slice_of_the_pods_its_selector_picks() {
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            &deployment("shop", "api", 2),
            &pod("shop", "other", "  labels: {app: other}\n"),
            &pod("elsewhere", "same-label", "  labels: {app: api}\n"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop, labels: {team: a}}\n\
             spec:\n  selector: {app: api}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n\
             \x20 - {name: admin, port: 81, targetPort: 9901}\n  - {name: plain, port: 82}\n",
        ]),
    )]);
    let slices = slices_of(&folder, "shop", "api");
    assert_eq!(slices.len(), 1);
    let s = slices[0];
    let name = s.metadata.name.as_deref().unwrap_or_default();
    let suffix = name
        .strip_prefix("api-")
        .unwrap_or_else(|| panic!("{name}"));
    assert_eq!(suffix.len(), 5, "{name}");
    assert!(
        suffix.bytes().all(|b| names::ALPHABET.contains(&b)),
        "{name}"
    );
    assert_eq!(s.metadata.generate_name.as_deref(), Some("api-"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
    let labels = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(MANAGED_BY_LABEL).map(String::as_str),
        Some(MANAGED_BY)
    );
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("a"),
        "the Service's labels"
    );
    assert_eq!(s.address_type, "IPv4");
    assert_eq!(
        ports(s),
        [
            (Some("http"), Some(8080)),
            (Some("admin"), Some(9901)),
            (Some("plain"), Some(82))
        ]
    );
    let deployed: Vec<&str> = folder
        .pods
        .values()
        .filter(|p| p.deployment.is_some())
        .map(LabPod::name)
        .collect();
    assert_eq!(members(s), deployed);
    for e in &s.endpoints {
        let target = e.target_ref.as_ref().expect("targetRef");
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(target.namespace.as_deref(), Some("shop"));
        let pod = &folder.pods[&key("shop", target.name.as_deref().unwrap_or_default())];
        assert_eq!(e.addresses, [pod.ip.to_string()]);
        let c = e.conditions.as_ref().expect("conditions");
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(true), Some(true), Some(false))
        );
    }
    // Derived again from the same folder: the same name.
    let again = whole(&[(
        "a.yaml",
        &docs(&[
            &deployment("shop", "api", 2),
            &service("shop", "api", "api", "http"),
        ]),
    )]);
    assert_eq!(
        slices_of(&again, "shop", "api")[0].metadata.name.as_deref(),
        Some(name)
    );
}

#[test]
fn a_named_port_resolving_differently_splits_the_slices_as_the_controller_does() {
    let named = |name: &str, port: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: api}}}}\n\
             spec: {{containers: [{{name: app, ports: [{port}]}}]}}\n"
        )
    };
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            &named("a", "{name: http, containerPort: 8080}"),
            &named("b", "{name: http, containerPort: 9090}"),
            &named("c", "{name: web, containerPort: 8080}"),
            &named("d", "{name: http, containerPort: 8080}"),
            &service("default", "api", "api", "http"),
        ]),
    )]);
    let mut got: Vec<(Ports<'_>, Vec<&str>)> = slices_of(&folder, "default", "api")
        .into_iter()
        .map(|s| (ports(s), members(s)))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (vec![], vec!["c"]),
            (vec![(Some("http"), Some(8080))], vec!["a", "d"]),
            (vec![(Some("http"), Some(9090))], vec!["b"]),
        ]
    );
    let names: std::collections::BTreeSet<&str> = folder
        .endpoint_slices
        .keys()
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(names.len(), 3, "distinct names: {names:?}");
}

#[test]
fn which_services_get_derived_slices() {
    let own_slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                     metadata: {name: mine, labels: {kubernetes.io/service-name: own}}\n\
                     addressType: IPv4\nendpoints: [{addresses: [198.18.0.200]}]\nports: [{port: 80}]\n";
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            &pod("default", "p", "  labels: {app: api}\n"),
            &service("default", "own", "api", "80"),
            own_slice,
            &service("default", "nobody", "nothing", "80"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: headless}\n\
             spec: {clusterIP: None, selector: {app: api}, ports: [{port: 80}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec: {ports: [{port: 80}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec: {selector: {}, ports: [{port: 80}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\n\
             spec: {type: ExternalName, externalName: example.com, selector: {app: api}}\n",
        ]),
    )]);
    let own = slices_of(&folder, "default", "own");
    assert_eq!(own.len(), 1, "the folder's own slice, none derived");
    assert_eq!(own[0].metadata.name.as_deref(), Some("mine"));
    assert!(folder.endpoint_slices[&key("default", "mine")]
        .origin
        .is_some());
    let nobody = slices_of(&folder, "default", "nobody");
    assert_eq!(nobody.len(), 1, "an empty slice, as the controller makes");
    assert!(nobody[0].endpoints.is_empty() && nobody[0].ports.is_none());
    assert_eq!(members(slices_of(&folder, "default", "headless")[0]), ["p"]);
    for none in ["manual", "empty", "ext"] {
        assert!(slices_of(&folder, "default", none).is_empty(), "{none}");
    }
    assert!(folder
        .endpoint_slices
        .values()
        .filter(|s| s.origin.is_none())
        .all(|s| s.object.metadata.generate_name.is_some()));
}

#[test]
fn a_big_service_is_split_every_100_endpoints() {
    let folder = whole(&[(
        "a.yaml",
        &docs(&[
            &deployment("default", "web", 230),
            &service("default", "web", "web", "http"),
        ]),
    )]);
    let mut sizes: Vec<usize> = slices_of(&folder, "default", "web")
        .iter()
        .map(|s| s.endpoints.len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [30, 100, 100]);
}
