//! What route policies did: faults injected, retries made or not made, budgets exhausted.
//! Each is counted when it happens (an event, not every request), by the route rule's label
//! ([`RouteLabel`], bounded) and a small fixed set of kinds.

use prometheus::{IntCounterVec, Opts, Registry};

use crate::{registry::register, Metrics, RouteLabel};

#[derive(Debug)]
pub(crate) struct Policy {
    faults: IntCounterVec,
    retries: IntCounterVec,
    skipped: IntCounterVec,
    exhausted: IntCounterVec,
}

/// What an injected fault did to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Delay,
    Abort,
}

/// Why a request was tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The response's status is one the policy retries.
    Status,
    /// The connection could not be made, or the mesh hop failed to set up.
    Connect,
    /// The connection failed or was reset before a response started.
    Reset,
    /// The try hit `timeouts.backendRequest`.
    Timeout,
}

/// Why a request the policy would have retried was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySkipped {
    /// Its body was larger than the replay cap, of unknown length, or could no longer be
    /// replayed.
    Body,
}

impl FaultKind {
    fn label(self) -> &'static str {
        match self {
            FaultKind::Delay => "delay",
            FaultKind::Abort => "abort",
        }
    }
}

impl RetryReason {
    fn label(self) -> &'static str {
        match self {
            RetryReason::Status => "status",
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
        }
    }
}

impl RetrySkipped {
    fn label(self) -> &'static str {
        match self {
            RetrySkipped::Body => "body",
        }
    }
}

impl Policy {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        Ok(Self {
            faults: vec(
                "weft_faults_injected_total",
                "Faults an HTTPFault injected, by kind (delay, abort) and the route rule whose \
                 request met it (route=\"\" when no route chose the request).",
                &["kind", "route"],
            )?,
            retries: vec(
                "weft_retries_total",
                "Requests tried again by a route's retry policy, by route rule and reason \
                 (status, connect, reset, timeout).",
                &["route", "reason"],
            )?,
            skipped: vec(
                "weft_retries_skipped_total",
                "Requests a retry policy would have tried again but could not, by route rule \
                 and reason (body: larger than 64 KiB, of unknown length, or no longer \
                 replayable).",
                &["route", "reason"],
            )?,
            exhausted: vec(
                "weft_retry_budget_exhausted_total",
                "Retries not made because the route rule's retry budget (20 % of its requests \
                 plus 10 per second over 10 s) was spent.",
                &["route"],
            )?,
        })
    }
}

impl Metrics {
    /// A fault injected into a request of `route`.
    pub fn fault_injected(&self, kind: FaultKind, route: RouteLabel) {
        let route = self.route_name(route);
        self.policy
            .faults
            .with_label_values(&[kind.label(), &route])
            .inc();
    }

    /// A request of `route` tried again.
    pub fn retry(&self, route: RouteLabel, reason: RetryReason) {
        let route = self.route_name(route);
        self.policy
            .retries
            .with_label_values(&[&route, reason.label()])
            .inc();
    }

    /// A request of `route` not tried again although its policy would have.
    pub fn retry_skipped(&self, route: RouteLabel, reason: RetrySkipped) {
        let route = self.route_name(route);
        self.policy
            .skipped
            .with_label_values(&[&route, reason.label()])
            .inc();
    }

    /// A retry of `route` refused by its budget.
    pub fn retry_budget_exhausted(&self, route: RouteLabel) {
        let route = self.route_name(route);
        self.policy.exhausted.with_label_values(&[&route]).inc();
    }
}
