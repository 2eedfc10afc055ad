//! How far a cheat that changes the context moves what the audit can see.
//!
//! A node that drops the system prompt answers from another context; the
//! audit only sees that through the claimed model's log-probs, which the
//! changed context moves by some amount, and which an honest node's own
//! rounding moves too. So for each answer of such a cheat, the reference
//! scores the answer a second time, in the context the cheat really used,
//! and this module compares the two passes rank by rank the way the audit's
//! alternatives test compares a node's report with the reference: the
//! largest difference over the best log-probs, per token. Where the
//! changed context alone moves too few tokens past the test's tolerance to
//! fail an audit, even one that assumed no more rounding than honest nodes
//! showed, one audit of that answer cannot tell the cheat from rounding
//! within its false-positive bound; the report sets those answers apart.

use serde_json::Value;
use tollgate_engine::Engine;
use tollgate_verify::claim::ALTERNATIVES;
use tollgate_verify::stats::{limit, COUNT_SHARE};
use tollgate_verify::{Position, Thresholds};

use crate::tally::{percentile, Tally};

/// One answer's footprint: per token, the largest rank-by-rank difference
/// between the reference's best log-probs in the claimed context and in
/// the context the cheat used.
#[derive(Clone, Debug)]
pub struct Footprint {
    /// Per token of the answer, in nats.
    pub per_token: Vec<f32>,
}

impl Footprint {
    /// The median over the answer's tokens.
    pub fn median(&self) -> f32 {
        let mut v = self.per_token.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }

    /// How many tokens are moved past `tolerance`.
    fn beyond(&self, tolerance: f32) -> usize {
        self.per_token.iter().filter(|&&g| g > tolerance).count()
    }

    /// The share of tokens moved past `tolerance`.
    pub fn share_beyond(&self, tolerance: f32) -> f64 {
        if self.per_token.is_empty() {
            return 0.0;
        }
        self.beyond(tolerance) as f64 / self.per_token.len() as f64
    }

    /// Whether the changed context alone moves enough tokens past the
    /// alternatives tolerance to fail an audit whose test assumes honest
    /// rounding does so at `honest_rate` per token: were the node's
    /// rounding the reference's exactly, could this answer be failed?
    pub fn visible(&self, honest_rate: f64, t: &Thresholds) -> bool {
        let n = self.per_token.len();
        n > 0
            && self.beyond(t.alternatives_tolerance) >= limit(n, honest_rate, t.alpha * COUNT_SHARE)
    }
}

/// The request with its system messages removed: the context a node that
/// drops the system prompt answers from.
pub fn without_system(request: &Value) -> Value {
    let mut changed = request.clone();
    if let Some(messages) = changed.get_mut("messages").and_then(Value::as_array_mut) {
        messages.retain(|m| m.get("role").and_then(Value::as_str) != Some("system"));
    }
    changed
}

/// Scores the audited tokens of an answer (`positions`, as the audit split
/// them) after the prompt of `used`, the context the cheat answered from,
/// and compares with the reference's scores in the claimed context.
pub async fn measure(
    engine: &Engine,
    used: &Value,
    positions: &[Position],
) -> anyhow::Result<Footprint> {
    let mut tokens = engine.tokenize_chat(used).await?;
    let from = tokens.len();
    tokens.extend(positions.iter().map(|p| p.claimed));
    let scores = engine.score_from(tokens, from, ALTERNATIVES, None).await?;
    let per_token = positions
        .iter()
        .zip(&scores.positions)
        .map(|(p, s)| {
            p.ref_top
                .iter()
                .zip(&s.top)
                .map(|(claimed, used)| (claimed - used.1).abs())
                .fold(0.0, f32::max)
        })
        .collect();
    Ok(Footprint { per_token })
}

/// The cheat whose footprint is measured.
pub const DROPS_SYSTEM: &str = "drops the system prompt";

/// What the footprint of the dropped system prompt showed.
pub struct DropFootprint {
    /// Long answers whose footprint is within what rounding may do.
    pub within_rounding: usize,
    /// The audit's detection rate over the other long answers.
    pub detection_beyond: f64,
}

