//! The route service's answers (`weft.route.v1`): for a Service port a client sends to, the
//! HTTPRoutes and TrafficSplits in force, merged and ordered by the control plane, decoded
//! into `weft_proxy_route`'s spec and compiled once per update (regexes included), so the data
//! path only evaluates. A table that does not compile is refused whole (the stream is
//! reopened and the last good table stays), as an endpoint update is.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::watch;
use weft_api::{
    client::H2Connection,
    route::{self as pb, routes_client::RoutesClient},
};
use weft_proxy_identity::control_plane::origin;
use weft_proxy_metrics::Metrics;
use weft_proxy_route::{spec, RouteTable};

use crate::{Discovery, Kind, Read, StreamError, Table, UpdateError};

/// What is known of one Service port's routes.
#[derive(Clone, Debug)]
pub enum RouteState {
    /// Not yet answered (or the control plane does not serve routes).
    Pending,
    /// The routes in force; an empty table when none is attached.
    Known(Arc<Routes>),
}

impl PartialEq for RouteState {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RouteState::Pending, RouteState::Pending) => true,
            (RouteState::Known(a), RouteState::Known(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One Service port's routes, as one client sees them.
#[derive(Debug)]
pub struct Routes {
    /// The control plane's version of this state.
    pub version: u64,
    /// The routes in force, `<kind>/<namespace>/<name>`, for `/config`.
    pub names: Vec<String>,
    /// Compiled, ready for each request.
    pub table: RouteTable,
}

/// The route service's kind of watch: by a connection's original destination.
#[derive(Debug)]
pub(crate) struct RouteKind;

impl Kind for RouteKind {
    type Target = SocketAddr;
    type Answer = RouteState;
    const WHAT: &'static str = "route";

    fn pending() -> RouteState {
        RouteState::Pending
    }

    fn table(discovery: &Discovery) -> &std::sync::Mutex<Table<Self>> {
        &discovery.routes
    }

    async fn stream(
        discovery: &Discovery,
        conn: H2Connection,
        dst: &SocketAddr,
        tx: &watch::Sender<RouteState>,
        failures: &mut u32,
    ) -> Result<(), StreamError> {
        let mut client = RoutesClient::with_origin(conn, origin())
            .max_decoding_message_size(weft_api::MAX_UPDATE_BYTES);
        let request = pb::WatchRequest {
            target: dst.to_string(),
            proxy_id: discovery.proxy_id.clone(),
            service: None,
        };
        let mut stream = client
            .watch(request)
            .await
            .map_err(StreamError::status)?
            .into_inner();
        let mut first = true;
        let mut unknown_seen = false;
        while let Some(update) = stream.message().await.map_err(StreamError::status)? {
            let version = update.version;
            let read = match read(update, &discovery.metrics)? {
                Some(routes) => {
                    tx.send_replace(RouteState::Known(Arc::new(routes)));
                    let read = Read::Applied { first };
                    first = false;
                    read
                }
                None => {
                    let read = Read::Ignored {
                        first: !unknown_seen,
                    };
                    unknown_seen = true;
                    read
                }
            };
            read.report(Self::WHAT, dst, version, failures);
        }
        Err(StreamError::Closed)
    }
}

/// The routes an update carries, counted; `None` for a kind this proxy does not know.
fn read(update: pb::Update, metrics: &Metrics) -> Result<Option<Routes>, UpdateError> {
    match decode(update) {
        Ok(None) => {
            metrics.config_update_ignored();
            Ok(None)
        }
        Ok(Some(routes)) => {
            metrics.config_update("routes", true);
            Ok(Some(routes))
        }
        Err(e) => {
            metrics.config_update("routes", false);
            Err(e)
        }
    }
}

/// An update's routes, checked and compiled. `Ok(None)`: a kind this proxy does not know.
pub fn decode(update: pb::Update) -> Result<Option<Routes>, UpdateError> {
    let Some(pb::update::Kind::Table(table)) = update.kind else {
        return Ok(None);
    };
    let names = table.routes.clone();
    let spec = to_spec(table)?;
    let table = RouteTable::compile(&spec).map_err(|e| UpdateError::Routes(e.to_string()))?;
    Ok(Some(Routes {
        version: update.version,
        names,
        table,
    }))
}

fn refuse(what: impl Into<String>) -> UpdateError {
    UpdateError::Routes(what.into())
}

/// The wire's table as the route crate's spec; what the wire cannot mean is refused here
/// (absent oneofs: an unknown filter may not be skipped).
fn to_spec(t: pb::RouteTable) -> Result<spec::RouteTable, UpdateError> {
    let matches = t
        .matches
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let path = match m.path.map(|p| p.kind) {
                None => None,
                Some(None) => return Err(refuse(format!("matches[{i}].path: no kind"))),
                Some(Some(pb::path_match::Kind::Exact(p))) => Some(spec::PathMatch::Exact(p)),
                Some(Some(pb::path_match::Kind::Prefix(p))) => Some(spec::PathMatch::Prefix(p)),
                Some(Some(pb::path_match::Kind::Regex(p))) => Some(spec::PathMatch::Regex(p)),
            };
            let value = |v: Option<pb::value_match::Value>, what: String| match v {
                Some(pb::value_match::Value::Exact(s)) => Ok(spec::ValueMatch::Exact(s)),
                Some(pb::value_match::Value::Regex(s)) => Ok(spec::ValueMatch::Regex(s)),
                None => Err(refuse(format!("matches[{i}].{what}: no value"))),
            };
            let headers = m
                .headers
                .into_iter()
                .enumerate()
                .map(|(j, h)| {
                    Ok(spec::HeaderMatch {
                        value: value(h.value, format!("headers[{j}]"))?,
                        name: h.name,
                    })
                })
                .collect::<Result<_, UpdateError>>()?;
            let query = m
                .query_params
                .into_iter()
                .enumerate()
                .map(|(j, q)| {
                    Ok(spec::QueryMatch {
                        value: value(q.value, format!("query_params[{j}]"))?,
                        name: q.name,
                    })
                })
                .collect::<Result<_, UpdateError>>()?;
            Ok(spec::Match {
                rule: m.rule,
                path,
                method: (!m.method.is_empty()).then_some(m.method),
                headers,
                query,
            })
        })
        .collect::<Result<_, _>>()?;
    let rules = t
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("rules[{i}]");
            Ok(spec::Rule {
                filters: filters(r.filters, &at)?,
                backends: backends(r.backends, &at)?,
                name: r.name,
                timeouts: r
                    .timeouts
                    .map_or_else(spec::Timeouts::default, |t| spec::Timeouts {
                        request: millis(t.request_ms),
                        backend_request: millis(t.backend_request_ms),
                    }),
                retry: r.retry.map(|r| spec::Retry {
                    attempts: r.attempts,
                    // Out of range is refused by the route crate, by field; 0 stays out of it.
                    codes: r
                        .codes
                        .iter()
                        .map(|&c| u16::try_from(c).unwrap_or(0))
                        .collect(),
                    backoff: Duration::from_millis(r.backoff_ms),
                }),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(spec::RouteTable {
        matches,
        rules,
        tcp_split: backends(t.tcp_split, "tcp_split")?,
        faults: t
            .faults
            .into_iter()
            .enumerate()
            .map(|(i, f)| fault(f, &format!("faults[{i}]")))
            .collect::<Result<_, _>>()?,
    })
}

/// A wire duration in milliseconds, 0 meaning no bound.
fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// A resolved `HTTPFault`; one with neither delay nor abort stays so (it answers 500).
fn fault(f: pb::Fault, at: &str) -> Result<spec::FaultSpec, UpdateError> {
    let abort = match f.abort {
        None => None,
        Some(a) => Some(spec::FaultAbort {
            per_million: a.per_million,
            status: match a.status {
                Some(pb::fault_abort::Status::HttpStatus(s)) => spec::AbortStatus::Http(
                    u16::try_from(s)
                        .map_err(|_| refuse(format!("{at}.abort: status {s} is not HTTP")))?,
                ),
                Some(pb::fault_abort::Status::GrpcStatus(c)) => spec::AbortStatus::Grpc(c),
                None => return Err(refuse(format!("{at}.abort: no status"))),
            },
        }),
    };
    Ok(spec::FaultSpec {
        name: format!("{}/{}", f.namespace, f.name),
        delay: f.delay.map(|d| spec::FaultDelay {
            per_million: d.per_million,
            fixed_delay: Duration::from_millis(d.fixed_delay_ms),
        }),
        abort,
    })
}

fn backends(list: Vec<pb::Backend>, at: &str) -> Result<Vec<spec::Backend>, UpdateError> {
    list.into_iter()
        .enumerate()
        .map(|(i, b)| {
            let target = match b.target {
                Some(pb::backend::Target::Service(s)) => {
                    spec::Target::Service(service(s, &format!("{at}.backends[{i}]"))?)
                }
                Some(pb::backend::Target::Invalid(inv)) => spec::Target::Invalid {
                    status: u16::try_from(inv.status).map_err(|_| {
                        refuse(format!("{at}.backends[{i}]: status {}", inv.status))
                    })?,
                    reason: inv.reason,
                },
                None => return Err(refuse(format!("{at}.backends[{i}]: no target"))),
            };
            Ok(spec::Backend {
                weight: b.weight,
                target,
                filters: filters(b.filters, &format!("{at}.backends[{i}]"))?,
            })
        })
        .collect()
}

fn service(s: pb::ServiceRef, at: &str) -> Result<spec::ServiceRef, UpdateError> {
    let port = u16::try_from(s.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| refuse(format!("{at}: port {} is not 1-65535", s.port)))?;
    Ok(spec::ServiceRef {
        namespace: s.namespace,
        name: s.name,
        port,
    })
}

fn filters(list: Vec<pb::Filter>, at: &str) -> Result<Vec<spec::Filter>, UpdateError> {
    use pb::filter::Kind as F;
    let headers = |h: pb::HeaderModifier| spec::HeaderModifier {
        set: h.set.into_iter().map(|h| (h.name, h.value)).collect(),
        add: h.add.into_iter().map(|h| (h.name, h.value)).collect(),
        remove: h.remove,
    };
    let path = |p: Option<pb::PathModifier>, at: &str| -> Result<_, UpdateError> {
        Ok(match p.map(|p| p.kind) {
            None => None,
            Some(Some(pb::path_modifier::Kind::ReplaceFullPath(p))) => {
                Some(spec::PathModifier::ReplaceFullPath(p))
            }
            Some(Some(pb::path_modifier::Kind::ReplacePrefixMatch(p))) => {
                Some(spec::PathModifier::ReplacePrefixMatch(p))
            }
            Some(None) => return Err(refuse(format!("{at}.path: no kind"))),
        })
    };
    list.into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = format!("{at}.filters[{i}]");
            Ok(match f.kind {
                None => {
                    return Err(refuse(format!(
                        "{at}: a filter of a kind this proxy does not know (is the control \
                         plane newer?); a filter may not be skipped"
                    )))
                }
                Some(F::RequestHeaderModifier(h)) => {
                    spec::Filter::RequestHeaderModifier(headers(h))
                }
                Some(F::ResponseHeaderModifier(h)) => {
                    spec::Filter::ResponseHeaderModifier(headers(h))
                }
                Some(F::UrlRewrite(r)) => spec::Filter::UrlRewrite(spec::UrlRewrite {
                    hostname: (!r.hostname.is_empty()).then_some(r.hostname),
                    path: path(r.path, &at)?,
                }),
                Some(F::RequestRedirect(r)) => {
                    spec::Filter::RequestRedirect(spec::RequestRedirect {
                        scheme: (!r.scheme.is_empty()).then_some(r.scheme),
                        hostname: (!r.hostname.is_empty()).then_some(r.hostname),
                        path: path(r.path, &at)?,
                        port: match r.port {
                            0 => None,
                            p => {
                                Some(u16::try_from(p).map_err(|_| {
                                    refuse(format!("{at}: port {p} is not 1-65535"))
                                })?)
                            }
                        },
                        status_code: u16::try_from(r.status_code)
                            .map_err(|_| refuse(format!("{at}: status {}", r.status_code)))?,
                    })
                }
                Some(F::RequestMirror(m)) => spec::Filter::RequestMirror(spec::RequestMirror {
                    backend: service(
                        m.backend
                            .ok_or_else(|| refuse(format!("{at}: a mirror with no backend")))?,
                        &at,
                    )?,
                    fraction: spec::Fraction {
                        numerator: m.numerator,
                        denominator: m.denominator,
                    },
                }),
                Some(F::Fault(f)) => spec::Filter::Fault(fault(f, &at)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> pb::ServiceRef {
        pb::ServiceRef {
            namespace: "shop".into(),
            name: name.into(),
            port: 80,
        }
    }

    fn split(v1: u32, v2: u32) -> pb::Update {
        let backend = |name: &str, weight| pb::Backend {
            weight,
            target: Some(pb::backend::Target::Service(svc(name))),
            filters: vec![],
        };
        pb::Update {
            version: 3,
            kind: Some(pb::update::Kind::Table(pb::RouteTable {
                service: Some(svc("api")),
                matches: vec![pb::Match {
                    rule: 0,
                    path: Some(pb::PathMatch {
                        kind: Some(pb::path_match::Kind::Prefix("/".into())),
                    }),
                    ..Default::default()
                }],
                rules: vec![pb::Rule {
                    name: "httproute/shop/api/rule/0".into(),
                    filters: vec![],
                    backends: vec![backend("api-v1", v1), backend("api-v2", v2)],
                    ..Default::default()
                }],
                tcp_split: vec![],
                routes: vec!["httproute/shop/api".into()],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_table_is_decoded_and_compiled() {
        let routes = decode(split(90, 10)).expect("valid").expect("a table");
        assert_eq!(routes.version, 3);
        assert_eq!(routes.names, ["httproute/shop/api"]);
        let names: Vec<&str> = routes
            .table
            .services()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["api-v1", "api-v2"]);
        assert!(!routes.table.is_empty());
    }

    #[test]
    fn what_the_proxy_cannot_honour_refuses_the_table_and_unknown_kinds_are_ignored() {
        assert!(matches!(
            decode(pb::Update {
                version: 1,
                kind: None
            }),
            Ok(None)
        ));
        let mut unknown_filter = split(1, 1);
        if let Some(pb::update::Kind::Table(t)) = &mut unknown_filter.kind {
            t.rules[0].filters.push(pb::Filter { kind: None });
        }
        let e = decode(unknown_filter).expect_err("refused");
        assert!(e.to_string().contains("rules[0].filters[0]"), "{e}");
        let mut bad_regex = split(1, 1);
        if let Some(pb::update::Kind::Table(t)) = &mut bad_regex.kind {
            t.matches[0].path = Some(pb::PathMatch {
                kind: Some(pb::path_match::Kind::Regex("(".into())),
            });
        }
        assert!(decode(bad_regex).is_err());
        let mut bad_port = split(1, 1);
        if let Some(pb::update::Kind::Table(t)) = &mut bad_port.kind {
            if let Some(pb::backend::Target::Service(s)) = &mut t.rules[0].backends[0].target {
                s.port = 70_000;
            }
        }
        let e = decode(bad_port).expect_err("refused");
        assert!(e.to_string().contains("rules[0].backends[0]"), "{e}");
    }
}
