//! The compiled route table of one target, its rules, and the per-request choice.

use http::request::Parts;
use http::{HeaderMap, Method, Uri};

use crate::error::{CompileError, Reason, Site};
use crate::filter::{Answer, Filter, Mirror};
use crate::matching::{Match, RegexBudget};
use crate::policy::{check_timeouts, Fault, Retry};
use crate::spec::{self, ServiceRef};
use crate::split::{Backend, Services, Split};

/// The compiled routes of one target: built once per update by [`RouteTable::compile`], then
/// shared read-only (behind an `Arc`, swapped whole) by every request.
#[derive(Debug)]
pub struct RouteTable {
    matches: Box<[Match]>,
    rules: Box<[Rule]>,
    tcp_split: Option<Split>,
    services: Box<[ServiceRef]>,
    /// Service-wide faults, before any rule's.
    faults: Box<[Fault]>,
}

/// One compiled rule: its name, filters and weighted backends.
#[derive(Debug)]
pub struct Rule {
    index: usize,
    name: Box<str>,
    filters: Box<[Filter]>,
    /// The index in `filters` of its `Fault` (at most one).
    fault: Option<usize>,
    split: Split,
    timeouts: spec::Timeouts,
    retry: Option<Retry>,
}

/// What the table says about a request.
#[derive(Debug)]
pub enum Route<'a> {
    /// The table is empty: no route is attached, balance the Service as without routes.
    Unrouted,
    /// Routes are attached but none matches: answer 404.
    NotFound,
    /// The first match that holds, and its rule.
    Matched(Routed<'a>),
}

/// A request's match and rule: the filters to apply and the backends to choose from.
#[derive(Clone, Copy, Debug)]
pub struct Routed<'a> {
    matched: &'a Match,
    rule: &'a Rule,
}

impl RouteTable {
    /// Checks and compiles a table: every regex, header name and value, path, method, status,
    /// weight. Refused whole at the first error.
    pub fn compile(spec: &spec::RouteTable) -> Result<RouteTable, CompileError> {
        let mut budget = RegexBudget::default();
        let mut services = Services::default();
        let matches = spec
            .matches
            .iter()
            .enumerate()
            .map(|(index, m)| Match::compile(index, m, spec.rules.len(), &mut budget))
            .collect::<Result<Box<[Match]>, _>>()?;
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| Rule::compile(index, rule, &matches, &mut services))
            .collect::<Result<Box<[Rule]>, _>>()?;
        let tcp_split = if spec.tcp_split.is_empty() {
            None
        } else {
            Some(Split::compile(
                &spec.tcp_split,
                &mut services,
                |index| Site::TcpSplit { index },
                true,
            )?)
        };
        let faults = spec
            .faults
            .iter()
            .enumerate()
            .map(|(index, fault)| {
                Fault::compile(fault).map_err(|(field, reason)| {
                    CompileError::new(Site::Table, format!("faults[{index}].{field}"), reason)
                })
            })
            .collect::<Result<Box<[Fault]>, _>>()?;
        Ok(RouteTable {
            matches,
            rules,
            tcp_split,
            services: services.into_list(),
            faults,
        })
    }

    /// A table with no routes: every request is [`Route::Unrouted`].
    pub fn empty() -> RouteTable {
        RouteTable {
            matches: Box::default(),
            rules: Box::default(),
            tcp_split: None,
            services: Box::default(),
            faults: Box::default(),
        }
    }

    /// Whether no route is attached (no match at all).
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// The route for a request: the rule of the first match that holds. Allocates nothing
    /// (except to percent-decode a long query value for a regex).
    pub fn route(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Route<'_> {
        if self.matches.is_empty() {
            return Route::Unrouted;
        }
        let Some(matched) = self
            .matches
            .iter()
            .find(|m| m.matches(method, uri, headers))
        else {
            return Route::NotFound;
        };
        match self.rules.get(matched.rule_index()) {
            Some(rule) => Route::Matched(Routed { matched, rule }),
            // Compilation checked every match's rule index.
            None => Route::NotFound,
        }
    }

    /// [`RouteTable::route`] for a request's parts.
    pub fn route_parts(&self, parts: &Parts) -> Route<'_> {
        self.route(&parts.method, &parts.uri, &parts.headers)
    }

    /// The ordered matches.
    pub fn matches(&self) -> &[Match] {
        &self.matches
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The TrafficSplit for opaque TCP, chosen per connection; `None` if there is none.
    pub fn tcp_split(&self) -> Option<&Split> {
        self.tcp_split.as_ref()
    }

    /// The Service-wide faults, in order: for every HTTP request, routed or not, before its
    /// rule's own fault.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Every distinct Service the table sends to (backends, mirrors, TCP split), indexed by
    /// [`crate::ServiceId`]: the proxy resolves and balances each.
    pub fn services(&self) -> &[ServiceRef] {
        &self.services
    }
}

