//! Binomial tails: how many errors an honest node reaches only rarely.
//!
//! Every count test of an audit fails a node at the first count whose tail
//! under Binomial(n, honest rate) is within its share of the false-positive
//! budget; this is that arithmetic, exact enough for tens of thousands of
//! trials.

/// The smallest `k >= 1` with `P[Binomial(n, rate) >= k] <= alpha`; `n + 1`
/// (never reached) when even `k = n` is too likely.
pub fn limit(n: usize, rate: f64, alpha: f64) -> usize {
    let tail = binomial_tails(n, rate.clamp(0.0, 1.0));
    (1..=n).find(|&k| tail[k] <= alpha).unwrap_or(n + 1)
}

/// `tails[k] = P[Binomial(n, p) >= k]` for k in 0..=n.
pub fn binomial_tails(n: usize, p: f64) -> Vec<f64> {
    let mut tails = vec![0.0; n + 2];
    if p <= 0.0 {
        tails[0] = 1.0;
    } else if p >= 1.0 {
        tails[..=n].fill(1.0);
    } else {
        // The pmf in log space by the ratio pmf(k+1)/pmf(k) = (n-k)/(k+1) *
        // p/(1-p): linear in n, exact enough for tens of thousands of trials,
        // and no cancellation since the tail is summed from the top.
        let odds = (p / (1.0 - p)).ln();
        let mut log_pmf = Vec::with_capacity(n + 1);
        let mut at = n as f64 * (1.0 - p).ln();
        for k in 0..=n {
            log_pmf.push(at);
            at += ((n - k) as f64 / (k + 1) as f64).ln() + odds;
        }
        for k in (0..=n).rev() {
            tails[k] = (tails[k + 1] + log_pmf[k].exp()).min(1.0);
        }
    }
    tails.truncate(n + 1);
    tails
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tails_are_exact_on_small_cases() {
        let t = binomial_tails(3, 0.5);
        let want = [1.0, 0.875, 0.5, 0.125];
        for (got, want) in t.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{t:?}");
        }
        assert_eq!(binomial_tails(4, 0.0), vec![1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(binomial_tails(2, 1.0), vec![1.0, 1.0, 1.0]);
        // Monotone and still sane at a thousand trials.
        let big = binomial_tails(2000, 0.02);
        assert!((big[0] - 1.0).abs() < 1e-9);
        assert!(big.windows(2).all(|w| w[0] >= w[1]));
        assert!(
            big[40] > 0.4 && big[40] < 0.6,
            "the median of Bin(2000, 0.02) is 40"
        );
    }

    #[test]
    fn the_limit_is_the_first_count_rare_enough() {
        // Bin(32, 0.02): P[>=7] ~ 4e-6, P[>=8] ~ 2.6e-7.
        assert_eq!(limit(32, 0.02, 5e-7), 8);
        let tails = binomial_tails(32, 0.02);
        assert!(tails[8] <= 5e-7 && tails[7] > 5e-7);
        // With no room for honest errors one error is enough.
        assert_eq!(limit(10, 0.0, 1e-6), 1);
        // Too few tokens can never fail.
        assert_eq!(limit(2, 0.5, 1e-6), 3);
        assert_eq!(limit(0, 0.02, 1e-6), 1);
    }
}
