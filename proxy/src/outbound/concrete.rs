//! The concrete layer of outbound: a backend Service, balanced over its endpoints.
//!
//! Its endpoint list follows discovery: each answer swaps the list whole, and an endpoint that
//! stays as it was keeps its slot (its latency estimate, in-flight count and ejection state),
//! so a config update does not reset what the balancer learnt.

use std::sync::Arc;

use tracing::warn;
use weft_proxy_balance::Load;
use weft_proxy_discovery::EndpointSet;
use weft_proxy_http::balance::{Balanced, Slot};

use super::endpoint::{same_upstream, Endpoints};

/// Sets `balanced`'s endpoints to `set`'s, reusing the slots of endpoints that stay.
pub(crate) fn update(
    balanced: &Balanced,
    set: &EndpointSet,
    endpoints: &Endpoints,
    settings: &weft_proxy_balance::Settings,
) {
    let mut slots = Vec::with_capacity(set.endpoints.len());
    for ep in set.endpoints.values() {
        if let Some(slot) = balanced
            .slot(ep.addr)
            .filter(|s| s.load.weight() == ep.weight.max(1) && same_upstream(&s.forward, ep))
        {
            slots.push(slot);
            continue;
        }
        let forward = match endpoints.forward(balanced.service(), ep) {
            Ok(f) => f,
            Err(e) => {
                warn!(endpoint = %ep.addr, error = %e, "leaving the endpoint out");
                continue;
            }
        };
        slots.push(Arc::new(Slot {
            addr: ep.addr,
            load: Arc::new(Load::new(ep.weight, settings)),
            forward,
        }));
    }
    balanced.set(slots);
}