impl Default for RouteTable {
    fn default() -> RouteTable {
        RouteTable::empty()
    }
}

impl Rule {
    /// `<route-kind>/<namespace>/<name>/rule/<index>`: the `route` label of request metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its position in the table's rules.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its `HTTPFault` (an `ExtensionRef` filter), if it has one.
    pub fn fault(&self) -> Option<&Fault> {
        match self.fault.and_then(|i| self.filters.get(i)) {
            Some(Filter::Fault(fault)) => Some(fault),
            _ => None,
        }
    }

    /// Its timeouts (unbounded unless the route set them).
    pub fn timeouts(&self) -> &spec::Timeouts {
        &self.timeouts
    }

    /// Its retry policy; `None` when it is never retried.
    pub fn retry(&self) -> Option<&Retry> {
        self.retry.as_ref()
    }

    /// Whether a request of this rule needs more than a pick: a fault to draw, a timeout or a
    /// retry policy.
    pub fn has_policy(&self) -> bool {
        self.fault.is_some()
            || self.retry.is_some()
            || self.timeouts.request.is_some()
            || self.timeouts.backend_request.is_some()
    }

    /// Its filters, in order.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// Its weighted backends.
    pub fn split(&self) -> &Split {
        &self.split
    }

    /// A backend by weight from `r`, a uniformly random `u32` ([`Split::pick`]).
    pub fn pick(&self, r: u32) -> Result<&Backend, Answer<'_>> {
        self.split.pick(r)
    }

    /// Its `RequestMirror`s: for each, if [`Mirror::sample`] says so, send a copy of the request
    /// (as the rule's request filters left it) to [`Mirror::service`] and drop the answer.
    pub fn mirrors(&self) -> impl Iterator<Item = &Mirror> + '_ {
        self.filters.iter().filter_map(|filter| match filter {
            Filter::RequestMirror(mirror) => Some(mirror),
            _ => None,
        })
    }

    /// Whether it changes responses (a `ResponseHeaderModifier`), so the proxy must see the
    /// answer before passing it on.
    pub fn has_response_filters(&self) -> bool {
        self.filters
            .iter()
            .any(|f| matches!(f, Filter::ResponseHeaderModifier(_)))
    }

    /// Applies its `ResponseHeaderModifier`s to a response's headers, in order (then the
    /// chosen backend's: [`Backend::filter_response`]).
    pub fn filter_response(&self, headers: &mut HeaderMap) {
        for filter in &*self.filters {
            if let Filter::ResponseHeaderModifier(modifier) = filter {
                modifier.apply(headers);
            }
        }
    }

    fn compile(
        index: usize,
        spec: &spec::Rule,
        matches: &[Match],
        services: &mut Services,
    ) -> Result<Rule, CompileError> {
        let site = || Site::Rule {
            index,
            name: spec.name.clone(),
        };
        let err = |field: String, reason| CompileError::new(site(), field, reason);
        if spec.name.is_empty() {
            return Err(err("name".into(), Reason::Empty));
        }
        let mut filters = Vec::with_capacity(spec.filters.len());
        for (i, filter) in spec.filters.iter().enumerate() {
            let filter = Filter::compile(filter, services)
                .map_err(|(field, reason)| err(format!("filters[{i}].{field}"), reason))?;
            filters.push(filter);
        }
        // The Gateway API: at most one URLRewrite, at most one RequestRedirect, not both.
        let (mut rewrite, mut redirect) = (false, false);
        for (i, filter) in filters.iter().enumerate() {
            let (seen, other, filter) = match filter {
                Filter::UrlRewrite(_) => (&mut rewrite, redirect, "URLRewrite"),
                Filter::RequestRedirect(_) => (&mut redirect, rewrite, "RequestRedirect"),
                _ => continue,
            };
            if *seen {
                return Err(err(
                    format!("filters[{i}]"),
                    Reason::DuplicateFilter { filter },
                ));
            }
            if other {
                return Err(err(format!("filters[{i}]"), Reason::RewriteWithRedirect));
            }
            *seen = true;
        }
        // ReplacePrefixMatch replaces the prefix that matched: every match of the rule must
        // be a prefix match.
        if let Some(i) = filters.iter().position(Filter::replaces_prefix) {
            if let Some(m) = matches
                .iter()
                .find(|m| m.rule_index() == index && m.prefix().is_none())
            {
                return Err(err(
                    format!("filters[{i}]"),
                    Reason::PrefixRewriteWithoutPrefixMatch {
                        match_index: m.index(),
                        kind: m.path_kind(),
                    },
                ));
            }
        }
        let fault = filters.iter().position(|f| matches!(f, Filter::Fault(_)));
        if let Some(i) = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f, Filter::Fault(_)))
            .nth(1)
            .map(|(i, _)| i)
        {
            return Err(err(
                format!("filters[{i}]"),
                Reason::DuplicateFilter {
                    filter: "ExtensionRef HTTPFault",
                },
            ));
        }
        check_timeouts(&spec.timeouts).map_err(|(field, reason)| err(field, reason))?;
        let retry = match &spec.retry {
            Some(r) if r.attempts > 0 => {
                Some(Retry::compile(r).map_err(|(field, reason)| err(field, reason))?)
            }
            _ => None,
        };
        let split = Split::compile(
            &spec.backends,
            services,
            |backend| Site::Backend {
                rule: index,
                rule_name: spec.name.clone(),
                index: backend,
            },
            false,
        )?;
        Ok(Rule {
            index,
            name: spec.name.as_str().into(),
            filters: filters.into(),
            fault,
            split,
            timeouts: spec.timeouts,
            retry,
        })
    }
}

