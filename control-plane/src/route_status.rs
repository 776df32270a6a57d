//! Kubernetes mode's HTTPRoute status writer: each route's `status.parents` entries for its
//! Service parents (`Accepted`, `ResolvedRefs`), as a GAMMA implementation writes them, under
//! the controller name [`CONTROLLER_NAME`].
//!
//! # What is written
//! For every HTTPRoute, one entry per Service `parentRef` (`group: ""`, `kind: Service`): the
//! `parentRef` as written in the route, `controllerName: weft.dev/gateway-controller`, and the
//! conditions of [`routes::route_status`] with `observedGeneration` (the route's
//! `metadata.generation`) and `lastTransitionTime`, kept from the entry already there when the
//! condition's status did not change (as Kubernetes' `meta.SetStatusCondition`). A route whose
//! current version fails Weft's checks ([`crate::kube_source::RefusedRoute`]) gets
//! `Accepted=False` with `UnsupportedValue` and the field and reason
//! ([`routes::refused_route_status`]). Entries of other controllers (a Gateway's parents, another
//! mesh) are left as they are, every field of them, known to Weft or not.
//!
//! # Read, merge, patch: not server-side apply
//! `status.parents` is an atomic list in the Gateway API's CRDs (`x-kubernetes-list-type:
//! atomic`): server-side apply cannot own some of its entries, only the whole list, so an apply
//! by a field manager of our own would either conflict with every other controller that writes
//! there or, forced, erase their entries. So the writer reads the route's status (from the
//! watch the config source keeps, no extra request), keeps every entry whose `controllerName`
//! is not ours, replaces ours, and sends the whole list as a JSON merge patch of the `status`
//! subresource (field manager `weft-control-plane`) with the `metadata.resourceVersion` it read:
//! the API server applies it only to that version (optimistic concurrency), else answers 409
//! Conflict, and then the writer reads the status once (`GET .../status`), merges again and
//! patches once more. The same entries another writer sees can therefore never be lost.
//!
//! # When
//! After each snapshot the source publishes (and each change of the refused routes), once
//! changes have settled for [`SETTLE`]; only routes whose entries differ from what the object
//! holds (or, while the watch has not yet brought back the writer's own last write, from what
//! it wrote) are patched, so a steady cluster costs no request. The work of comparing runs off
//! the async workers. Each request is bounded by [`REQUEST_TIMEOUT`]; a pass with a failure
//! (API server down, 403 for want of RBAC) is retried after a backoff doubling from 1 s to
//! 60 s with jitter, never in a loop; the failure is logged at warn when it starts or changes
//! and the recovery at info, and every outcome is counted in
//! `weft_route_status_writes_total{result}`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::{json, Map, Value};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_control_plane_config::{
    gateway::{HttpRoute, ParentReference},
    model::{Key, Snapshot},
    routes::{self, RouteStatus},
};

use crate::{kube_source::RefusedRoute, metrics::Metrics};

/// The `controllerName` of Weft's entries in `status.parents`.
pub const CONTROLLER_NAME: &str = "weft.dev/gateway-controller";
/// The field manager of the status patches.
pub const FIELD_MANAGER: &str = "weft-control-plane";
/// How long changes settle before a pass.
pub const SETTLE: Duration = Duration::from_millis(500);
/// Bound on one request to the API server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest wait before a failed pass is retried.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The CRD's bounds: entries in `status.parents`, characters in a condition's message.
const MAX_PARENTS: usize = 32;
const MAX_MESSAGE: usize = 32 * 1024;

/// One route's status to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub route: Key,
    /// The resourceVersion of the object the plan was made from: the patch's precondition.
    pub resource_version: Option<String>,
    /// The whole new `status.parents`: the other controllers' entries as they were, then ours.
    pub parents: Vec<Value>,
    /// Our entries alone.
    pub ours: Vec<Value>,
    /// The conditions the entries were made from (to merge again after a conflict).
    pub status: RouteStatus,
}

/// What the writer last wrote to a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The resourceVersion the patch was made over.
    pub from: Option<String>,
    /// The resourceVersion the patch produced.
    pub result: Option<String>,
    /// Our entries as written.
    pub ours: Vec<Value>,
}

