//! Binomial tails: how many errors an honest node reaches only rarely.
//!
//! Every count test of an audit fails a node at the first count whose tail
//! under Binomial(n, honest rate) is within its share of the false-positive
//! budget; this is that arithmetic, exact enough for tens of thousands of
//! trials. Where each trial has its own honest rate (the rival test's), the
//! count is Poisson-binomial instead.

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

/// The smallest `k >= 1` with `P[X >= k] <= alpha`, where X counts
/// independent trials that each succeed with its own probability in
/// `rates` (Poisson-binomial); `rates.len() + 1` when none is that rare.
pub fn limit_each(rates: &[f64], alpha: f64) -> usize {
    let tail = poisson_binomial_tails(rates);
    (1..=rates.len())
        .find(|&k| tail[k] <= alpha)
        .unwrap_or(rates.len() + 1)
}

/// `tails[k] = P[X >= k]` for k in 0..=n, X Poisson-binomial over `rates`:
/// the distribution built trial by trial (quadratic in n, a few thousand
/// trials at most per answer).
pub fn poisson_binomial_tails(rates: &[f64]) -> Vec<f64> {
    let mut pmf = vec![0.0; rates.len() + 1];
    pmf[0] = 1.0;
    for (i, &p) in rates.iter().enumerate() {
        let p = p.clamp(0.0, 1.0);
        for k in (1..=i + 1).rev() {
            pmf[k] = pmf[k] * (1.0 - p) + pmf[k - 1] * p;
        }
        pmf[0] *= 1.0 - p;
    }
    let mut tails = vec![0.0; rates.len() + 2];
    for k in (0..=rates.len()).rev() {
        tails[k] = (tails[k + 1] + pmf[k]).min(1.0);
    }
    tails.truncate(rates.len() + 1);
    tails
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_binomial_tails_are_exact_on_small_cases() {
        // Equal rates: the binomial's tails.
        let same = poisson_binomial_tails(&[0.3; 12]);
        for (a, b) in same.iter().zip(binomial_tails(12, 0.3)) {
            assert!((a - b).abs() < 1e-12, "{same:?}");
        }
        // Two trials at 0.5 and 0.1: P[>=1] = 1 - 0.45, P[2] = 0.05.
        let t = poisson_binomial_tails(&[0.5, 0.1]);
        assert!((t[0] - 1.0).abs() < 1e-12);
        assert!((t[1] - 0.55).abs() < 1e-12 && (t[2] - 0.05).abs() < 1e-12);
        assert_eq!(poisson_binomial_tails(&[]), vec![1.0]);
        // A sure trial and an impossible one.
        assert_eq!(poisson_binomial_tails(&[1.0, 0.0]), vec![1.0, 1.0, 0.0]);
    }

    #[test]
    fn each_trial_counts_at_its_own_rate() {
        assert_eq!(limit_each(&[0.02; 32], 5e-7), limit(32, 0.02, 5e-7));
        // Trials that are likely anyway make the limit higher by about
        // their number; impossible ones change nothing.
        let mut rates = vec![0.02; 32];
        rates.extend([0.5; 8]);
        assert!(limit_each(&rates, 5e-7) > limit(32, 0.02, 5e-7) + 4);
        rates.truncate(32);
        rates.extend([0.0; 8]);
        assert_eq!(limit_each(&rates, 5e-7), limit(32, 0.02, 5e-7));
        assert_eq!(limit_each(&[], 1e-6), 1);
        assert_eq!(limit_each(&[0.5, 0.5], 1e-6), 3);
    }

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
