//! What changed between two reads of a folder, so the lab applies an edit live: which pods to
//! start, which to stop, which to rebuild, and whether the control plane's YAML must be written
//! again. Stop the removed pods before starting the added ones: an address freed by one may be
//! given to the other when the pool has no other left.

use std::collections::BTreeMap;

use super::{render::render_for_control_plane, Folder, Key, LabPod};

/// The changes from one [`Folder`] to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub pods_added: Vec<Key>,
    pub pods_removed: Vec<Key>,
    pub pods_changed: Vec<PodChange>,
    pub services_added: Vec<Key>,
    pub services_removed: Vec<Key>,
    /// Services whose ports, selector or cluster IP changed.
    pub services_changed: Vec<Key>,
    /// Whether the control plane's YAML differs (any object it reads changed).
    pub config_changed: bool,
}

/// One pod that exists in both reads but differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodChange {
    pub key: Key,
    /// What differs, in [`PodField`] order.
    pub fields: Vec<PodField>,
}

/// What can differ in a pod between two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PodField {
    /// Its address (its `status.podIP` was edited).
    Address,
    /// Whether it is meshed, or why.
    Injection,
    /// Its service account, so its identity.
    ServiceAccount,
    /// The ports its app listens on.
    Ports,
    /// Its `weft.dev/*` annotations or its namespace's: redirection and the proxy's settings.
    WeftAnnotations,
    /// Its labels (which Services select it: the control plane's business only).
    Labels,
    /// Its document differs in nothing above, but in something else (image, other
    /// annotations, ...).
    Other,
}

impl PodField {
    /// Whether the running pod must be rebuilt (stopped and started again) for this change;
    /// the others only change what the control plane reads.
    pub fn needs_restart(&self) -> bool {
        !matches!(self, PodField::Labels | PodField::Other)
    }
}

impl PodChange {
    /// Whether the running pod must be rebuilt.
    pub fn needs_restart(&self) -> bool {
        self.fields.iter().any(PodField::needs_restart)
    }
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &Folder, new: &Folder) -> Diff {
    let (pods_added, pods_removed, both) = keys(&old.pods, &new.pods);
    let pods_changed = both
        .into_iter()
        .filter_map(|key| {
            let fields = pod_fields(&old.pods[&key], &new.pods[&key]);
            (!fields.is_empty()).then_some(PodChange { key, fields })
        })
        .collect();
    let (services_added, services_removed, both) = keys(&old.services, &new.services);
    let services_changed = both
        .into_iter()
        .filter(|key| {
            let (a, b) = (&old.services[key], &new.services[key]);
            a.cluster_ip != b.cluster_ip
                || a.ports() != b.ports()
                || a.selector() != b.selector()
                || a.object.spec.as_ref().and_then(|s| s.type_.as_ref())
                    != b.object.spec.as_ref().and_then(|s| s.type_.as_ref())
        })
        .collect();
    // Rendering fails only for YAML no folder read can hold; then say it changed.
    let config_changed = match (render_for_control_plane(old), render_for_control_plane(new)) {
        (Ok(a), Ok(b)) => a != b,
        _ => true,
    };
    Diff {
        pods_added,
        pods_removed,
        pods_changed,
        services_added,
        services_removed,
        services_changed,
        config_changed,
    }
}

/// Keys only in `new`, only in `old`, and in both.
fn keys<V>(old: &BTreeMap<Key, V>, new: &BTreeMap<Key, V>) -> (Vec<Key>, Vec<Key>, Vec<Key>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let both = new
        .keys()
        .filter(|k| old.contains_key(*k))
        .cloned()
        .collect();
    (added, removed, both)
}

fn pod_fields(a: &LabPod, b: &LabPod) -> Vec<PodField> {
    let weft = |p: &LabPod| -> BTreeMap<String, String> {
        p.annotations()
            .iter()
            .filter(|(k, _)| k.starts_with("weft.dev/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut fields = Vec::new();
    if a.ip != b.ip {
        fields.push(PodField::Address);
    }
    if a.injection != b.injection {
        fields.push(PodField::Injection);
    }
    if a.service_account() != b.service_account() {
        fields.push(PodField::ServiceAccount);
    }
    if a.ports != b.ports {
        fields.push(PodField::Ports);
    }
    if weft(a) != weft(b) || a.settings != b.settings {
        fields.push(PodField::WeftAnnotations);
    }
    if a.labels() != b.labels() {
        fields.push(PodField::Labels);
    }
    if fields.is_empty() && a.object != b.object {
        fields.push(PodField::Other);
    }
    fields
}