/// The plan for one route, or `None` when nothing needs writing. `held` is the route as the
/// API server last showed it (its status included), `last` what the writer last wrote to it,
/// `now` the time of a condition whose status changes.
pub fn plan(
    held: &HttpRoute,
    status: &RouteStatus,
    last: Option<&Written>,
    now: &Time,
) -> Option<Plan> {
    let held_parents = status_parents(held);
    let (others, held_ours): (Vec<Value>, Vec<Value>) =
        held_parents.into_iter().partition(|e| !is_ours(e));
    let version = held.metadata.resource_version.clone();
    // The object may be the one our last write was made over (the watch has not brought the
    // write back yet), or the one it made (as the API server normalised it): either way, what
    // we wrote is the truth about our entries.
    let ours_view =
        last.filter(|w| version.is_some() && (w.from == version || w.result == version));
    let base: &[Value] = ours_view.map_or(&held_ours, |w| &w.ours);
    let room = MAX_PARENTS.saturating_sub(others.len());
    let ours = entries(status, base, room, now);
    if ours == base {
        return None;
    }
    let mut parents = others;
    parents.extend(ours.iter().cloned());
    Some(Plan {
        route: status.route.clone(),
        resource_version: version,
        parents,
        ours,
        status: status.clone(),
    })
}

/// The plans of every route of `snapshot` and of every refused route; forgets in `written`
/// the routes that are gone.
pub fn plans(
    snapshot: &Snapshot,
    refused: &[RefusedRoute],
    written: &mut HashMap<Key, Written>,
    now: &Time,
) -> Vec<Plan> {
    let refused_keys: BTreeMap<&Key, &RefusedRoute> = refused.iter().map(|r| (&r.key, r)).collect();
    written
        .retain(|key, _| snapshot.http_routes.contains_key(key) || refused_keys.contains_key(key));
    let mut out = Vec::new();
    for (key, route) in &snapshot.http_routes {
        if refused_keys.contains_key(key) {
            continue;
        }
        let status = routes::route_status(snapshot, key, route);
        out.extend(plan(route, &status, written.get(key), now));
    }
    for r in refused {
        let mut status = routes::refused_route_status(&r.key, &r.route, &r.problem);
        if snapshot.http_routes.contains_key(&r.key) {
            for parent in &mut status.parents {
                for c in &mut parent.conditions {
                    c.message
                        .push_str("; the route's last accepted version stays in force");
                }
            }
        }
        out.extend(plan(&r.route, &status, written.get(&r.key), now));
    }
    out
}

