//! The destination service: `Watch(target) -> stream Update`, where a destination's endpoints
//! are and who each must be.
//!
//! [`Endpoints`] is how the shared [`Hub`] answers a destination (through the config crate's
//! [`Lookup`]); [`DestinationService`] is the gRPC edge: it reads a target from the request
//! (an address, a DNS name in the cluster's domain, or a Service by its parts) and streams the
//! hub's updates.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;
use weft_api::destination::{self as pb, destination_server};
use weft_control_plane_config::{
    index::{Answer, Changes, Lookup, Target},
    model::Snapshot,
};

use crate::hub::{Answers, Hub, UpdateStream};

/// The destination service's answers: a Service port's endpoints with the identity each must
/// present, or "not a Service".
#[derive(Debug, Clone)]
pub struct Endpoints {
    trust_domain: String,
}

impl Endpoints {
    /// Endpoint identities are in `trust_domain`.
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
        }
    }
}

impl Answers for Endpoints {
    type Target = Target;
    type Index = Lookup;
    type Answer = Answer;
    type Update = pb::Update;
    type Changes = Changes;

    const KINDS: &'static [&'static str] = &["snapshot", "delta", "not_a_service"];

    fn index(&self, snapshot: Arc<Snapshot>) -> Lookup {
        Lookup::new(snapshot, &self.trust_domain)
    }

    fn answer(&self, index: &Lookup, target: &Target) -> Answer {
        index.answer(target)
    }

    fn whole(&self, answer: &Answer, version: u64) -> pb::Update {
        answer.whole(version)
    }

    fn since(&self, new: &Answer, old: &Answer, version: u64) -> Option<pb::Update> {
        new.since(old, version)
    }

    fn kind(update: &pb::Update) -> &'static str {
        match &update.kind {
            Some(pb::update::Kind::Delta(_)) => "delta",
            Some(pb::update::Kind::NotAService(_)) => "not_a_service",
            _ => "snapshot",
        }
    }

    fn changes(&self, old: &Snapshot, new: &Snapshot) -> Option<Changes> {
        Changes::between(old, new)
    }

    fn touched(&self, changes: &Changes, old: &Lookup, new: &Lookup, target: &Target) -> bool {
        new.touched(old, changes, target)
    }
}

/// The service behind `weft.destination.v1.Destination`.
#[derive(Debug, Clone)]
pub struct DestinationService {
    hub: Arc<Hub<Endpoints>>,
    /// The cluster's DNS domain, for targets named `name.namespace.svc.<domain>:port`.
    cluster_domain: String,
    shutdown: CancellationToken,
}

impl DestinationService {
    pub fn new(
        hub: Arc<Hub<Endpoints>>,
        cluster_domain: &str,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            hub,
            cluster_domain: cluster_domain.to_string(),
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl destination_server::Destination for DestinationService {
    type WatchStream = UpdateStream<pb::Update>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let target = match &req.service {
            Some(service) => Target::service(service),
            None => Target::parse(&req.target, &self.cluster_domain),
        }
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        debug!(%target, proxy = %req.proxy_id.chars().take(256).collect::<String>(), "watch");
        let stream = self.hub.watch(target, self.shutdown.clone())?;
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests;
