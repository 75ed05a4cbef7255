//! Load shaped like chat: the distributions a scenario may ask for, as seeded samplers.
//!
//! Requests evenly spaced in time, over chats and users that are all alike, with message
//! sizes spread evenly between two bounds, are the kindest load a server can get. Chat
//! traffic is not like that, and each difference hides a cost:
//!
//! - **Bursts.** Requests from many independent clients form a Poisson process: the gaps
//!   between them are exponential, so requests bunch up by chance and queues form well
//!   below capacity (a server at 80% load with a fixed service time queues each request for
//!   two service times on average under Poisson arrivals, and not at all under even ones).
//!   The schedule ([`super::schedule`]) draws those gaps; latency is still measured from
//!   each request's intended time.
//! - **Hot chats and active users.** A few chats and a few users carry most of the traffic,
//!   close to a Zipf law (the `k`th most popular is picked in proportion to `1 / k^S`).
//!   Their rows, locks, caches and log entries are contended, and their polls return the
//!   most messages. [`zipf_index`] picks by rank, [`activity_weight`] weighs a user.
//! - **Long messages.** Sizes are close to log-normal: most messages are short, a few are
//!   long, and the long ones set the tail of replication and apply ([`Sizes`]).
//! - **Think time.** People's pauses vary; in the closed model a fixed pause makes users
//!   march in step ([`Think`]).
//!
//! Every sampler here is one of `rand_distr`'s (not hand-written), drawing from a rng seeded
//! from the scenario's `seed`, so a run is reproducible. The uniform forms make exactly the
//! draws the generator made before these options existed, so scenarios that do not use them
//! run as before, call for call.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, Exp1, LogNormal, Zipf};

use crate::scenario::{MAX_MESSAGE_BYTES, SizeShape, ThinkDist, ThinkTime};

/// The standard normal's 99th percentile: a log-normal's p99 is `median * e^(sigma * Z99)`.
const Z99: f64 = 2.326_347_874_040_841;

/// An index in `0..n` by a Zipf law of exponent `s`: index `k - 1` with probability
/// `(1 / k^s) / sum over j of (1 / j^s)`. `n` must be at least 1.
pub(crate) fn zipf_index<R: Rng + ?Sized>(s: f64, n: usize, rng: &mut R) -> usize {
    debug_assert!(n > 0 && s > 0.0);
    match Zipf::new(n as f64, s) {
        // Zipf draws whole numbers from 1 to n.
        Ok(z) => (z.sample(rng) as usize).clamp(1, n) - 1,
        Err(_) => 0,
    }
}

/// The weight of the user at `rank` (0-based) under a Zipf law of exponent `s`: the same
/// law as [`zipf_index`], for weighing a subset of users (a chat's members).
pub(crate) fn activity_weight(s: f64, rank: usize) -> f64 {
    (rank as f64 + 1.0).powf(-s)
}

/// Message content lengths, in bytes.
#[derive(Clone, Debug)]
pub(crate) enum Sizes {
    Uniform { min: u32, max: u32 },
    Fixed(u32),
    Lognormal(LogNormal<f64>),
}

impl Sizes {
    /// The sampler of a checked `message_size`.
    pub fn new(shape: SizeShape) -> Sizes {
        match shape {
            SizeShape::Uniform { min, max } => Sizes::Uniform { min, max },
            SizeShape::Fixed { bytes } => Sizes::Fixed(bytes),
            SizeShape::Lognormal { median, p99 } => {
                let (median, p99) = (f64::from(median.max(1)), f64::from(p99.max(1)));
                let mu = median.ln();
                let sigma = ((p99.ln() - mu) / Z99).max(0.0);
                Sizes::Lognormal(LogNormal::new(mu, sigma).expect("sigma is finite and >= 0"))
            }
        }
    }

    /// One message's length: at least 1 byte, at most what the cluster accepts.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        match self {
            // The draw the generator has always made for `{min, max}`.
            Sizes::Uniform { min, max } => rng.random_range(*min..=*max) as usize,
            Sizes::Fixed(bytes) => *bytes as usize,
            Sizes::Lognormal(d) => {
                d.sample(rng)
                    .round()
                    .clamp(1.0, f64::from(MAX_MESSAGE_BYTES)) as usize
            }
        }
    }
}

/// The closed model's think time, drawn per pause.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Think {
    dist: ThinkDist,
    mean: Duration,
}

impl Think {
    pub fn new(t: ThinkTime) -> Think {
        Think {
            dist: t.dist,
            mean: t.mean.0,
        }
    }

