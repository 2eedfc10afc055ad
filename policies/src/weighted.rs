//! The weighted strategy: a seeded draw without replacement.
//!
//! The PRNG is hand-rolled so that a decision is a pure function of the seed,
//! stable across `rand` releases and platforms.

use crate::decision::Route;
use crate::model::Policy;
use crate::strategy::{route, weight, Entry};

/// SplitMix64: tiny, fast, and good enough to spread request seeds evenly.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose output is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift instead of `%`: no modulo bias worth measuring and no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Orders entries by repeated weighted draws seeded by `seed`; every entry must have weight > 0.
pub(crate) fn draw(policy: &Policy, seed: u64, mut entries: Vec<Entry<'_>>) -> Vec<Route> {
    // Candidate order must not change the outcome of a seed.
    entries.sort_by(|a, b| a.cand.node.cmp(&b.cand.node));
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(entries.len());
    let mut pick = 1;
    while !entries.is_empty() {
        let weights: Vec<u64> = entries
            .iter()
            .map(|e| u64::from(weight(policy, &e.cand.node)))
            .collect();
        let total: u64 = weights.iter().sum();
        let target = rng.below(total);
        let mut acc = 0;
        let at = weights
            .iter()
            .position(|w| {
                acc += w;
                target < acc
            })
            .unwrap_or(0);
        let e = entries.remove(at);
        let reason = format!(
            "weighted draw: weight {} of {total} (pick #{pick}, seed {seed})",
            weights[at]
        );
        out.push(route(&e, vec![reason]));
        pick += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn splitmix_matches_reference_vector() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SplitMix64::new(7);
        assert!((0..10_000).all(|_| r.below(3) < 3));
        assert_eq!(r.below(0), 0);
    }
}