/// Scores the dropped-system-prompt cheat's long answers again in the
/// context it used, and prints how far that moves the reference's best
/// log-probs next to how far honest nodes' rounding moves them.
pub async fn report_drop_footprint<'a>(
    engine: &Engine,
    rows: &[(&str, Tally)],
    honest: impl Iterator<Item = &'a Tally>,
    honest_rate: f64,
    t: &Thresholds,
) -> anyhow::Result<DropFootprint> {
    let tolerance = t.alternatives_tolerance;
    let mut honest_shares: Vec<f64> = honest
        .flat_map(|tally| &tally.long_answers)
        .map(|(_, positions, _)| {
            let gaps: Vec<f32> = positions.iter().filter_map(Position::top_gap).collect();
            Footprint { per_token: gaps }.share_beyond(tolerance)
        })
        .collect();
    let Some((_, drop)) = rows.iter().find(|(name, _)| *name == DROPS_SYSTEM) else {
        return Ok(DropFootprint {
            within_rounding: 0,
            detection_beyond: 0.0,
        });
    };
    let mut medians = Vec::new();
    let mut shares = Vec::new();
    let (mut within, mut within_caught, mut beyond, mut beyond_caught) = (0, 0, 0, 0);
    for (request, positions, failed) in &drop.long_answers {
        let used = without_system(request);
        let f = measure(engine, &used, positions).await?;
        medians.push(f64::from(f.median()));
        shares.push(f.share_beyond(tolerance));
        if f.visible(honest_rate, t) {
            beyond += 1;
            beyond_caught += usize::from(*failed);
        } else {
            within += 1;
            within_caught += usize::from(*failed);
        }
    }
    let detection_beyond = if beyond > 0 {
        beyond_caught as f64 / beyond as f64
    } else {
        0.0
    };
    println!("\nthe dropped system prompt's footprint: its {} long answers scored again in the context the cheat used", drop.long_answers.len());
    println!("  per answer, the best log-probs' largest rank-by-rank move (median over tokens): p50 {:.3}, min {:.3} nats",
        percentile(&mut medians, 0.5), percentile(&mut medians, 0.0));
    println!("  per answer, tokens moved past the {tolerance} tolerance: p50 {:.1}%, min {:.1}%; honest rounding moves p50 {:.1}%, max {:.1}% (the test allows {:.0}%)",
        percentile(&mut shares, 0.5) * 100.0, percentile(&mut shares, 0.0) * 100.0,
        percentile(&mut honest_shares, 0.5) * 100.0, percentile(&mut honest_shares, 1.0) * 100.0,
        t.honest_alternatives_rate * 100.0);
    println!("  answers whose footprint, rank by rank, could not fail the alternatives test assuming the {:.2}% honest nodes showed: {within} ({within_caught} caught alone all the same, by the shape test or rounding's help); the others: {beyond_caught} of {beyond} caught alone ({:.1}%)",
        honest_rate * 100.0, detection_beyond * 100.0);
    Ok(DropFootprint {
        within_rounding: within,
        detection_beyond,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_system_messages_are_dropped() {
        let request = json!({"model": "m", "messages": [
            {"role": "system", "content": "Be a pirate."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Arr"},
            {"role": "user", "content": "Again"}]});
        let used = without_system(&request);
        let roles: Vec<&str> = used["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(used["model"], "m");
    }

    #[test]
    fn a_footprint_is_visible_only_where_it_alone_reaches_the_limit() {
        let t = Thresholds::default();
        let needed = limit(48, 0.02, t.alpha * COUNT_SHARE);
        assert!(needed > 2 && needed < 48, "{needed}");
        let with = |beyond: usize| {
            let mut per_token = vec![0.1; 48 - beyond];
            per_token.extend(vec![0.9; beyond]);
            Footprint { per_token }
        };
        assert!(!with(needed - 1).visible(0.02, &t));
        assert!(with(needed).visible(0.02, &t));
        // A higher honest rate needs more.
        assert!(!with(needed).visible(0.06, &t));
        assert!((with(2).share_beyond(0.4) - 2.0 / 48.0).abs() < 1e-12);
        assert!((with(2).median() - 0.1).abs() < 1e-6);
        assert!(!Footprint { per_token: vec![] }.visible(0.02, &t));
    }
}
