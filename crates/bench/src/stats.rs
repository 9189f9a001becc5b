//! The pure parts: latency histograms, linear regression and the completeness check.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tidings_proto::Seq;

/// Latencies in microseconds, 1 µs to 10 minutes at 3 significant digits.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Records a latency given in nanoseconds (negative values, from clock jitter, count as 0).
    pub fn record_ns(&mut self, ns: i64) {
        let us = (ns.max(0) as u64).div_ceil(1000).max(1);
        self.0.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Latency) {
        self.0
            .add(&other.0)
            .expect("histograms have the same bounds");
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |q: f64| ms(self.0.value_at_quantile(q));
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A least-squares line through points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub slope: f64,
    pub intercept: f64,
    /// Coefficient of determination: 1 means every point is on the line.
    pub r_squared: f64,
}

/// Fits `y = slope * x + intercept`; `None` with fewer than two distinct x values.
pub fn regression(points: &[(f64, f64)]) -> Option<Line> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r_squared = if syy == 0.0 {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some(Line {
        slope,
        intercept: mean_y - slope * mean_x,
        r_squared,
    })
}

/// What a receiver got compared with what the sender was acknowledged, for one conversation
/// (or summed over many).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    /// Sends the server acknowledged.
    pub acked: u64,
    /// Message events the receiver got, duplicates included.
    pub received: u64,
    /// Acknowledged but never received.
    pub lost: u64,
    /// Received more than once (each extra copy counts once).
    pub duplicated: u64,
    /// Received after a higher sequence of the same conversation.
    pub out_of_order: u64,
    /// Received without the sender having been acknowledged.
    pub unacked_received: u64,
}

impl Completeness {
    /// Compares the acknowledged sequences with the sequences received, in arrival order.
    pub fn check(acked: &[Seq], received: &[Seq]) -> Completeness {
        let top = acked
            .iter()
            .chain(received)
            .copied()
            .max()
            .unwrap_or(0)
            .try_into()
            .unwrap_or(usize::MAX);
        let mut was_acked = vec![false; top + 1];
        for &s in acked {
            was_acked[s as usize] = true;
        }
        let mut seen = vec![false; top + 1];
        let mut out = Completeness {
            acked: acked.len() as u64,
            received: received.len() as u64,
            ..Completeness::default()
        };
        let mut highest = 0;
        for &s in received {
            if seen[s as usize] {
                out.duplicated += 1;
                continue;
            }
            seen[s as usize] = true;
            if s < highest {
                out.out_of_order += 1;
            }
            highest = highest.max(s);
            if !was_acked[s as usize] {
                out.unacked_received += 1;
            }
        }
        out.lost = acked.iter().filter(|&&s| !seen[s as usize]).count() as u64;
        out
    }

    pub fn add(&mut self, other: &Completeness) {
        self.acked += other.acked;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.unacked_received += other.unacked_received;
    }

    /// Every acknowledged message arrived once, in order, and nothing else arrived.
    pub fn is_perfect(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.unacked_received == 0
            && self.received == self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_recovers_a_line() {
        let points: Vec<(f64, f64)> = [1000.0, 5000.0, 15000.0]
            .iter()
            .map(|&x| (x, 7.5 * x + 40_000.0))
            .collect();
        let line = regression(&points).unwrap();
        assert!((line.slope - 7.5).abs() < 1e-9);
        assert!((line.intercept - 40_000.0).abs() < 1e-6);
        assert!((line.r_squared - 1.0).abs() < 1e-12);

        let noisy = [(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (3.0, 4.0)];
        let line = regression(&noisy).unwrap();
        assert!((line.slope - 0.8).abs() < 1e-9);
        assert!((line.intercept - 1.3).abs() < 1e-9);
        assert!(line.r_squared > 0.5 && line.r_squared < 1.0);

        assert_eq!(regression(&[(1.0, 2.0)]), None);
        assert_eq!(regression(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn completeness_counts_every_kind_of_fault() {
        let perfect = Completeness::check(&[1, 2, 3], &[1, 2, 3]);
        assert!(perfect.is_perfect());
        assert_eq!(perfect.received, 3);

        // 4 never arrives, 2 arrives twice, 3 arrives after 5, 6 was never acknowledged.
        let c = Completeness::check(&[1, 2, 3, 4, 5], &[1, 2, 2, 5, 3, 6]);
        assert_eq!(
            c,
            Completeness {
                acked: 5,
                received: 6,
                lost: 1,
                duplicated: 1,
                out_of_order: 1,
                unacked_received: 1,
            }
        );
        assert!(!c.is_perfect());

        // Acks may arrive in any order; only the receiver's order matters.
        assert!(Completeness::check(&[3, 1, 2], &[1, 2, 3]).is_perfect());
        assert!(Completeness::check(&[], &[]).is_perfect());

        let mut sum = perfect;
        sum.add(&c);
        assert_eq!((sum.acked, sum.lost), (8, 1));
    }

    #[test]
    fn latency_rounds_up_to_microseconds() {
        let mut l = Latency::default();
        l.record_ns(1_500);
        l.record_ns(-5);
        l.record_ns(2_000_000);
        let s = l.summary();
        assert_eq!(s.count, 3);
        assert!((s.max_ms - 2.0).abs() < 0.01);
        assert!((s.p50_ms - 0.002).abs() < 1e-9);
    }
}
