//! The logical stage: which backend Service of a logical one a request goes to.
//!
//! A logical Service is the one the client named (its cluster IP, or its DNS name). Its
//! backends are concrete Services, each balanced over its own endpoints ([`Balanced`]), with
//! integer weights: today a Service is its own single backend; a canary split (`TrafficSplit`,
//! an HTTPRoute rule's weighted `backendRefs`) is the same stage with more than one.

use std::sync::Arc;

use http::Request;
use rand::Rng;

use crate::{
    balance::Balanced,
    body::RequestBody,
    stage::{Cx, Stage, StageResult},
};

/// Weighted backends, at least one of them with a weight above zero.
#[derive(Debug)]
pub struct Split {
    backends: Vec<(Arc<Balanced>, u32)>,
    total: u64,
}

/// Why a split cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a split needs at least one backend with a weight above zero")]
pub struct NoWeight;

impl Split {
    /// A split over `backends` by weight. Backends of weight zero get no traffic.
    pub fn new(backends: Vec<(Arc<Balanced>, u32)>) -> Result<Self, NoWeight> {
        let total: u64 = backends.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(NoWeight);
        }
        Ok(Self { backends, total })
    }

    /// One backend taking everything: a Service that is its own backend.
    pub fn single(backend: Arc<Balanced>) -> Self {
        Self {
            backends: vec![(backend, 1)],
            total: 1,
        }
    }

    /// A backend, chosen at random in proportion to the weights.
    pub fn pick(&self) -> &Arc<Balanced> {
        self.pick_with(&mut rand::rng())
    }

    fn pick_with(&self, rng: &mut impl Rng) -> &Arc<Balanced> {
        if let [(only, _)] = self.backends.as_slice() {
            return only;
        }
        let mut left = rng.random_range(0..self.total);
        for (backend, weight) in &self.backends {
            let weight = u64::from(*weight);
            if left < weight {
                return backend;
            }
            left -= weight;
        }
        // Unreachable: `left` starts below the sum of the weights.
        &self.backends[self.backends.len() - 1].0
    }
}

impl Stage for Split {
    fn call(
        &self,
        req: Request<RequestBody>,
        cx: Cx,
    ) -> impl std::future::Future<Output = StageResult> + Send + '_ {
        self.pick().call(req, cx)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use weft_proxy_metrics::{Direction, Metrics};

    use super::*;

    fn backend(name: &str, metrics: &Arc<Metrics>) -> Arc<Balanced> {
        Arc::new(Balanced::new(
            name.into(),
            metrics.clone(),
            metrics.plaintext(Direction::Outbound),
        ))
    }

    #[test]
    fn traffic_follows_the_weights() {
        let metrics = Arc::new(Metrics::new("t").expect("metrics"));
        let (v1, v2, off) = (
            backend("v1", &metrics),
            backend("v2", &metrics),
            backend("off", &metrics),
        );
        let split = Split::new(vec![(v1.clone(), 90), (v2.clone(), 10), (off.clone(), 0)])
            .expect("weighted");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            let picked = split.pick_with(&mut rng);
            let i = [&v1, &v2, &off]
                .iter()
                .position(|b| Arc::ptr_eq(b, picked))
                .expect("one of them");
            counts[i] += 1;
        }
        assert_eq!(counts[2], 0, "weight zero gets nothing");
        assert!((8_800..=9_200).contains(&counts[0]), "{counts:?}");
        assert!((800..=1_200).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn a_split_needs_some_weight() {
        let metrics = Arc::new(Metrics::new("t").expect("metrics"));
        assert_eq!(
            Split::new(vec![(backend("a", &metrics), 0)]).err(),
            Some(NoWeight)
        );
        assert_eq!(Split::new(Vec::new()).err(), Some(NoWeight));
        let only = backend("only", &metrics);
        assert!(Arc::ptr_eq(Split::single(only.clone()).pick(), &only));
    }
}
