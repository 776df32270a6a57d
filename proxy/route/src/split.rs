//! Weighted backends: a rule's `backendRefs` (or a TrafficSplit's, for TCP) and the choice of one
//! per request from a random number the caller draws.

use std::collections::HashMap;
use std::fmt;

use http::{HeaderMap, StatusCode};

use crate::error::{CompileError, Reason, Site};
use crate::filter::{Answer, HeaderModifier};
use crate::spec::{self, ServiceRef};

/// Why a rule with no backend of weight above 0 answers 500 (the Gateway API: "If all entries in
/// BackendRefs are invalid [...] all traffic which matches this rule MUST receive a 500").
const NO_BACKEND: &str = "the route rule has no backend with a weight above 0";

/// The dense number of a distinct Service in one table: an index into
/// [`crate::RouteTable::services`], so the proxy can keep its balancers in a `Vec` beside the
/// table instead of looking Services up by name per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(usize);

/// Backends chosen by weight.
#[derive(Debug)]
pub struct Split {
    shares: Box<[Share]>,
    /// `ends[i]`: the sum of the weights of `shares[..=i]`.
    ends: Box<[u32]>,
    total: u32,
}

/// One weighted entry of a [`Split`].
#[derive(Debug)]
pub enum Share {
    Backend(Backend),
    Invalid(InvalidBackend),
}

/// A backend Service port with its weight and its own header filters.
#[derive(Debug)]
pub struct Backend {
    weight: u32,
    service: ServiceRef,
    id: ServiceId,
    request: Box<[HeaderModifier]>,
    response: Box<[HeaderModifier]>,
}

/// A backendRef the control plane could not resolve: its share is answered with `status`.
#[derive(Debug)]
pub struct InvalidBackend {
    weight: u32,
    status: StatusCode,
    reason: Box<str>,
}

/// Numbers the distinct Services of a table while it compiles.
#[derive(Debug, Default)]
pub(crate) struct Services {
    ids: HashMap<ServiceRef, ServiceId>,
    list: Vec<ServiceRef>,
}

