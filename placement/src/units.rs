//! Human-readable sizes and speeds for rejection reasons.
//!
//! Decimal units (1 GB = 1e9 bytes) because that is how cards and RAM sticks
//! are sold and how operators will compare the numbers.

/// Formats a byte count with one decimal in B, KB, MB or GB.
pub(crate) fn bytes(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.1} GB", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} MB", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} KB", x / 1e3)
    } else {
        format!("{n} B")
    }
}

/// Formats one speed with one decimal.
pub(crate) fn rate(x: f64) -> String {
    format!("{x:.1}")
}

/// Formats two speeds with the fewest decimals (1 to 6) that tell them apart.
pub(crate) fn rate_pair(a: f64, b: f64) -> (String, String) {
    // "slower: 48.0 vs 48.0" would read as a bug; add digits until they differ.
    for decimals in 1..=6 {
        let (x, y) = (format!("{a:.decimals$}"), format!("{b:.decimals$}"));
        if x != y {
            return (x, y);
        }
    }
    (format!("{a:.6}"), format!("{b:.6}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pick_a_readable_unit() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500), "1.5 KB");
        assert_eq!(bytes(104_857_600), "104.9 MB");
        assert_eq!(bytes(21_300_000_000), "21.3 GB");
        assert_eq!(bytes(u64::MAX), "18446744073.7 GB");
    }

    #[test]
    fn rate_pairs_differ_when_the_values_do() {
        assert_eq!(rate(47.96), "48.0");
        assert_eq!(rate_pair(12.14, 48.0), ("12.1".into(), "48.0".into()));
        assert_eq!(rate_pair(48.01, 48.04), ("48.01".into(), "48.04".into()));
        assert_eq!(rate_pair(1.0, 1.0), ("1.000000".into(), "1.000000".into()));
    }
}
