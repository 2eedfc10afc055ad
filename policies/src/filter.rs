//! Applying a policy's operator filters to one candidate.

use crate::decision::RejectReason;
use crate::facts::Candidate;
use crate::model::{Filters, RegionFilter};
use crate::price::Price;

/// Checks `c` against every filter, in a fixed order so the reported reason is stable.
///
/// On success returns notes saying which configured filters it passed, so the
/// route's reasons show the policy actually looked.
pub(crate) fn check(filters: &Filters, c: &Candidate) -> Result<Vec<String>, RejectReason> {
    let mut notes = Vec::new();
    check_region(&filters.regions, c, &mut notes)?;
    if let Some(cap) = &filters.max_price {
        check_cap("input", c.prices.input_per_1m, cap.input_per_1m)?;
        check_cap("output", c.prices.output_per_1m, cap.output_per_1m)?;
        notes.push(format!(
            "prices {} in / {} out per 1M within cap {} / {}",
            c.prices.input_per_1m, c.prices.output_per_1m, cap.input_per_1m, cap.output_per_1m
        ));
    }
    if let Some(min) = filters.min_trust {
        // A NaN trust is a broken score, not a passing one.
        if c.trust.is_nan() || c.trust < min {
            return Err(RejectReason::TrustBelowMin {
                trust: c.trust,
                min,
            });
        }
        notes.push(format!("trust {} >= min {min}", c.trust));
    }
    if !filters.hardware.is_empty() {
        if !contains_ci(&filters.hardware, &c.hardware) {
            return Err(RejectReason::HardwareNotAllowed {
                hardware: c.hardware.clone(),
            });
        }
        notes.push(format!("hardware {:?} allowed", c.hardware));
    }
    if let Some(min) = filters.min_tokens_per_s {
        match c.measured_tokens_per_s() {
            Some(tps) if tps < min => {
                return Err(RejectReason::TooSlow {
                    tokens_per_s: tps,
                    min,
                })
            }
            Some(tps) => notes.push(format!("{tps} tokens/s >= min {min}")),
            // Unmeasured nodes must get traffic to ever be measured.
            None => notes.push(format!(
                "speed not measured yet: passes min_tokens_per_s {min} so it can be measured"
            )),
        }
    }
    Ok(notes)
}

fn check_region(
    f: &RegionFilter,
    c: &Candidate,
    notes: &mut Vec<String>,
) -> Result<(), RejectReason> {
    // Deny first: an explicit "never" outranks an allow-list miss.
    if contains_ci(&f.deny, &c.region) {
        return Err(RejectReason::RegionDenied {
            region: c.region.clone(),
        });
    }
    if !f.allow.is_empty() && !contains_ci(&f.allow, &c.region) {
        return Err(RejectReason::RegionNotAllowed {
            region: c.region.clone(),
        });
    }
    if !f.allow.is_empty() || !f.deny.is_empty() {
        notes.push(format!("region {:?} passes the region filter", c.region));
    }
    Ok(())
}

fn check_cap(which: &str, price: Price, cap: Price) -> Result<(), RejectReason> {
    if price > cap {
        return Err(RejectReason::PriceAboveCap {
            which: which.to_owned(),
            price,
            cap,
        });
    }
    Ok(())
}

/// Case-insensitive membership: operators write "EU-West", nodes report "eu-west".
pub(crate) fn contains_ci(list: &[String], item: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(item))
}