/// The entries of `status.parents` (empty when there is no status).
fn status_parents(route: &HttpRoute) -> Vec<Value> {
    let Some(status) = &route.status else {
        return Vec::new();
    };
    match serde_json::to_value(status) {
        Ok(Value::Object(mut status)) => match status.remove("parents") {
            Some(Value::Array(parents)) => parents,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn is_ours(entry: &Value) -> bool {
    entry.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
}

/// Our entries for `status`, at most `room` of them, times carried over from `base`.
fn entries(status: &RouteStatus, base: &[Value], room: usize, now: &Time) -> Vec<Value> {
    if status.parents.len() > room {
        warn!(
            route = %format!("{}/{}", status.route.0, status.route.1),
            parents = status.parents.len(),
            room,
            "HTTPRoute has more Service parents than status.parents has room for beside other \
             controllers' entries; the first ones are reported"
        );
    }
    let now = serde_json::to_value(now).unwrap_or(Value::Null);
    status
        .parents
        .iter()
        .take(room)
        .map(|parent| {
            let previous = base.iter().find(|e| {
                e.get("parentRef")
                    .and_then(|r| serde_json::from_value::<ParentReference>(r.clone()).ok())
                    .is_some_and(|r| r == parent.parent_ref)
            });
            let conditions: Vec<Value> = parent
                .conditions
                .iter()
                .map(|c| {
                    let state = if c.status { "True" } else { "False" };
                    let since = previous
                        .and_then(|e| e.get("conditions")?.as_array())
                        .and_then(|cs| {
                            cs.iter()
                                .find(|p| p.get("type").and_then(Value::as_str) == Some(c.type_))
                        })
                        .filter(|p| p.get("status").and_then(Value::as_str) == Some(state))
                        .and_then(|p| p.get("lastTransitionTime"))
                        .filter(|t| t.is_string())
                        .cloned()
                        .unwrap_or_else(|| now.clone());
                    let mut condition = Map::new();
                    condition.insert("type".into(), json!(c.type_));
                    condition.insert("status".into(), json!(state));
                    condition.insert("reason".into(), json!(c.reason));
                    condition.insert("message".into(), json!(bounded(&c.message)));
                    condition.insert("lastTransitionTime".into(), since);
                    if let Some(g) = status.generation {
                        condition.insert("observedGeneration".into(), json!(g));
                    }
                    Value::Object(condition)
                })
                .collect();
            json!({
                "parentRef": parent_ref(&parent.parent_ref),
                "controllerName": CONTROLLER_NAME,
                "conditions": conditions,
            })
        })
        .collect()
}

/// A parentRef as JSON with only the fields it has (a `null` is no value to the API server).
fn parent_ref(p: &ParentReference) -> Value {
    let mut out = Map::new();
    if let Some(g) = &p.group {
        out.insert("group".into(), json!(g));
    }
    if let Some(k) = &p.kind {
        out.insert("kind".into(), json!(k));
    }
    if let Some(ns) = &p.namespace {
        out.insert("namespace".into(), json!(ns));
    }
    out.insert("name".into(), json!(p.name));
    if let Some(s) = &p.section_name {
        out.insert("sectionName".into(), json!(s));
    }
    if let Some(port) = p.port {
        out.insert("port".into(), json!(port));
    }
    Value::Object(out)
}

/// `message` cut to the CRD's bound, on a character boundary.
fn bounded(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Writes route status through the Kubernetes API; see the module's documentation.
pub struct StatusWriter {
    client: Client,
    metrics: Arc<Metrics>,
    settle: Duration,
    written: HashMap<Key, Written>,
    /// The failure the writer is in, for logging it once.
    failing: Option<String>,
}

impl fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusWriter")
            .field("settle", &self.settle)
            .field("routes_written", &self.written.len())
            .finish_non_exhaustive()
    }
}

/// Why one write failed.
#[derive(Debug)]
enum WriteError {
    Api(kube::Error),
    Timeout,
}

impl WriteError {
    /// Whether the failure is about the one route (an invalid status, say), so the others can
    /// still be written; not when the API server is away, overloaded or refuses us.
    fn is_per_route(&self) -> bool {
        match self {
            WriteError::Api(kube::Error::Api(s)) => {
                (400..500).contains(&s.code) && ![401, 403, 408, 429].contains(&s.code)
            }
            _ => false,
        }
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Api(kube::Error::Api(s)) if s.code == 403 => write!(
                f,
                "{} (the control plane's ClusterRole needs patch on \
                 gateway.networking.k8s.io httproutes/status)",
                s.message
            ),
            WriteError::Api(e) => write!(f, "{}", crate::kube_source::causes(e)),
            WriteError::Timeout => write!(
                f,
                "the API server did not answer within {REQUEST_TIMEOUT:?}"
            ),
        }
    }
}

impl StatusWriter {
    /// Writes through `client`, a pass once changes have been quiet for `settle`.
    pub fn new(client: Client, metrics: Arc<Metrics>, settle: Duration) -> Self {
        metrics.route_status_series();
        Self {
            client,
            metrics,
            settle,
            written: HashMap::new(),
            failing: None,
        }
    }

    /// Runs until `shutdown`: a pass after the source's first snapshot, then after each change
    /// of `snapshots` or `refused`, and after a backoff when a pass failed.
    pub async fn run(
        mut self,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        mut refused: watch::Receiver<Arc<Vec<RefusedRoute>>>,
        shutdown: CancellationToken,
    ) {
        // The value held at start is the empty state before the source's first publication,
        // already marked seen: `changed` fires on that publication, however early it comes.
        let mut synced = false;
        let mut due: Option<Instant> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = None;
                    let snapshot = snapshots.borrow_and_update().clone();
                    let refusals = refused.borrow_and_update().clone();
                    if self.pass(snapshot, refusals, &shutdown).await {
                        backoff = BACKOFF_MIN;
                    } else {
                        due = Some(Instant::now() + jittered(backoff));
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    synced = true;
                    // A change while a failed pass waits for its backoff waits with it.
                    if due.is_none() {
                        due = Some(Instant::now() + self.settle);
                    }
                }
                changed = refused.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if synced && due.is_none() {
                        due = Some(Instant::now() + self.settle);
                    }
                }
            }
        }
    }

    /// One pass over every route; returns whether every write that was needed succeeded.
    async fn pass(
        &mut self,
        snapshot: Arc<Snapshot>,
        refused: Arc<Vec<RefusedRoute>>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut written = std::mem::take(&mut self.written);
        let now = Time(Timestamp::now());
        let planned = tokio::task::spawn_blocking(move || {
            let plans = plans(&snapshot, &refused, &mut written, &now);
            (plans, written)
        })
        .await;
        let plans = match planned {
            Ok((plans, written)) => {
                self.written = written;
                plans
            }
            Err(e) => {
                warn!(error = %e, "planning HTTPRoute status failed; retrying with backoff");
                return false;
            }
        };
        if !plans.is_empty() {
            debug!(routes = plans.len(), "writing HTTPRoute status");
        }
        let mut failure = None;
        for plan in plans {
            if shutdown.is_cancelled() {
                return true;
            }
            let route = format!("{}/{}", plan.route.0, plan.route.1);
            if let Err(e) = self.write(plan).await {
                self.metrics.route_status_write("failed");
                let per_route = e.is_per_route();
                failure.get_or_insert((route, e.to_string()));
                // The API server away, overloaded or refusing us: the next routes would fare
                // no better, and each could cost a whole timeout. The pass is retried whole.
                if !per_route {
                    break;
                }
            }
        }
        match failure {
            None => {
                if self.failing.take().is_some() {
                    info!("writing HTTPRoute status again");
                }
                true
            }
            Some((route, message)) => {
                if self.failing.as_ref() != Some(&message) {
                    warn!(
                        route,
                        error = %message,
                        "writing HTTPRoute status failed; retrying with backoff"
                    );
                } else {
                    debug!(route, error = %message, "writing HTTPRoute status still failing");
                }
                self.failing = Some(message);
                false
            }
        }
    }

    /// Patches one route's status; after a conflict, reads it and merges once more.
    async fn write(&mut self, plan: Plan) -> Result<(), WriteError> {
        let api: Api<HttpRoute> = Api::namespaced(self.client.clone(), &plan.route.0);
        let name = plan.route.1.clone();
        match self.patch(&api, &plan).await {
            Err(WriteError::Api(kube::Error::Api(s))) if s.code == 409 => {
                self.metrics.route_status_write("conflict");
                let fresh = bounded_call(api.get_status(&name)).await?;
                let now = Time(Timestamp::now());
                // The conditions stay those of the generation they were computed for.
                match self::plan(&fresh, &plan.status, None, &now) {
                    Some(again) => self.patch(&api, &again).await,
                    None => Ok(()),
                }
            }
            // The route was deleted meanwhile: nothing to report on.
            Err(WriteError::Api(kube::Error::Api(s))) if s.code == 404 => Ok(()),
            other => other,
        }
    }

    async fn patch(&mut self, api: &Api<HttpRoute>, plan: &Plan) -> Result<(), WriteError> {
        let mut body = json!({"status": {"parents": plan.parents}});
        if let Some(version) = &plan.resource_version {
            body["metadata"] = json!({"resourceVersion": version});
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let route =
            bounded_call(api.patch_status(&plan.route.1, &params, &Patch::Merge(&body))).await?;
        debug!(
            route = %format!("{}/{}", plan.route.0, plan.route.1),
            parents = plan.ours.len(),
            "HTTPRoute status written"
        );
        self.metrics.route_status_write("written");
        self.written.insert(
            plan.route.clone(),
            Written {
                from: plan.resource_version.clone(),
                result: route.metadata.resource_version,
                ours: plan.ours.clone(),
            },
        );
        Ok(())
    }
}

async fn bounded_call<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, WriteError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => result.map_err(WriteError::Api),
        Err(_) => Err(WriteError::Timeout),
    }
}

/// `d` plus up to half of it again, at random: writers that failed together do not retry
/// together.
fn jittered(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests;
