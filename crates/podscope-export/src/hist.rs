//! A classic Prometheus histogram whose buckets can be read back.
//!
//! Why not `prometheus_client::metrics::histogram::Histogram`: it keeps its
//! buckets private (only the encoder sees them), and `podscope top` needs
//! them for its p99 columns. Reading them here keeps one set of per-pod
//! counters for the exporter and the views (the same observations feed
//! both). The exposition is the same as the client's own histogram: it is
//! encoded by the client's `encode_histogram`.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Observations counted into fixed buckets; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Hist {
    bounds: &'static [f64],
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative); one more than `bounds`: +Inf.
    counts: Vec<u64>,
}

impl Hist {
    /// A histogram with these upper bounds (ascending, finite; +Inf is added).
    pub fn new(bounds: &'static [f64]) -> Hist {
        Hist {
            bounds,
            inner: Arc::new(Mutex::new(Inner {
                sum: 0.0,
                count: 0,
                counts: vec![0; bounds.len() + 1],
            })),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.sum += v;
        g.count += 1;
        g.counts[i] += 1;
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> Buckets {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Buckets {
            bounds: self.bounds,
            sum: g.sum,
            count: g.count,
            counts: g.counts.clone(),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Upper bounds (the last bucket, beyond them, is +Inf).
    pub bounds: &'static [f64],
    pub sum: f64,
    pub count: u64,
    /// Per bucket, not cumulative: `bounds.len() + 1` entries.
    pub counts: Vec<u64>,
}

impl Buckets {
    /// No observations, with these bounds.
    pub fn empty(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            sum: 0.0,
            count: 0,
            counts: vec![0; bounds.len() + 1],
        }
    }

    /// Adds another histogram of the same bounds (e.g. two disks of a pod).
    pub fn add(&mut self, other: &Buckets) {
        if self.bounds != other.bounds {
            return;
        }
        self.sum += other.sum;
        self.count += other.count;
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// What was observed after `earlier` (an older snapshot of the same
    /// series); everything when the bounds differ.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        if self.bounds != earlier.bounds || earlier.count > self.count {
            return self.clone();
        }
        Buckets {
            bounds: self.bounds,
            sum: (self.sum - earlier.sum).max(0.0),
            count: self.count - earlier.count,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (0 < q <= 1),
    /// as Prometheus' `histogram_quantile` would bound it; None without
    /// observations; +Inf when it lies beyond the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

impl TypedMetric for Hist {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Hist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = self.snapshot();
        let buckets: Vec<(f64, u64)> = s
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(s.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(s.sum, s.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    const B: [f64; 3] = [0.001, 0.01, 0.1];

    #[test]
    fn encodes_exactly_as_the_clients_histogram() {
        let ours = Hist::new(&B);
        let theirs = Histogram::new(B);
        for v in [0.0005, 0.001, 0.002, 0.05, 0.5, 7.0] {
            ours.observe(v);
            theirs.observe(v);
        }
        fn render(h: impl prometheus_client::registry::Metric) -> String {
            let mut r = Registry::default();
            r.register("x_seconds", "help", h);
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
            s
        }
        assert_eq!(render(ours), render(theirs));
    }

    #[test]
    fn quantiles_of_an_interval() {
        let h = Hist::new(&B);
        for _ in 0..99 {
            h.observe(0.0005);
        }
        let before = h.snapshot();
        assert_eq!(before.quantile_bound(0.99), Some(0.001));
        for _ in 0..10 {
            h.observe(0.05);
        }
        let d = h.snapshot().since(&before);
        assert_eq!(d.count, 10);
        assert_eq!(d.quantile_bound(0.99), Some(0.1));
        assert_eq!(d.quantile_bound(0.5), Some(0.1));
        h.observe(9.0);
        assert_eq!(
            h.snapshot().since(&before).quantile_bound(1.0),
            Some(f64::INFINITY)
        );
        assert_eq!(Buckets::empty(&B).quantile_bound(0.99), None);
        let mut sum = Buckets::empty(&B);
        sum.add(&h.snapshot());
        sum.add(&h.snapshot());
        assert_eq!(sum.count, 2 * h.snapshot().count);
    }
}
