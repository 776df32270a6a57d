//! The route service: `Watch(Service port) -> stream Update`, the route table (HTTPRoutes and
//! TrafficSplits, merged and ordered) one client sees for one Service port.
//!
//! [`Routes`] is how the shared [`Hub`] answers a route target (through the config crate's
//! [`RouteIndex`], built once per snapshot); [`RouteService`] is the gRPC edge: it reads the
//! Service port from the request and the client's namespace from its authenticated identity
//! ([`crate::peer::PeerIdentity`], the client certificate the proxy presented), never from the
//! request, and streams the hub's updates.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;
use weft_api::route::{self as pb, routes_server};
use weft_control_plane_config::{
    model::Snapshot,
    routes::{self, RouteAnswer, RouteIndex, RouteTarget},
};

use crate::{
    hub::{Answers, Hub, UpdateStream},
    peer::PeerIdentity,
};

/// The route service's answers: a Service port's route table for a client namespace.
#[derive(Debug, Clone, Default)]
pub struct Routes;

impl Answers for Routes {
    type Target = RouteTarget;
    type Index = RouteIndex;
    type Answer = RouteAnswer;
    type Update = pb::Update;
    /// Route tables read Services, routes, grants, splits and faults, never endpoints or
    /// pods: endpoint churn costs the route hub one comparison. Any change to what they read
    /// looks every route target up again (route changes are rare and tables few).
    type Changes = ();

    const KINDS: &'static [&'static str] = &["table"];

    fn index(&self, snapshot: Arc<Snapshot>) -> RouteIndex {
        RouteIndex::new(&snapshot)
    }

    fn answer(&self, index: &RouteIndex, target: &RouteTarget) -> RouteAnswer {
        index.answer(target)
    }

    fn whole(&self, answer: &RouteAnswer, version: u64) -> pb::Update {
        pb::Update {
            version,
            kind: Some(pb::update::Kind::Table(RouteAnswer::unwrap_or_clone(
                answer.clone(),
            ))),
        }
    }

    /// Tables are small: a change sends the whole table again.
    fn since(&self, new: &RouteAnswer, old: &RouteAnswer, version: u64) -> Option<pb::Update> {
        (new != old).then(|| self.whole(new, version))
    }

    fn kind(_: &pb::Update) -> &'static str {
        "table"
    }

    fn changes(&self, old: &Snapshot, new: &Snapshot) -> Option<()> {
        routes::inputs_differ(old, new).then_some(())
    }

    fn touched(&self, _: &(), _: &RouteIndex, _: &RouteIndex, _: &RouteTarget) -> bool {
        true
    }
}

/// The service behind `weft.route.v1.Routes`.
#[derive(Debug, Clone)]
pub struct RouteService {
    hub: Arc<Hub<Routes>>,
    /// The cluster's DNS domain, for targets named `name.namespace.svc.<domain>:port`.
    cluster_domain: String,
    shutdown: CancellationToken,
}

impl RouteService {
    pub fn new(hub: Arc<Hub<Routes>>, cluster_domain: &str, shutdown: CancellationToken) -> Self {
        Self {
            hub,
            cluster_domain: cluster_domain.to_string(),
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl routes_server::Routes for RouteService {
    type WatchStream = UpdateStream<pb::Update>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Who asks, as its certificate proves; a caller without one sees producer routes.
        let peer = request.extensions().get::<PeerIdentity>();
        let client_namespace = peer.map(|peer| peer.0.namespace().to_string());
        let client_service_account = peer.map(|peer| peer.0.service_account().to_string());
        let req = request.into_inner();
        let target = match &req.service {
            Some(service) => RouteTarget::service(service, client_namespace),
            None => RouteTarget::parse(&req.target, &self.cluster_domain, client_namespace),
        }
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .with_service_account(client_service_account);
        debug!(%target, proxy = %req.proxy_id.chars().take(256).collect::<String>(), "route watch");
        let stream = self.hub.watch(target, self.shutdown.clone())?;
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests;