    /// One pause.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match self.dist {
            ThinkDist::Fixed => self.mean,
            ThinkDist::Uniform => self.mean.mul_f64(rng.random_range(0.0..=2.0)),
            ThinkDist::Exponential => {
                let x: f64 = Exp1.sample(rng);
                self.mean.mul_f64(x)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Observed frequencies of Zipf picks match `1/k^S` normalised: a chi-square test over
    /// every rank, and each of the top ranks within 3% of its expected share.
    #[test]
    fn zipf_choices_match_their_expected_frequencies() {
        for (n, s) in [(20usize, 1.1f64), (200, 0.9), (5, 2.0)] {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let draws = 200_000;
            let mut counts = vec![0u64; n];
            for _ in 0..draws {
                counts[zipf_index(s, n, &mut rng)] += 1;
            }
            let total: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
            let expected: Vec<f64> = (1..=n)
                .map(|k| draws as f64 * (k as f64).powf(-s) / total)
                .collect();
            let chi2: f64 = counts
                .iter()
                .zip(&expected)
                .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
                .sum();
            // The chi-square 99.9th percentile for n - 1 degrees of freedom is below
            // n - 1 + 5 sqrt(2 (n - 1)) + 10 for these n.
            let df = (n - 1) as f64;
            let bound = df + 5.0 * (2.0 * df).sqrt() + 10.0;
            assert!(chi2 < bound, "n {n} s {s}: chi2 {chi2:.1} >= {bound:.1}");
            for k in 0..3.min(n) {
                let ratio = counts[k] as f64 / expected[k];
                assert!(
                    (ratio - 1.0).abs() < 0.03,
                    "n {n} s {s}: rank {} drawn {} times, expected {:.0}",
                    k + 1,
                    counts[k],
                    expected[k]
                );
            }
        }
    }

    /// Uniform picks would fail the test above: the test can tell the two apart.
    #[test]
    fn zipf_is_not_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut counts = [0u64; 10];
        for _ in 0..10_000 {
            counts[zipf_index(1.1, 10, &mut rng)] += 1;
        }
        // Rank 1 is 10^1.1 (12.6) times as likely as rank 10; uniform would make them equal.
        assert!(counts[0] > 8 * counts[9], "{counts:?}");
        assert!((activity_weight(1.1, 0) - 1.0).abs() < 1e-12);
        assert!((activity_weight(1.0, 3) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn lognormal_sizes_have_the_configured_median_and_p99() {
        let sizes = Sizes::new(SizeShape::Lognormal {
            median: 60,
            p99: 1_000,
        });
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut v: Vec<usize> = (0..100_000).map(|_| sizes.draw(&mut rng)).collect();
        v.sort_unstable();
        let (median, p99) = (v[v.len() / 2] as f64, v[v.len() * 99 / 100] as f64);
        assert!((median / 60.0 - 1.0).abs() < 0.05, "median {median}");
        assert!((p99 / 1_000.0 - 1.0).abs() < 0.10, "p99 {p99}");
        assert!(v[0] >= 1 && *v.last().unwrap() <= MAX_MESSAGE_BYTES as usize);
        // Most messages are short: the mean is well above the median (a long tail).
        let mean = v.iter().sum::<usize>() as f64 / v.len() as f64;
        assert!(mean > 1.3 * median, "mean {mean} median {median}");
    }

    #[test]
    fn fixed_and_uniform_sizes() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let fixed = Sizes::new(SizeShape::Fixed { bytes: 100 });
        assert!((0..1000).all(|_| fixed.draw(&mut rng) == 100));
        // Uniform makes the same draw as before `dist` existed.
        let uniform = Sizes::new(SizeShape::Uniform { min: 16, max: 256 });
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(9), ChaCha8Rng::seed_from_u64(9));
        for _ in 0..1000 {
            assert_eq!(uniform.draw(&mut a), b.random_range(16u32..=256) as usize);
        }
    }

    fn think(dist: ThinkDist, mean_ms: u64) -> Vec<f64> {
        let t = Think::new(ThinkTime {
            dist,
            mean: crate::scenario::Dur(Duration::from_millis(mean_ms)),
        });
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        (0..100_000)
            .map(|_| t.draw(&mut rng).as_secs_f64() * 1e3)
            .collect()
    }

    #[test]
    fn think_times_have_the_configured_mean_and_shape() {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let above =
            |v: &[f64], x: f64| v.iter().filter(|t| **t > x).count() as f64 / v.len() as f64;

        let fixed = think(ThinkDist::Fixed, 100);
        assert!(fixed.iter().all(|t| (*t - 100.0).abs() < 1e-6));

        let uniform = think(ThinkDist::Uniform, 100);
        assert!((mean(&uniform) / 100.0 - 1.0).abs() < 0.02);
        assert!(uniform.iter().all(|t| (0.0..=200.0).contains(t)));
        // Uniform on [0, 200]: a quarter above 150 ms.
        assert!((above(&uniform, 150.0) - 0.25).abs() < 0.01);

        let exp = think(ThinkDist::Exponential, 100);
        assert!((mean(&exp) / 100.0 - 1.0).abs() < 0.02, "{}", mean(&exp));
        // Exponential: e^-1 of pauses above the mean, e^-3 above three times it.
        assert!((above(&exp, 100.0) - (-1f64).exp()).abs() < 0.01);
        assert!((above(&exp, 300.0) - (-3f64).exp()).abs() < 0.005);
    }
}