impl ServiceId {
    /// Its index into [`crate::RouteTable::services`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl Split {
    /// The backend for a request, from `r`, a uniformly random `u32` the caller draws
    /// (`rng.random()`). Each share gets `weight / total` of the values of `r`; weight 0 gets
    /// none. An invalid backend's share, or a split whose weights are all 0 (or that has no
    /// backend), is an [`Answer::Error`] (500 for the latter).
    pub fn pick(&self, r: u32) -> Result<&Backend, Answer<'_>> {
        if self.total == 0 {
            return Err(Answer::Error {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: NO_BACKEND,
            });
        }
        // `r / 2^32` scaled to `0..total`: a product of two values below 2^32 fits a u64.
        let point = ((u64::from(r) * u64::from(self.total)) >> 32) as u32;
        let index = self.ends.partition_point(|&end| end <= point);
        match self.shares.get(index) {
            Some(Share::Backend(backend)) => Ok(backend),
            Some(Share::Invalid(invalid)) => Err(Answer::Error {
                status: invalid.status,
                reason: &invalid.reason,
            }),
            // `point < total == ends.last()`, so some end is above it.
            None => Err(Answer::Error {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: NO_BACKEND,
            }),
        }
    }

    /// Its entries, in the order given.
    pub fn shares(&self) -> &[Share] {
        &self.shares
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u32 {
        self.total
    }

    /// Whether it has no entry at all.
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Compiles backends; `site(i)` says where backend `i` is, for errors. TCP splits take no
    /// filters (`tcp`).
    pub(crate) fn compile(
        backends: &[spec::Backend],
        services: &mut Services,
        site: impl Fn(usize) -> Site,
        tcp: bool,
    ) -> Result<Split, CompileError> {
        let mut shares = Vec::with_capacity(backends.len());
        let mut ends = Vec::with_capacity(backends.len());
        let mut total = 0_u32;
        for (index, backend) in backends.iter().enumerate() {
            let err = |field: String, reason| CompileError::new(site(index), field, reason);
            total = total
                .checked_add(backend.weight)
                .ok_or_else(|| err("weight".into(), Reason::WeightOverflow))?;
            ends.push(total);
            if tcp && !backend.filters.is_empty() {
                return Err(err("filters".into(), Reason::FilterOnTcpBackend));
            }
            let mut request = Vec::new();
            let mut response = Vec::new();
            for (i, filter) in backend.filters.iter().enumerate() {
                let field = |inner: &str| format!("filters[{i}].{inner}");
                match filter {
                    spec::Filter::RequestHeaderModifier(m) => {
                        request.push(HeaderModifier::compile(m).map_err(|(f, r)| {
                            err(field(&format!("requestHeaderModifier.{f}")), r)
                        })?)
                    }
                    spec::Filter::ResponseHeaderModifier(m) => {
                        response.push(HeaderModifier::compile(m).map_err(|(f, r)| {
                            err(field(&format!("responseHeaderModifier.{f}")), r)
                        })?)
                    }
                    other => {
                        return Err(err(
                            format!("filters[{i}]"),
                            Reason::FilterOnBackend {
                                filter: crate::filter::kind(other),
                            },
                        ))
                    }
                }
            }
            let share = match &backend.target {
                spec::Target::Service(service) => {
                    check_service(service).map_err(|(f, r)| err(format!("target.{f}"), r))?;
                    Share::Backend(Backend {
                        weight: backend.weight,
                        service: service.clone(),
                        id: services.id(service),
                        request: request.into(),
                        response: response.into(),
                    })
                }
                spec::Target::Invalid { status, reason } => {
                    let status = StatusCode::from_u16(*status)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .ok_or_else(|| {
                            err(
                                "target.status".into(),
                                Reason::InvalidStatus {
                                    status: *status,
                                    expected: "400 to 599",
                                },
                            )
                        })?;
                    Share::Invalid(InvalidBackend {
                        weight: backend.weight,
                        status,
                        reason: reason.as_str().into(),
                    })
                }
            };
            shares.push(share);
        }
        Ok(Split {
            shares: shares.into(),
            ends: ends.into(),
            total,
        })
    }
}

impl Share {
    /// Its weight.
    pub fn weight(&self) -> u32 {
        match self {
            Share::Backend(backend) => backend.weight,
            Share::Invalid(invalid) => invalid.weight,
        }
    }
}

impl Backend {
    /// Its weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The Service port it sends to.
    pub fn service(&self) -> &ServiceRef {
        &self.service
    }

    /// The Service's number in its table.
    pub fn id(&self) -> ServiceId {
        self.id
    }

    /// Applies its `RequestHeaderModifier`s, after the rule's request filters.
    pub fn filter_request(&self, headers: &mut HeaderMap) {
        for modifier in &*self.request {
            modifier.apply(headers);
        }
    }

    /// Whether it changes responses.
    pub fn has_response_filters(&self) -> bool {
        !self.response.is_empty()
    }

    /// Applies its `ResponseHeaderModifier`s, after the rule's.
    pub fn filter_response(&self, headers: &mut HeaderMap) {
        for modifier in &*self.response {
            modifier.apply(headers);
        }
    }
}

impl InvalidBackend {
    /// Its weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// What its share is answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Why it is invalid.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl Services {
    /// The number of `service`, a new one if it is new.
    pub(crate) fn id(&mut self, service: &ServiceRef) -> ServiceId {
        if let Some(&id) = self.ids.get(service) {
            return id;
        }
        let id = ServiceId(self.list.len());
        self.ids.insert(service.clone(), id);
        self.list.push(service.clone());
        id
    }

    pub(crate) fn into_list(self) -> Box<[ServiceRef]> {
        self.list.into()
    }
}

/// A Service reference must name something: a namespace, a name and a port.
pub(crate) fn check_service(service: &ServiceRef) -> Result<(), (&'static str, Reason)> {
    if service.namespace.is_empty() {
        return Err(("namespace", Reason::Empty));
    }
    if service.name.is_empty() {
        return Err(("name", Reason::Empty));
    }
    if service.port == 0 {
        return Err(("port", Reason::PortZero));
    }
    Ok(())
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}
