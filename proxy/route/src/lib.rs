//! HTTPRoute matching for the Weft proxy: which rule, which backend, and what the rule's filters
//! do to a request.
//!
//! # Layout
//! - [`spec`]: the table of one target as it arrives (strings, unchecked), built by whoever
//!   decodes the wire.
//! - [`RouteTable`] (`table.rs`): [`RouteTable::compile`] checks and compiles a table once per
//!   update; [`RouteTable::route`] takes the first [`Match`] that holds for a request and gives
//!   its [`Rule`] ([`Route`], [`Routed`]).
//! - [`Match`] (`matching.rs`): path (exact, by segment prefix, regex), method, headers and
//!   query parameters, tested without allocating.
//! - [`Split`] (`split.rs`): weighted backends ([`Backend`], or an invalid one's error share),
//!   one chosen from a random number the caller draws.
//! - [`Filter`] (`filter.rs`): header modifiers, `URLRewrite`, `RequestRedirect` (an
//!   [`Answer`]), `RequestMirror`, and an `ExtensionRef` to an `HTTPFault`.
//! - `policy.rs`: a [`Fault`] drawn per request ([`Injection`]), a rule's [`Timeouts`] and
//!   [`Retry`] policy, and the [`RetryBudget`] every rule has.
//! - [`CompileError`] (`error.rs`): why a table was refused, naming the match, rule, backend,
//!   field and reason.
//!
//! Pure: no I/O, no runtime, no clock, no randomness of its own. The control plane decided
//! precedence and validity (the matches arrive ordered); this crate only evaluates. Compiled
//! tables are `Send + Sync` and immutable, to be shared behind an `Arc` and swapped whole.
//!
//! Per request:
//!
//! ```
//! use http::Request;
//! use weft_proxy_route::{spec, Answer, Route, RouteTable};
//!
//! let backend = |name: &str, weight| spec::Backend {
//!     weight,
//!     target: spec::Target::Service(spec::ServiceRef {
//!         namespace: "shop".into(),
//!         name: name.into(),
//!         port: 80,
//!     }),
//!     filters: vec![],
//! };
//! let table = RouteTable::compile(&spec::RouteTable {
//!     matches: vec![spec::Match {
//!         rule: 0,
//!         path: Some(spec::PathMatch::Prefix("/".into())),
//!         ..Default::default()
//!     }],
//!     rules: vec![spec::Rule {
//!         name: "httproute/shop/api/rule/0".into(),
//!         filters: vec![],
//!         backends: vec![backend("api-v1", 90), backend("api-v2", 10)],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! })
//! .expect("a valid table");
//!
//! let (mut parts, _body) = Request::get("/cart").body(()).expect("a request").into_parts();
//! match table.route_parts(&parts) {
//!     Route::Unrouted => { /* balance the Service as without routes */ }
//!     Route::NotFound => { /* answer 404 */ }
//!     Route::Matched(routed) => {
//!         if let Err(answer) = routed.filter_request(&mut parts, 80) {
//!             // A redirect or an error: answer it.
//!             # let _ = answer;
//!             return;
//!         }
//!         let r: u32 = 0x2000_0000; // rand::random() in the proxy
//!         match routed.pick(r) {
//!             Ok(backend) => {
//!                 assert_eq!(backend.service().name, "api-v1");
//!                 backend.filter_request(&mut parts.headers);
//!                 // ... forward to backend.service(), then on the response:
//!                 // routed.filter_response(&mut head); backend.filter_response(&mut head);
//!             }
//!             Err(Answer::Error { status, reason }) => { /* answer status */ }
//!             Err(Answer::Redirect { .. }) => unreachable!("a pick never redirects"),
//!         }
//!     }
//! }
//! ```

#![forbid(unsafe_code)]

mod error;
mod filter;
mod matching;
mod policy;
pub mod spec;
mod split;
mod table;

pub use error::{CompileError, Reason, Site};
pub use filter::{Answer, Filter, HeaderModifier, Mirror, RequestRedirect, UrlRewrite};
pub use matching::{Match, MAX_REGEXES, REGEX_DFA_SIZE_LIMIT, REGEX_SIZE_LIMIT};
pub use policy::{
    Abort, Fault, Injection, Retry, RetryBudget, BUDGET_MIN_PER_SECOND, BUDGET_RATIO_PERCENT,
    BUDGET_WINDOW_SECONDS, MAX_ATTEMPTS, MAX_RETRY_CODES, MAX_WAIT,
};
pub use spec::{ServiceRef, Timeouts};
pub use split::{Backend, InvalidBackend, ServiceId, Share, Split};
pub use table::{Route, RouteTable, Routed, Rule};

#[cfg(test)]
mod tests;