impl<'a> Routed<'a> {
    /// The rule matched.
    pub fn rule(&self) -> &'a Rule {
        self.rule
    }

    /// The match that held.
    pub fn matched(&self) -> &'a Match {
        self.matched
    }

    /// Applies the rule's request filters to the request, in order: header modifiers and
    /// `URLRewrite` change `parts`; a `RequestRedirect` answers (status and `Location`); a
    /// rule whose `Fault` could not be resolved answers 500 before any filter (a resolved one
    /// is the caller's to draw: [`Rule::fault`]). `dst_port` is the port the client
    /// sent the request to (the Service port), which a redirect may keep.
    ///
    /// `Ok(())`: send the request on, to [`Routed::pick`]'s backend (and the mirrors).
    pub fn filter_request(&self, parts: &mut Parts, dst_port: u16) -> Result<(), Answer<'a>> {
        let rule = self.rule;
        if let Some(fault) = rule.fault().filter(|f| f.is_unresolved()) {
            return Err(fault.unresolved());
        }
        let prefix = self.matched.prefix().unwrap_or("");
        for filter in &*rule.filters {
            match filter {
                Filter::RequestHeaderModifier(modifier) => modifier.apply(&mut parts.headers),
                Filter::UrlRewrite(rewrite) => {
                    rewrite.apply(&mut parts.uri, &mut parts.headers, prefix)?
                }
                Filter::RequestRedirect(redirect) => {
                    return Err(redirect.answer(&parts.uri, &parts.headers, prefix, dst_port))
                }
                Filter::ResponseHeaderModifier(_) | Filter::RequestMirror(_) | Filter::Fault(_) => {
                }
            }
        }
        Ok(())
    }

    /// A backend of the rule by weight ([`Rule::pick`]).
    pub fn pick(&self, r: u32) -> Result<&'a Backend, Answer<'a>> {
        self.rule.split.pick(r)
    }

    /// The rule's mirrors ([`Rule::mirrors`]).
    pub fn mirrors(&self) -> impl Iterator<Item = &'a Mirror> + 'a {
        self.rule.mirrors()
    }

    /// Applies the rule's `ResponseHeaderModifier`s ([`Rule::filter_response`]).
    pub fn filter_response(&self, headers: &mut HeaderMap) {
        self.rule.filter_response(headers)
    }
}
